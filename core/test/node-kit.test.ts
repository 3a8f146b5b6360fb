// The supervision policy and the one drain-then-close shutdown of the Node-host kit.
import { describe, expect, it } from 'vitest';
import { Backoff, Lifecycle, shutdown } from '@tsgi/core/node';

describe('Backoff', () => {
  it('restarts at once, then 0.1 s doubling to 5 s; 10 s of life resets it', () => {
    const b = new Backoff();
    const t0 = 1_000_000;
    const delays = Array.from({ length: 9 }, (_, i) => b.next(t0, t0 + i));
    expect(delays).toEqual([0, 100, 200, 400, 800, 1600, 3200, 5000, 5000]);
    expect(b.next(t0, t0 + 10_001)).toBe(0);
    expect(b.next(t0 + 10_001, t0 + 10_002)).toBe(100);
  });
});

describe('shutdown', () => {
  it('stops accepting, drains, cuts the rest, then runs close once', async () => {
    const steps: string[] = [];
    const lifecycle = new Lifecycle(() => {});
    lifecycle.begin();
    setTimeout(() => {
      steps.push('request done');
      lifecycle.end();
    }, 30);
    const handler = { fetch: () => new Response(''), close: () => void steps.push('close') };
    const s = { stopAccepting: () => void steps.push('stop'), forceClose: () => void steps.push('cut'), lifecycle, timeoutMs: 1000, handler, log: () => {} };
    expect(await shutdown(s)).toBe(true);
    expect(await shutdown(s)).toBe(true);
    // The second call stops and cuts again, but close ran once.
    expect(steps).toEqual(['stop', 'request done', 'cut', 'close', 'stop', 'cut']);
  });

  it('gives up the drain at the deadline, logs it, and still closes; a throwing close is logged', async () => {
    const logs: string[] = [];
    const lifecycle = new Lifecycle(() => {});
    lifecycle.begin();
    const handler = { fetch: () => new Response(''), close: () => { throw new Error('close failed'); } };
    const ok = await shutdown({ stopAccepting: () => {}, lifecycle, timeoutMs: 20, handler, log: (m) => void logs.push(m) });
    expect(ok).toBe(false);
    expect(logs).toEqual(['shutdown: in-flight work still running after 20 ms; closing anyway', 'close() threw']);
  });
});
