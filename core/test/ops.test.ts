// core's operations pieces (issue 12): admission, the metrics schema, the per-process Operations.
import { describe, expect, it } from 'vitest';
import {
  Admission,
  DEFAULT_OPS,
  DURATION_BUCKETS,
  Metrics,
  Operations,
  commonOptions,
  mergeSnapshots,
  opsOptions,
  opsSettings,
  parseCommand,
  parsePrometheus,
  renderPrometheus,
  serverTimingValue,
  timeoutError,
} from '@tsgi/core/node';

describe('Admission', () => {
  it('without max-inflight everything runs at once', () => {
    const a = new Admission({ maxInflight: 0, queueTimeoutMs: 1000 });
    for (let i = 0; i < 100; i++) expect(a.enter()).toEqual({ ok: true });
    expect(a.inflight).toBe(100);
  });

  it('beyond max-inflight requests queue (FIFO), each leave hands the slot to the oldest waiter', async () => {
    const a = new Admission({ maxInflight: 2, queueTimeoutMs: 10_000 });
    expect(a.enter().ok).toBe(true);
    expect(a.enter().ok).toBe(true);
    const w1 = a.enter();
    const w2 = a.enter();
    expect(w1.ok).toBe('wait');
    expect(w2.ok).toBe('wait');
    expect(a.queued).toBe(2);
    const order: number[] = [];
    if (w1.ok === 'wait') void w1.admitted.then((ok) => ok && order.push(1));
    if (w2.ok === 'wait') void w2.admitted.then((ok) => ok && order.push(2));
    a.leave(10);
    await Promise.resolve();
    expect(order).toEqual([1]);
    expect(a.inflight).toBe(2);
    a.leave(10);
    await Promise.resolve();
    expect(order).toEqual([1, 2]);
    a.leave(10);
    a.leave(10);
    expect(a.inflight).toBe(0);
  });

  it('a full queue sheds at once, with Retry-After from the observed service time (at least 1 s)', () => {
    const a = new Admission({ maxInflight: 2, queueTimeoutMs: 60_000 });
    a.enter();
    a.enter();
    a.enter();
    a.enter(); // the queue holds max-inflight requests
    const shed = a.enter();
    expect(shed).toMatchObject({ ok: false, retryAfter: 1 });
    // Mean service 3 s, 2 queued + this one, 2 at a time: ceil(3 × 3 / 2) = 5 s.
    const b = new Admission({ maxInflight: 2, queueTimeoutMs: 600_000 });
    b.enter();
    b.leave(3000);
    b.enter();
    b.enter();
    b.enter();
    b.enter();
    expect(b.enter()).toMatchObject({ ok: false, retryAfter: 5 });
  });

  it('queue-timeout: a waiter is shed when it expires; 0 sheds at once; a predicted wait beyond it sheds at once', async () => {
    const a = new Admission({ maxInflight: 1, queueTimeoutMs: 50 });
    a.enter();
    const w = a.enter();
    expect(w.ok).toBe('wait');
    if (w.ok === 'wait') expect(await w.admitted).toBe(false);
    expect(a.queued).toBe(0);
    expect(new Admission({ maxInflight: 1, queueTimeoutMs: 0 }).enter().ok).toBe(true);
    const z = new Admission({ maxInflight: 1, queueTimeoutMs: 0 });
    z.enter();
    expect(z.enter().ok).toBe(false);
    const p = new Admission({ maxInflight: 1, queueTimeoutMs: 1000 });
    p.enter();
    p.leave(5000); // a request takes 5 s: a 1 s wait cannot be met
    p.enter();
    expect(p.enter()).toMatchObject({ ok: false, retryAfter: 5 }); // ceil(1 × 5 s / 1)
  });

  it('a cancelled waiter leaves the queue and is never admitted', async () => {
    const a = new Admission({ maxInflight: 1, queueTimeoutMs: 10_000 });
    a.enter();
    const w = a.enter();
    if (w.ok !== 'wait') throw new Error('expected a wait');
    w.cancel();
    expect(await w.admitted).toBe(false);
    a.leave(1);
    expect(a.inflight).toBe(0);
  });
});

