/**
 * The Node side of workers mode as one file: handler + @tsgi/node-http +
 * @tsgi/core bundled into the run's temp dir, so an unprivileged worker can
 * load it even when the project sits in a directory only root can read.
 */
import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build as esbuild } from 'esbuild';
import { StartupError } from '@tsgi/core/node';

const here = dirname(fileURLToPath(import.meta.url));

/** node_modules dirs that hold @tsgi/*, for handlers that live outside this repo. */
export function packageNodePaths(): string[] {
  return [resolve(here, '..', 'node_modules'), resolve(here, '..', '..', '..', 'node_modules')].filter((p) => existsSync(p));
}

/**
 * `preload`: read-only JSON objects the handler reads as free globals (embedded mode's
 * js_preload_object); here an inject file binds each name to its parsed, frozen value.
 */
function deepFreeze<T>(v: T): T {
  if (v && typeof v === 'object') {
    for (const k of Object.keys(v)) deepFreeze((v as Record<string, unknown>)[k]);
    Object.freeze(v);
  }
  return v;
}

function preloadInject(preload: { name: string; file: string }[], outDir: string): string {
  const f = join(outDir, 'preload-inject.mjs');
  const lines = [`const deepFreeze = ${deepFreeze.toString()};`];
  for (const p of preload) lines.push(`export const ${p.name} = deepFreeze(JSON.parse(${JSON.stringify(readFileSync(p.file, 'utf8'))}));`);
  writeFileSync(f, lines.join('\n') + '\n');
  return f;
}

export async function buildWorkerBundle(
  handler: string,
  outDir: string,
  preload: { name: string; file: string }[] = [],
  fileName = 'worker.mjs',
): Promise<string> {
  const file = resolve(handler);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  const worker = join(here, 'worker.js');
  const out = join(outDir, fileName);
  // A lazy import (esbuild inlines it, top-level await included): a throw while the handler
  // loads reaches runWorker, which reports it as a start-up failure.
  const entry = `import { runWorker } from ${JSON.stringify(worker)};
runWorker(() => import(${JSON.stringify(file)}), ${JSON.stringify(file)});
`;
  try {
    await esbuild({
      stdin: { contents: entry, resolveDir: dirname(file), sourcefile: 'tsgi-worker-entry.js', loader: 'js' },
      bundle: true,
      platform: 'node',
      format: 'esm',
      target: 'node20',
      outfile: out,
      nodePaths: packageNodePaths(),
      // The handler's global `Response` becomes @tsgi/core's fast Response (instanceof Response,
      // builds undici's only when a standard accessor is used): a bundle-level substitution, no global is touched.
      inject: [join(here, 'fast-response.js'), ...(preload.length ? [preloadInject(preload, outDir)] : [])],
      // Only loadHandler() uses esbuild (for a path); the worker gets the handler object.
      external: ['esbuild'],
      // CommonJS dependencies may call require() for built-ins.
      banner: { js: `import { createRequire as __tsgiCreateRequire } from 'node:module'; const require = __tsgiCreateRequire(import.meta.url);` },
      logLevel: 'silent',
      sourcemap: 'inline',
    });
  } catch (err) {
    const e = err as { errors?: { text: string; location?: { file: string; line: number } | null }[] };
    const first = e.errors?.[0];
    if (first) {
      const at = first.location ? ` (${first.location.file}:${first.location.line})` : '';
      throw new StartupError(`cannot bundle ${file} for the Node workers: ${first.text}${at}`);
    }
    throw err;
  }
  chmodSync(out, 0o644);
  return out;
}
