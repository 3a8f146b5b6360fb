// core's WorkerPool: the one supervisor policy of Node workers (tsgi serve --workers, nginx workers mode).
import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { StartupError, WorkerPool, parsePrometheus, type PoolWorker } from '@tsgi/core/node';
import { alive, sleep, waitFor } from '@tsgi/conformance/testing';

const script = fileURLToPath(new URL('./fixtures/pool-worker.mjs', import.meta.url));

interface Harness {
  pool: WorkerPool;
  logs: string[];
  /** How the next spawned worker behaves. */
  mode: string[];
  opened: string[];
  closed: string[];
  retired: number[];
  children: ChildProcess[];
}

let harnesses: Harness[] = [];
afterEach(async () => {
  await Promise.all(harnesses.map((h) => h.pool.stop(1000)));
  harnesses = [];
});

function harness(size: number, modes: string[] = [], stallMs = 0): Harness {
  const h: Harness = { logs: [], mode: modes, opened: [], closed: [], retired: [], children: [] } as unknown as Harness;
  h.pool = new WorkerPool({
    size,
    listen: (index, generation) => {
      const name = `${index}/${generation}`;
      h.opened.push(name);
      // stdout's descriptor stands in for a listening socket: the worker ignores its fd 3.
      return { fd: 1, close: () => void h.closed.push(name) };
    },
    spawn: (w: PoolWorker) => {
      const child = fork(script, (h.mode.shift() ?? 'ok').split(' '), { stdio: ['ignore', 'ignore', 'inherit', w.handle.fd, 'ipc'] });
      child.on('message', (m: { tsgi?: string; pid?: number }) => {
        if (m?.tsgi === 'retired') h.retired.push(m.pid!);
      });
      h.children.push(child);
      return child;
    },
    retireMessage: { tsgi: 'retire' },
    retireGraceMs: 5000,
    stopGraceMs: 5000,
    log: (m) => void h.logs.push(m),
    stallMs,
  });
  harnesses.push(h);
  return h;
}

const pids = (h: Harness): number[] => h.pool.workers.map((w) => w.child?.pid ?? 0);