describe('metrics', () => {
  it('renders the one schema as Prometheus text that parses back, buckets cumulative', () => {
    const m = new Metrics();
    m.observe(200, 3);
    m.observe(200, 700);
    m.observe(504, 60_001);
    const text = renderPrometheus(m.snapshot(1, 2), { workers: { ready: 2, draining: 1 }, restarts: { recycle: 3 } });
    const s = parsePrometheus(text);
    const v = (name: string, labels: Record<string, string> = {}): number | undefined =>
      s.find((x) => x.name === name && Object.entries(labels).every(([k, val]) => x.labels[k] === val))?.value;
    expect(v('tsgi_requests_total', { status: '200' })).toBe(2);
    expect(v('tsgi_requests_total', { status: '504' })).toBe(1);
    expect(v('tsgi_request_duration_seconds_bucket', { le: '0.005' })).toBe(1);
    expect(v('tsgi_request_duration_seconds_bucket', { le: '1' })).toBe(2);
    expect(v('tsgi_request_duration_seconds_bucket', { le: '60' })).toBe(2);
    expect(v('tsgi_request_duration_seconds_bucket', { le: '+Inf' })).toBe(3);
    expect(v('tsgi_request_duration_seconds_count')).toBe(3);
    expect(v('tsgi_request_duration_seconds_sum')).toBeCloseTo(60.704, 6);
    expect(v('tsgi_inflight_requests')).toBe(1);
    expect(v('tsgi_queue_depth')).toBe(2);
    expect(v('tsgi_workers', { state: 'ready' })).toBe(2);
    expect(v('tsgi_workers', { state: 'starting' })).toBe(0);
    expect(v('tsgi_worker_restarts_total', { reason: 'recycle' })).toBe(3);
    expect(v('tsgi_worker_restarts_total', { reason: 'timeout' })).toBe(0);
    expect(v('tsgi_worker_heap_bytes')).toBeGreaterThan(0);
    const types = text.split('\n').filter((l) => l.startsWith('# TYPE ')).map((l) => l.slice(7));
    expect(types).toEqual([
      'tsgi_requests_total counter',
      'tsgi_request_duration_seconds histogram',
      'tsgi_inflight_requests gauge',
      'tsgi_queue_depth gauge',
      'tsgi_workers gauge',
      'tsgi_worker_restarts_total counter',
      'tsgi_worker_heap_bytes gauge',
    ]);
  });

  it('merges snapshots by adding every counter and gauge', () => {
    const a = new Metrics();
    a.observe(200, 1);
    const b = new Metrics();
    b.observe(200, 2000);
    b.observe(503, 1);
    const sum = mergeSnapshots([a.snapshot(1, 0), b.snapshot(2, 3)]);
    expect(sum.requests).toEqual({ 200: 2, 503: 1 });
    expect(sum.buckets.reduce((x, y) => x + y)).toBe(3);
    expect(sum.buckets).toHaveLength(DURATION_BUCKETS.length + 1);
    expect([sum.inflight, sum.queued]).toEqual([3, 3]);
  });

  it('parsePrometheus refuses what is not a sample', () => {
    expect(() => parsePrometheus('tsgi_x{a=b} 1\n')).toThrow(/bad label/);
    expect(() => parsePrometheus('not a sample\n')).toThrow(/not a Prometheus sample/);
    expect(() => parsePrometheus('x NaNish\n')).toThrow(/bad value/);
  });
});

