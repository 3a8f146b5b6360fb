import { createHash } from 'node:crypto';
import { accessSync, constants, existsSync, mkdirSync, mkdtempSync, readFileSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Handler } from './contract.js';
import { assertHandler } from './pipeline.js';

/** A start-up failure with a one-line message meant for the terminal. */
export class StartupError extends Error {
  override name = 'StartupError';
}

const TS = /\.(c|m)?tsx?$/;

/** A writable cache folder beside the handler, so its bare imports resolve from its own node_modules. */
function cacheDir(file: string): string | undefined {
  const dir = join(dirname(file), 'node_modules', '.cache', 'tsgi');
  try {
    mkdirSync(dir, { recursive: true });
    // It may exist yet belong to someone else (made by root, used by an unprivileged worker).
    accessSync(dir, constants.W_OK);
    return dir;
  } catch {
    return undefined;
  }
}

/**
 * Compiles a TypeScript handler with esbuild into one ES module and returns its
 * path. Packages stay external when the output can sit beside the handler;
 * otherwise (read-only folder) they are bundled in. esbuild's service process is
 * stopped afterwards, so a running server carries none of it.
 */
export async function compileTypeScript(file: string): Promise<string> {
  const esbuild = await import('esbuild');
  const hash = createHash('sha256').update(file).update(readFileSync(file)).digest('hex').slice(0, 12);
  const near = cacheDir(file);
  const outfile = join(near ?? mkdtempSync(join(tmpdir(), 'tsgi-')), `${basename(file).replace(TS, '')}-${hash}.mjs`);
  try {
    await esbuild.build({
      entryPoints: [file],
      outfile,
      bundle: true,
      format: 'esm',
      platform: 'node',
      target: `node${process.versions.node.split('.')[0]}`,
      packages: near ? 'external' : undefined,
      // Bundled CommonJS packages may call require(); give them Node's.
      banner: near ? undefined : { js: "import { createRequire as __tsgiCR } from 'node:module'; const require = __tsgiCR(import.meta.url);" },
      sourcemap: 'inline',
      logLevel: 'silent',
    });
  } catch (err) {
    const first = (err as { errors?: { text: string; location?: { file: string; line: number } | null }[] }).errors?.[0];
    const where = first?.location ? ` (${first.location.file}:${first.location.line})` : '';
    throw new StartupError(`cannot compile handler ${file}: ${first?.text ?? (err as Error).message}${where}`);
  } finally {
    await esbuild.stop();
  }
  return outfile;
}

/** Loads a handler module (TypeScript compiled by esbuild first) and checks its shape. */
export async function loadHandler(path: string): Promise<Handler> {
  const file = resolve(path);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  const target = TS.test(file) ? await compileTypeScript(file) : file;
  let mod: unknown;
  try {
    mod = await import(pathToFileURL(target).href);
  } catch (err) {
    throw loadFailure(file, err);
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
