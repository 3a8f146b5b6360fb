/**
 * The Node side of workers mode as one file: the handler and worker.ts
 * (with @tsgi/node-http and @tsgi/core) bundled by core's bundleWorker into
 * the run's temp dir, so an unprivileged worker can load it even when the
 * project sits in a directory only root can read.
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorker, type Preload } from '@tsgi/core/node';

const here = dirname(fileURLToPath(import.meta.url));

/** node_modules dirs that hold @tsgi/*, for handlers that live outside this repo. */
export function packageNodePaths(): string[] {
  return [resolve(here, '..', 'node_modules'), resolve(here, '..', '..', '..', 'node_modules')].filter((p) => existsSync(p));
}

/**
 * `preload`: read-only JSON objects the handler reads as free globals (embedded mode's
 * js_preload_object), each bound to its parsed, frozen value.
 */
export function buildWorkerBundle(handler: string, outDir: string, preload: Preload[] = [], fileName = 'worker.mjs'): Promise<string> {
  return bundleWorker({ handler, runtime: join(here, 'worker.js'), outfile: join(outDir, fileName), preload });
}