describe('Operations', () => {
  it('options: one definition in commonOptions, the documented defaults, parsed into settings', () => {
    for (const [name, spec] of Object.entries(opsOptions)) expect(spec).toBe(commonOptions[name as keyof typeof commonOptions]);
    const spec = { command: 'tsgi x', summary: '', options: opsOptions } as const;
    expect(opsSettings(parseCommand(spec, []).values)).toEqual(DEFAULT_OPS);
    expect(DEFAULT_OPS).toMatchObject({ requestTimeoutMs: 60_000, queueTimeoutMs: 45_000, maxInflight: 0, maxRequests: 0, maxHeapBytes: 0, serverTiming: false });
    const v = parseCommand(spec, ['--request-timeout', '1.5', '--max-heap', '512M', '--health', '/healthz', '--metrics', '/metrics', '--server-timing']).values;
    expect(opsSettings(v)).toMatchObject({ requestTimeoutMs: 1500, maxHeapBytes: 512 * 2 ** 20, healthPath: '/healthz', metricsPath: '/metrics', serverTiming: true });
    expect(opsSettings(parseCommand(spec, ['--drain-delay', '2.5']).values).drainDelayMs).toBe(2500);
    expect(() => parseCommand(spec, ['--drain-delay', '2h'])).toThrow("--drain-delay must be a duration from 0s to 3600s, got '2h'");
    expect(() => parseCommand(spec, ['--health', 'healthz'])).toThrow("--health must be a URL path starting with /, got 'healthz'");
    expect(() => parseCommand(spec, ['--max-inflight', '-1'])).toThrow();
  });

  it('health: 503 before init, 200 when ready, 503 while draining; probes are named by path only', () => {
    const o = new Operations({ healthPath: '/healthz', metricsPath: '/metrics' });
    expect(o.probe('/healthz')).toBe('health');
    expect(o.probe('/metrics')).toBe('metrics');
    expect(o.probe('/other')).toBeUndefined();
    // The query does not count; a path that only starts like a probe is no probe.
    expect(o.probe('/healthz?verbose=1')).toBe('health');
    expect(o.probe('/healthz/x')).toBeUndefined();
    expect(new Operations().probe('/')).toBeUndefined();
    expect(o.health().status).toBe(503);
    o.ready = true;
    expect(o.health().status).toBe(200);
    o.draining = true;
    expect(o.health()).toMatchObject({ status: 503, body: 'draining\n' });
  });

  it('metrics only to loopback clients unless metricsPublic', async () => {
    const o = new Operations({ metricsPath: '/m' });
    expect((await o.answer('metrics', '10.0.0.1')).status).toBe(403);
    expect((await o.answer('metrics', '127.0.0.1')).status).toBe(200);
    expect((await o.answer('metrics', '::ffff:127.0.0.1')).status).toBe(200);
    expect((await new Operations({ metricsPath: '/m', metricsPublic: true }).answer('metrics', '10.0.0.1')).status).toBe(200);
  });

  it('max-requests recycles once, after N plus up to 10% jitter', () => {
    const at = (random: number): number => {
      const o = new Operations({ maxRequests: 100 }, () => random);
      const why: string[] = [];
      o.onRecycle = (w) => void why.push(w);
      let n = 0;
      while (why.length === 0 && n < 1000) {
        o.finished(200, 1);
        n++;
      }
      for (let i = 0; i < 50; i++) o.finished(200, 1);
      expect(why).toHaveLength(1);
      expect(why[0]).toMatch(/^max-requests/);
      return n;
    };
    expect(at(0)).toBe(100);
    expect(at(0.999)).toBe(109);
  });

  it('max-heap recycles after a response once the heap used exceeds it', () => {
    const o = new Operations({ maxHeapBytes: 1024 });
    const why: string[] = [];
    o.onRecycle = (w) => void why.push(w);
    o.finished(200, 1);
    expect(why).toEqual([expect.stringMatching(/^max-heap \(\d+ MiB used, limit 0 MiB\)$/)]);
    const never = new Operations({ maxHeapBytes: 2 ** 40 });
    never.onRecycle = () => void why.push('no');
    never.finished(200, 1);
    expect(why).toHaveLength(1);
  });

  it('Server-Timing and the timeout reason', () => {
    expect(serverTimingValue({ queueMs: 0.12345, authMs: 2, fetchMs: 10.5 })).toBe('queue;dur=0.123, auth;dur=2, fetch;dur=10.5');
    expect(serverTimingValue({ queueMs: 0, fetchMs: 1 })).toBe('queue;dur=0, fetch;dur=1');
    const e = timeoutError(1500);
    expect(e).toBeInstanceOf(DOMException);
    expect(e.name).toBe('TimeoutError');
    expect(e.message).toBe('request-timeout (1.5 s) reached');
  });
});
