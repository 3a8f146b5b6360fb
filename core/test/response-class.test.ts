/**
 * The same Response on every Node host: a handler's free `Response` is the fast
 * Response (core/src/response.ts), injected by the loader (loadHandler, for
 * `tsgi serve` and mod_tsgi's worker) and by bundleWorker (nginx workers, `tsgi
 * apache run`). What the handler can observe must be what the standard
 * Response gives: the probe runs natively (vitest, the global Response) and
 * through both, and the outcomes must be equal.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { bundleWorker, loadHandler } from '@tsgi/core/node';

const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const probePath = fixture('response-probe.js');
const dir = mkdtempSync(join(tmpdir(), 'tsgi-response-class-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

type Probe = { probe(): Promise<Record<string, unknown>>; fetch(): Response };

async function native(): Promise<Record<string, unknown>> {
  const mod = (await import(probePath)) as { default: Probe };
  return mod.default.probe();
}

const isFast = (r: unknown): boolean => typeof r === 'object' && r !== null && Symbol.for('tsgi.fastResponse') in r;

describe('the Response a handler names', () => {
  it('loadHandler: the fast Response, observed as the standard one', async () => {
    const expected = await native();
    const h = (await loadHandler(probePath, { fresh: true })) as unknown as Probe;
    expect(isFast(h.fetch()), 'the loader injected the fast Response').toBe(true);
    expect(await h.probe()).toEqual(expected);
  });

  it('bundleWorker: the same', async () => {
    const expected = await native();
    const outfile = join(dir, 'worker.mjs');
    await bundleWorker({ handler: probePath, runtime: fixture('probe-runtime.mjs'), outfile });
    const run = spawnSync(process.execPath, [outfile], { encoding: 'utf8', timeout: 30_000 });
    expect(run.stderr).toBe('');
    expect(JSON.parse(run.stdout)).toEqual(expected);
  });
});
