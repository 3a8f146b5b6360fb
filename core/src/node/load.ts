import { createHash } from 'node:crypto';
import {
  accessSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  renameSync,
  rmSync,
  statSync,
  unlinkSync,
  writeFileSync,
} from 'node:fs';
import { isBuiltin } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { basename, isAbsolute, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Plugin } from 'esbuild';
import type { Handler } from '../contract.js';
import { assertHandler } from '../pipeline.js';

/** A start-up failure with a one-line message meant for the terminal. */
export class StartupError extends Error {
  override name = 'StartupError';
}

const TS = /\.(c|m)?tsx?$/;

/**
 * The compile cache: `$XDG_CACHE_HOME/tsgi`, else `~/.cache/tsgi`. Only a
 * directory of this user's that nobody else can write qualifies: code is
 * imported from it. undefined when there is none (read-only or foreign HOME).
 */
function cacheDir(): string | undefined {
  const xdg = process.env.XDG_CACHE_HOME;
  const dir = join(xdg && isAbsolute(xdg) ? xdg : join(homedir(), '.cache'), 'tsgi');
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    const st = statSync(dir);
    if (!st.isDirectory() || (process.getuid && st.uid !== process.getuid()) || (st.mode & 0o022) !== 0) return undefined;
    accessSync(dir, constants.W_OK);
    return dir;
  } catch {
    return undefined;
  }
}

const SKIP = Symbol('tsgi-resolve');

/**
 * Packages stay external (loaded by Node as usual, shared with the server), but
 * are written as the absolute path esbuild resolved from the importing file:
 * the compiled module lives outside the project, where a bare name would not
 * resolve.
 */
