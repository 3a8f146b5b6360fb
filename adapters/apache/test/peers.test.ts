// The daemon-wide metrics of mod_tsgi's workers (src/peers.ts): files of other workers, live, gone and crashed.
import { chmodSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { Operations, emptySnapshot, parsePrometheus } from '@tsgi/core/node';
import { Peers } from '../src/peers.js';

/** A pid no process has (beyond Linux's default pid_max). */
const DEAD = 4_194_305;
const dirs: string[] = [];
const dir = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'tsgi-peers-test-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const value = (text: string, name: string, labels: Record<string, string> = {}): number | undefined =>
  parsePrometheus(text).find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;

describe('Peers (the workers of one TsgiDaemon add up their counters)', () => {
  it('adds the live, gone and crashed workers: counters from all, in-flight and heap from the live only, restarts by reason', () => {
    const d = dir();
    const stats = (n: number) => ({ ...emptySnapshot(), requests: { '200': n }, buckets: [n, ...new Array<number>(13).fill(0)], inflight: 5, heap: 1000 });
    // A live peer (this test's parent process stands in for one), one that left after max-requests, one that died.
    writeFileSync(join(d, `${process.ppid}.json`), JSON.stringify({ stats: stats(3), state: 'ready' }));
    writeFileSync(join(d, `${DEAD}.json`), JSON.stringify({ stats: stats(4), state: 'draining', left: 'recycle' }));
    writeFileSync(join(d, `${DEAD + 1}.json`), JSON.stringify({ stats: stats(5), state: 'ready' }));
    writeFileSync(join(d, 'junk.json.tmp'), 'not json');
    const ops = new Operations({ metricsPath: '/metrics' });
    const peers = Peers.open(d, ops)!;
    expect(peers).toBeDefined();
    ops.finished(200, 1);
    const text = peers.metrics();
    expect(value(text, 'tsgi_requests_total', { status: '200' })).toBe(3 + 4 + 5 + 1);
    expect(value(text, 'tsgi_request_duration_seconds_count')).toBe(13);
    expect(value(text, 'tsgi_inflight_requests')).toBe(5);
    expect(value(text, 'tsgi_workers', { state: 'ready' })).toBe(2);
    expect(value(text, 'tsgi_worker_restarts_total', { reason: 'recycle' })).toBe(1);
    expect(value(text, 'tsgi_worker_restarts_total', { reason: 'crash' })).toBe(1);
    expect((value(text, 'tsgi_worker_heap_bytes') ?? 0) > 1000).toBe(true);
    // Its own file is there for the others, and says why it left once it has.
    peers.leave('reload');
    expect(readdirSync(d)).toContain(`${process.pid}.json`);
  });

  it('refuses a directory others may read or write (each worker then counts alone)', () => {
    const d = dir();
    chmodSync(d, 0o755);
    expect(Peers.open(d, new Operations({ metricsPath: '/metrics' }))).toBeUndefined();
    expect(Peers.open(undefined, new Operations({ metricsPath: '/metrics' }))).toBeUndefined();
    expect(Peers.open(join(d, 'missing'), new Operations({ metricsPath: '/metrics' }))).toBeUndefined();
  });
});