describe('WorkerPool', () => {
  it('a first worker that cannot start: start rejects with its reason, nothing is respawned, its handle is closed', async () => {
    const h = harness(2, ['fail']);
    await expect(h.pool.start()).rejects.toThrow(new StartupError('cannot start on purpose'));
    expect(h.children).toHaveLength(1);
    expect(h.pool.served).toBe(false);
    expect(h.closed.sort()).toEqual(['0/0', '1/0']);
    expect(h.logs).toEqual([]);
  });

  it('a first worker that dies without a reason: start rejects saying how it ended', async () => {
    const h = harness(1, ['die']);
    await expect(h.pool.start()).rejects.toThrow('a worker failed to start (exit 3)');
  });

  it('once served: a killed worker is respawned at once, a crash loop backs off (0, 0.1 s, 0.2 s ...)', async () => {
    const h = harness(2);
    await h.pool.start();
    const [a, b] = pids(h);
    process.kill(a!, 'SIGKILL');
    await waitFor(() => pids(h)[0] !== a && pids(h)[0] !== 0 && h.pool.workers[0]!.ready !== undefined, 10_000, 'the respawn');
    expect(h.pool.respawns).toBe(1);
    expect(pids(h)[1]).toBe(b);
    expect(h.logs).toEqual([`worker ${a} died (SIGKILL); respawning`]);
    // The replacement fails to start twice, then comes up: each failure respawns, later each time.
    h.mode.push('fail', 'fail');
    const c = pids(h)[0]!;
    process.kill(c, 'SIGKILL');
    await waitFor(() => h.logs.length === 4 && h.pool.workers[0]!.ready !== undefined, 10_000, 'three respawns');
    expect(h.logs.slice(1)).toEqual([
      `worker ${c} died (SIGKILL); respawning in 100 ms`,
      expect.stringMatching(/^worker \d+ exited before it was ready \(exit 78: cannot start on purpose\); respawning in 200 ms$/),
      expect.stringMatching(/^worker \d+ exited before it was ready \(exit 78: cannot start on purpose\); respawning in 400 ms$/),
    ]);
    expect(h.pool.respawns).toBe(4);
  });

  it('a second worker failing at start does not stop the pool: it is respawned (the pool has served)', async () => {
    const h = harness(2, ['ok', 'fail']);
    await h.pool.start();
    await waitFor(() => h.pool.workers[1]!.ready !== undefined, 10_000, 'the second worker');
    expect(h.logs).toEqual([expect.stringMatching(/exited before it was ready \(exit 78: cannot start on purpose\); respawning$/)]);
  });

  it('reload: the new set is ready before any old worker is asked to go; the old ones get the retire message', async () => {
    const h = harness(2);
    await h.pool.start();
    const old = pids(h);
    h.mode.push('slow', 'slow');
    const seen: { oldAlive: boolean[]; retired: number; fresh: number[] }[] = [];
    const between = async (fresh: readonly PoolWorker[]): Promise<void> => {
      // What nginx's reload takes: the old workers must still be serving meanwhile.
      await sleep(300);
      seen.push({ oldAlive: old.map(alive), retired: h.retired.length, fresh: fresh.map((w) => w.child!.pid!) });
    };
    expect(await h.pool.reload(between)).toBe(true);
    await h.pool.settled();
    expect(seen).toEqual([{ oldAlive: [true, true], retired: 0, fresh: pids(h) }]);
    expect(h.pool.generation).toBe(1);
    expect(h.retired.sort()).toEqual([...old].sort());
    expect(old.map(alive)).toEqual([false, false]);
    expect(h.closed.sort()).toEqual(['0/0', '1/0']);
    expect(h.opened.sort()).toEqual(['0/0', '0/1', '1/0', '1/1']);
  });

  it('reload with a new worker that cannot start: rejects with its reason, the new ones stop, the old ones keep serving', async () => {
    const h = harness(2);
    await h.pool.start();
    const old = pids(h);
    h.mode.push('ok', 'fail');
    await expect(h.pool.reload()).rejects.toThrow('cannot start on purpose');
    expect(pids(h)).toEqual(old);
    expect(old.map(alive)).toEqual([true, true]);
    expect(h.pool.generation).toBe(0);
    expect(h.closed.sort()).toEqual(['0/1', '1/1']);
    expect(h.logs).toEqual([]);
  });

  it('a throw between the swap and the retirement keeps the old workers (not respawned) until stop', async () => {
    const h = harness(1);
    await h.pool.start();
    const [old] = pids(h);
    await expect(h.pool.reload(() => Promise.reject(new Error('nginx did not reload')))).rejects.toThrow('nginx did not reload');
    expect(alive(old!)).toBe(true);
    await h.pool.stop(2000);
    expect(alive(old!)).toBe(false);
    expect(h.closed.sort()).toEqual(['0/0', '0/1']);
  });

  it('stop: every worker ends, every handle closes, nothing is respawned', async () => {
    const h = harness(2);
    await h.pool.start();
    const all = pids(h);
    await h.pool.stop();
    expect(all.map(alive)).toEqual([false, false]);
    expect(h.closed.sort()).toEqual(['0/0', '1/0']);
    expect(h.logs).toEqual([]);
    expect(await h.pool.reload()).toBe(false);
  });

  it('operations: a worker without heartbeats for stallMs is killed, logged with the requests it held, counted as timeout, respawned', async () => {
    const h = harness(2, ['ops', 'ops'], 600);
    await h.pool.start();
    const [a, b] = pids(h);
    await h.pool.metricsText(); // each has beaten once: the pool knows what they hold
    h.pool.workers[0]!.child!.send({ tsgi: 'spin' });
    await waitFor(() => pids(h)[0] !== a && pids(h)[0] !== 0 && h.pool.workers[0]!.ready !== undefined, 10_000, 'the stalled worker replaced');
    expect(alive(a!)).toBe(false);
    expect(pids(h)[1]).toBe(b);
    expect(h.pool.restarts).toEqual({ crash: 0, recycle: 0, reload: 0, timeout: 1 });
    expect(h.logs).toEqual([expect.stringMatching(new RegExp(`^worker ${a} stalled \\(no heartbeat for [\\d.]+ s\\), killed \\(SIGKILL\\); it held request req-${a}; respawning$`))]);
  });

  it('operations: a worker that asks to be recycled is replaced by a ready one before it retires, on the same handle', async () => {
    const h = harness(1, ['ops', 'slow']);
    await h.pool.start();
    const [a] = pids(h);
    h.pool.workers[0]!.child!.send({ tsgi: 'ask-recycle' });
    await waitFor(() => h.retired.includes(a!), 10_000, 'the old worker retired');
    const [c] = pids(h);
    expect(c).not.toBe(a);
    expect(h.pool.workers[0]!.ready).toBeDefined();
    await h.pool.settled();
    expect(h.opened).toEqual(['0/0']);
    expect(h.closed).toEqual([]);
    expect(h.pool.restarts.recycle).toBe(1);
    expect(h.logs).toEqual([`worker ${a} recycled: max-requests (test) (exit 0); it held request req-${a}`]);
  });

  it('operations: metricsText sums the running workers and the ended ones, with the workers by state and the restarts', async () => {
    const h = harness(2, ['ops 3', 'ops 4', 'ops 5']);
    await h.pool.start();
    await h.pool.metricsText(); // both have beaten once
    process.kill(pids(h)[0]!, 'SIGKILL');
    await waitFor(() => h.pool.workers[0]!.ready !== undefined && h.pool.restarts.crash === 1, 10_000, 'the respawn');
    const samples = parsePrometheus(await h.pool.metricsText());
    const get = (name: string, labels: Record<string, string> = {}): number | undefined =>
      samples.find((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v))?.value;
    expect(get('tsgi_requests_total', { status: '200' })).toBe(3 + 4 + 5);
    expect(get('tsgi_request_duration_seconds_count')).toBe(12);
    expect(get('tsgi_inflight_requests')).toBe(2); // the dead one's gauge is gone
    expect(get('tsgi_workers', { state: 'ready' })).toBe(2);
    expect(get('tsgi_worker_restarts_total', { reason: 'crash' })).toBe(1);
    expect(get('tsgi_worker_heap_bytes')).toBe(2000);
  });
});