const packagesByPath: Plugin = {
  name: 'tsgi-packages-by-path',
  setup(build) {
    build.onResolve({ filter: /^[^./#]/ }, async (args) => {
      if (args.pluginData === SKIP || isBuiltin(args.path) || /^[a-z][a-z0-9+.-]*:/i.test(args.path)) return undefined;
      const r = await build.resolve(args.path, {
        kind: args.kind,
        importer: args.importer,
        resolveDir: args.resolveDir,
        pluginData: SKIP,
      });
      if (r.errors.length) return { errors: r.errors };
      return { path: r.path, external: true };
    });
  },
};

/**
 * `import.meta.url` (and `.filename`, `.dirname`) of each of the handler's own
 * files keep naming that file, not the compiled module in the cache.
 */
const importMetaOfSource: Plugin = {
  name: 'tsgi-import-meta',
  setup(build) {
    build.onLoad({ filter: /\.[cm]?[jt]sx?$/ }, (args) => {
      if (args.path.includes('/node_modules/')) return undefined;
      const text = readFileSync(args.path, 'utf8');
      if (!text.includes('import.meta.')) return undefined;
      const values: Record<string, string> = {
        url: pathToFileURL(args.path).href,
        filename: args.path,
        dirname: resolve(args.path, '..'),
      };
      const contents = text.replace(/\bimport\.meta\.(url|filename|dirname)\b/g, (_m, k: string) => JSON.stringify(values[k]));
      const ext = /\.([cm]?)([jt]sx?)$/.exec(args.path)!;
      return { contents, loader: ext[2] as 'js' | 'ts' | 'jsx' | 'tsx', resolveDir: resolve(args.path, '..') };
    });
  },
};

/** A compiled handler module: where to import it from, and what to remove once imported. */
export interface Compiled {
  file: string;
  /** Removes a private temp copy (no-op for the cache). */
  dispose(): void;
}

const hash = (s: string | Uint8Array): string => createHash('sha256').update(s).digest('hex').slice(0, 16);

/**
 * Compiles a TypeScript handler with esbuild into one ES module (the handler's
 * own files bundled, packages imported by absolute path) with an inline source
 * map. It goes into the cache under a name made of the handler's path and the
 * output's hash: identical output reuses the file untouched (so `node --watch`
 * sees no change), new output replaces the handler's older file. Without a
 * usable cache it goes into a private temp dir that `dispose` removes.
 * esbuild's service process is stopped afterwards.
 */
export async function compileTypeScript(path: string): Promise<Compiled> {
  const file = resolve(path);
  const esbuild = await import('esbuild');
  const cache = cacheDir();
  const dir = cache ?? mkdtempSync(join(tmpdir(), 'tsgi-'));
  const dispose = cache ? () => {} : () => rmSync(dir, { recursive: true, force: true });
  let text: string;
  try {
    const out = await esbuild.build({
      entryPoints: [file],
      // Source map paths are relative to this folder, which is where the file goes.
      outfile: join(dir, 'handler.mjs'),
      write: false,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: `node${process.versions.node.split('.')[0]}`,
      plugins: [packagesByPath, importMetaOfSource],
      // The source's path (for pruning), then Node's require() for CommonJS code, resolving from the handler's folder.
      banner: {
        js:
          `${SOURCE_MARK}${JSON.stringify(file)}\n` +
          `import { createRequire as __tsgiCR } from 'node:module'; const require = __tsgiCR(${JSON.stringify(pathToFileURL(file).href)});`,
      },
      sourcemap: 'inline',
      sourcesContent: false,
      logLevel: 'silent',
    });
    text = out.outputFiles[0]!.text;
  } catch (err) {
    dispose();
    const first = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors?.[0];
    const where = first?.location ? ` (${first.location.file}:${first.location.line})` : '';
    throw new StartupError(`cannot compile handler ${file}: ${first?.text ?? (err as Error).message}${where}`);
  } finally {
    await esbuild.stop();
  }
  const prefix = `${basename(file).replace(TS, '')}-${hash(file)}-`;
  const name = `${prefix}${hash(text)}.mjs`;
  const target = join(dir, name);
  if (!existsSync(target)) {
    // Written aside and renamed: another worker importing the same name never reads half a file.
    const tmp = `${target}.${process.pid}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, target);
  }
  if (cache) prune(dir, name, prefix);
  return { file: target, dispose };
}

const SOURCE_MARK = '// tsgi-source: ';

/**
 * Keeps the cache to one file per live handler: this handler's older outputs
 * go, and so does any file whose handler no longer exists (or a temp file a
 * crashed writer left).
 */
function prune(dir: string, keep: string, prefix: string): void {
  const head = Buffer.alloc(4096);
  for (const entry of readdirSync(dir)) {
    if (entry === keep) continue;
    const path = join(dir, entry);
    let stale = entry.startsWith(prefix) && entry.endsWith('.mjs');
    try {
      if (!stale && entry.endsWith('.mjs')) {
        const fd = openSync(path, 'r');
        let n: number;
        try {
          n = readSync(fd, head, 0, head.length, 0);
        } finally {
          closeSync(fd);
        }
        const line = head.toString('utf8', 0, n).split('\n', 1)[0]!;
        stale = line.startsWith(SOURCE_MARK) && !existsSync(JSON.parse(line.slice(SOURCE_MARK.length)) as string);
      } else if (!stale && entry.endsWith('.tmp')) stale = Date.now() - statSync(path).mtimeMs > 60_000;
      if (stale) unlinkSync(path);
    } catch {
      // unreadable or already removed by another process: leave it
    }
  }
}

let generation = 0;

export interface LoadOptions {
  /**
   * A new module instance even if this path was imported before (a reload):
   * TypeScript is compiled again and the module gets a fresh import URL. A
   * plain .js handler is evaluated again, but the modules it imports are not.
   */
  fresh?: boolean;
}

/** Loads a handler module (TypeScript compiled by esbuild first) and checks its shape. */
export async function loadHandler(path: string, opts: LoadOptions = {}): Promise<Handler> {
  const file = resolve(path);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  const ts = TS.test(file);
  // Stack traces name the handler's .ts lines (the bundle carries an inline source map).
  if (ts) process.setSourceMapsEnabled(true);
  const query = opts.fresh ? `?tsgi-load=${++generation}` : '';
  let mod: unknown;
  for (let attempt = 1; ; attempt++) {
    const compiled = ts ? await compileTypeScript(file) : undefined;
    try {
      mod = await import(pathToFileURL(compiled?.file ?? file).href + query);
      break;
    } catch (err) {
      // Another process that compiled a newer version of this handler pruned ours first: compile again.
      if (compiled && attempt === 1 && !existsSync(compiled.file)) continue;
      throw loadFailure(file, err);
    } finally {
      compiled?.dispose();
    }
  }
  try {
    return assertHandler(mod, file);
  } catch (err) {
    throw new StartupError((err as Error).message);
  }
}

/** The one line for a handler module that threw while loading (hosts that import it themselves say the same). */
export function loadFailure(file: string, err: unknown): StartupError {
  const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
  return new StartupError(`cannot load handler ${file}: ${msg}`);
}

/** Runs `init`, turning a failure into a StartupError. */
export async function initHandler(h: Handler, ctx: Parameters<NonNullable<Handler['init']>>[0]): Promise<void> {
  if (!h.init) return;
  try {
    await h.init(ctx);
  } catch (err) {
    const msg = err instanceof Error ? err.message : String(err);
    throw new StartupError(`handler init failed: ${msg}`);
  }
}
