import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Handler } from './contract.js';
import { assertHandler } from './pipeline.js';

/** A start-up failure with a one-line message meant for the terminal. */
export class StartupError extends Error {
  override name = 'StartupError';
}

const TS = /\.(c|m)?tsx?$/;

/**
 * Loads a handler module. TypeScript goes through tsx's scoped loader
 * (esbuild underneath); it affects only this import, not the process.
 */
export async function loadHandler(path: string): Promise<Handler> {
  const file = resolve(path);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  let mod: unknown;
  try {
    if (TS.test(file)) {
      const { tsImport } = await import('tsx/esm/api');
      mod = await tsImport(pathToFileURL(file).href, import.meta.url);
    } else {
      mod = await import(pathToFileURL(file).href);
    }
  } catch (err) {
    const msg = err instanceof Error ? err.message.split('\n')[0] : String(err);
    throw new StartupError(`cannot load handler ${file}: ${msg}`);
  }
  try {
    return assertHandler(mod, file);
  } catch (err) {
    throw new StartupError((err as Error).message);
  }
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
