import { createHash } from 'node:crypto';
import {
  accessSync,
  chmodSync,
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readSync,
  readdirSync,
  rmSync,
  statSync,
  unlinkSync,
} from 'node:fs';
import { writeFileBeside } from './files.js';
import { isBuiltin } from 'node:module';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import type { Plugin } from 'esbuild';
import type { Handler } from '../contract.js';
import { assertHandler } from '../pipeline.js';

/** A start-up failure with a one-line message meant for the terminal. */
export class StartupError extends Error {
  override name = 'StartupError';
}

/**
 * The compile cache: `$XDG_CACHE_HOME/tsgi`, else `~/.cache/tsgi`. Only a
 * directory of this user's that nobody else can write qualifies: code is
 * imported from it. undefined when there is none (read-only or foreign HOME).
 * Every default build output of tsgi goes below it (the Apache module in
 * `apache/`), never into the installed packages.
 */
export function cacheDir(): string | undefined {
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

/** Where @tsgi/* resolve from when the handler's own folder has none: tsgi's own install. */
const KIT_DIR = dirname(fileURLToPath(import.meta.url));

/**
 * Packages stay external (loaded by Node as usual, shared with the server), but
 * are written as the absolute path esbuild resolved from the importing file:
 * the compiled module lives outside the project, where a bare name would not
 * resolve. A handler outside any project that has @tsgi/* gets tsgi's own.
 */
const packagesByPath: Plugin = {
  name: 'tsgi-packages-by-path',
  setup(build) {
    build.onResolve({ filter: /^[^./#]/ }, async (args) => {
      if (args.pluginData === SKIP || isBuiltin(args.path) || /^[a-z][a-z0-9+.-]*:/i.test(args.path)) return undefined;
      const at = (resolveDir: string) => build.resolve(args.path, { kind: args.kind, importer: args.importer, resolveDir, pluginData: SKIP });
      let r = await at(args.resolveDir);
      if (r.errors.length && args.path.startsWith('@tsgi/')) {
        const kit = await at(KIT_DIR);
        if (!kit.errors.length) r = kit;
      }
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

/** Read-only JSON data the handler reads as a free global (embedded nginx's js_preload_object). */
export interface Preload {
  name: string;
  file: string;
}

const INJECT_RESPONSE = join(KIT_DIR, 'inject-response.js');
const INJECT_PRELOAD = 'tsgi-inject:preload';

/**
 * What esbuild injects into the handler's own files (packages are external, so
 * never theirs): `Response` is @tsgi/core's fast Response (inject-response.ts),
 * the same class the handler gets by importing it, on every Node host; and
 * each preload name bound to its parsed, frozen value. Only free references
 * are replaced: a handler that imports or declares its own `Response` keeps
 * it. No global is touched.
 */
function injected(preload: readonly Preload[]): { plugin: Plugin; inject: string[] } {
  const plugin: Plugin = {
    name: 'tsgi-inject',
    setup(build) {
      // The fast Response stays the server's own module (external), never a copy in the handler's.
      build.onResolve({ filter: /^\.\.\/response\.js$/ }, (args) =>
        args.importer === INJECT_RESPONSE ? { path: resolve(KIT_DIR, args.path), external: true } : undefined,
      );
      build.onResolve({ filter: /^tsgi-inject:preload$/ }, () => ({ path: 'preload', namespace: 'tsgi-inject' }));
      build.onLoad({ filter: /.*/, namespace: 'tsgi-inject' }, () => {
        const lines = [`const deepFreeze = ${deepFreeze.toString()};`];
        for (const p of preload) {
          let text: string;
          try {
            text = readFileSync(p.file, 'utf8');
          } catch (err) {
            return { errors: [{ text: `cannot read preload file ${p.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}` }] };
          }
          lines.push(`export const ${p.name} = deepFreeze(JSON.parse(${JSON.stringify(text)}));`);
        }
        return { contents: lines.join('\n') + '\n', loader: 'js' };
      });
    },
  };
  return { plugin, inject: [INJECT_RESPONSE, ...(preload.length ? [INJECT_PRELOAD] : [])] };
}

function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object') {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

type Esbuild = typeof import('esbuild');

/** esbuild's first error as the one line a start-up failure prints. */
function buildFailure(what: string, file: string, err: unknown): StartupError {
  const first = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors?.[0];
  const where = first?.location ? ` (${first.location.file}:${first.location.line})` : '';
  return new StartupError(`cannot ${what} handler ${file}: ${first?.text ?? (err as Error).message.split('\n')[0]}${where}`);
}

/**
 * The one way every handler is compiled (TypeScript or JavaScript): its own
 * files bundled into one ES module, packages imported by absolute path, the
 * fast Response (and any preload) injected, `import.meta` of each file kept,
 * Node's require() resolving from the handler's folder, an inline source map
 * whose paths are relative to `outfile`'s folder. Returns the module's text.
 */
async function compileText(esbuild: Esbuild, file: string, outfile: string, preload: readonly Preload[] = [], inputs?: string[]): Promise<string> {
  const inj = injected(preload);
  const out = await esbuild.build({
    entryPoints: [file],
    outfile,
    write: false,
    bundle: true,
    format: 'esm',
    platform: 'node',
    target: `node${process.versions.node.split('.')[0]}`,
    plugins: [inj.plugin, packagesByPath, importMetaOfSource],
    inject: inj.inject,
    // The source's path (for pruning), then Node's require() for CommonJS code, resolving from the handler's folder.
    banner: {
      js:
        `${SOURCE_MARK}${JSON.stringify(file)}\n` +
        `import { createRequire as __tsgiCR } from 'node:module'; const require = __tsgiCR(${JSON.stringify(pathToFileURL(file).href)});`,
    },
    sourcemap: 'inline',
    sourcesContent: false,
    logLevel: 'silent',
    // --watch: which files the handler is made of.
    metafile: inputs !== undefined,
  });
  if (inputs && out.metafile) {
    for (const k of Object.keys(out.metafile.inputs)) {
      const p = resolve(k);
      if (!p.includes('/node_modules/') && p !== INJECT_RESPONSE && existsSync(p)) inputs.push(p);
    }
  }
  return out.outputFiles[0]!.text;
}

/** A compiled handler module: where to import it from, and what to remove once imported. */
export interface Compiled {
  file: string;
  /** Removes a private temp copy (no-op for the cache). */
  dispose(): void;
}

const hash = (s: string | Uint8Array): string => createHash('sha256').update(s).digest('hex').slice(0, 16);

const SOURCE_EXT = /\.[cm]?[jt]sx?$/;

/** The handler's absolute path, or the one-line failure when it is not a file. */
function handlerFile(path: string): string {
  const file = resolve(path);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  return file;
}

/**
 * Compiles a handler (compileText) into the cache, under a name made of the
 * handler's path and the output's hash: identical output reuses the file
 * untouched (so `node --watch` sees no change), new output replaces the
 * handler's older file. Without a usable cache it goes into a private temp dir
 * that `dispose` removes. esbuild's service process is stopped afterwards.
 */
export async function compileHandler(path: string): Promise<Compiled> {
  const file = resolve(path);
  const esbuild = await import('esbuild');
  const cache = cacheDir();
  const dir = cache ?? mkdtempSync(join(tmpdir(), 'tsgi-'));
  const dispose = cache ? () => {} : () => rmSync(dir, { recursive: true, force: true });
  let text: string;
  try {
    // Source map paths are relative to this folder, which is where the file goes.
    text = await compileText(esbuild, file, join(dir, 'handler.mjs'));
  } catch (err) {
    dispose();
    throw buildFailure('compile', file, err);
  } finally {
    await esbuild.stop();
  }
  const prefix = `${basename(file).replace(SOURCE_EXT, '')}-${hash(file)}-`;
  const name = `${prefix}${hash(text)}.mjs`;
  const target = join(dir, name);
  if (!existsSync(target)) {
    // Written aside and renamed: another worker importing the same name never reads half a file.
    writeFileBeside(target, text, 0o600);
  }
  if (cache) prune(dir, name, prefix);
  return { file: target, dispose };
}

/**
 * The files a handler is made of, as compileHandler bundles it (esbuild's metafile inputs): the
 * handler and its own imports, never packages (node_modules). Throws the compile error's one line.
 * esbuild's service process is stopped afterwards; nothing is written.
 */
export async function handlerInputs(path: string, preload: readonly Preload[] = []): Promise<string[]> {
  const file = handlerFile(path);
  const esbuild = await import('esbuild');
  const inputs: string[] = [];
  try {
    await compileText(esbuild, file, join(dirname(file), '.tsgi-inputs.mjs'), preload, inputs);
  } catch (err) {
    throw buildFailure('compile', file, err);
  } finally {
    await esbuild.stop();
  }
  return [...new Set([file, ...inputs, ...preload.map((p) => resolve(p.file))])];
}

/** @deprecated Every handler is compiled the same way now: use compileHandler. */
export const compileTypeScript = compileHandler;

export interface WorkerBundleOptions {
  /** The handler module (TypeScript or JavaScript). */
  handler: string;
  /**
   * The host's worker runtime: a module exporting `runWorker(load, where)`,
   * where `load()` imports the handler module (so a throw while it loads is a
   * start-up failure the runtime reports its own way) and `where` is its path.
   */
  runtime: string;
  /** The bundle to write (mode 0644: an unprivileged worker reads it). */
  outfile: string;
  preload?: readonly Preload[];
}

const HANDLER_MODULE = 'tsgi-handler:compiled';

/**
 * The handler and a host's worker runtime in one ES module an unprivileged
 * worker can read (everything bundled, packages included): the handler
 * compiled exactly as loadHandler compiles it (compileText), then bundled
 * with the runtime; one inline source map through both steps, so stacks name
 * the handler's own lines; require() for CommonJS code; `process.env.TSGI_BUNDLED`
 * is "1" (a runtime that can also run on its own tells the two apart).
 * esbuild's service process is stopped afterwards. Returns `outfile`.
 */
export async function bundleWorker(o: WorkerBundleOptions): Promise<string> {
  const file = handlerFile(o.handler);
  const esbuild = await import('esbuild');
  // Where the compiled handler "is" for the source map chain: beside the handler, never written.
  const compiledAt = join(dirname(file), '.tsgi-handler.mjs');
  try {
    const text = await compileText(esbuild, file, compiledAt, o.preload);
    const compiled: Plugin = {
      name: 'tsgi-compiled-handler',
      setup(build) {
        build.onResolve({ filter: /^tsgi-handler:compiled$/ }, () => ({ path: compiledAt }));
        build.onLoad({ filter: /\.tsgi-handler\.mjs$/ }, (args) =>
          args.path === compiledAt ? { contents: text, loader: 'js', resolveDir: dirname(file) } : undefined,
        );
      },
    };
    // A lazy import (esbuild inlines it, top-level await included): a throw while the handler loads reaches runWorker.
    const entry =
      `import { runWorker } from ${JSON.stringify(resolve(o.runtime))};\n` +
      `runWorker(() => import(${JSON.stringify(HANDLER_MODULE)}), ${JSON.stringify(file)});\n`;
    await esbuild.build({
      stdin: { contents: entry, resolveDir: dirname(resolve(o.runtime)), sourcefile: 'tsgi-worker-entry.js', loader: 'js' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: `node${process.versions.node.split('.')[0]}`,
      outfile: o.outfile,
      plugins: [compiled],
      define: { 'process.env.TSGI_BUNDLED': '"1"' },
      // Only loadHandler (a handler given by path) imports esbuild, and a bundled worker never calls it.
      external: ['esbuild'],
      // CommonJS dependencies inside an ES module bundle still call require().
      banner: { js: `import { createRequire as __tsgiCreateRequire } from 'node:module'; const require = __tsgiCreateRequire(import.meta.url);` },
      sourcemap: 'inline',
      sourcesContent: false,
      legalComments: 'none',
      logLevel: 'silent',
    });
  } catch (err) {
    throw buildFailure('bundle', file, err);
  } finally {
    await esbuild.stop();
  }
  chmodSync(o.outfile, 0o644);
  return o.outfile;
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
   * the handler is compiled again and the module gets a fresh import URL. The
   * handler's own files are evaluated again; the packages it imports are not.
   */
  fresh?: boolean;
}

/** Loads a handler module (compiled by compileHandler, whatever its language) and checks its shape. */
export async function loadHandler(path: string, opts: LoadOptions = {}): Promise<Handler> {
  const file = handlerFile(path);
  // Stack traces name the handler's own lines (the compiled module carries an inline source map).
  process.setSourceMapsEnabled(true);
  const query = opts.fresh ? `?tsgi-load=${++generation}` : '';
  let mod: unknown;
  for (let attempt = 1; ; attempt++) {
    const compiled = await compileHandler(file);
    try {
      mod = await import(pathToFileURL(compiled.file).href + query);
      break;
    } catch (err) {
      // Another process that compiled a newer version of this handler pruned ours first: compile again.
      if (attempt === 1 && !existsSync(compiled.file)) continue;
      throw loadFailure(file, err);
    } finally {
      compiled.dispose();
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
