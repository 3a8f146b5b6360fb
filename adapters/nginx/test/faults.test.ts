// Workers mode under faults: a worker killed under load, nginx reloaded under load, and the
// supervisor's graceful reload (SIGHUP: workers rolled one at a time) under load.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, childrenOf, cmdline, freePort, tsgiBin, uidOf } from '@tsgi/conformance/testing';
import { fixturesDir, load, sleep, startNginx, waitFor, workersState, type Running } from './helpers.js';

const CONCURRENCY = 8;
let srv: Running;

beforeAll(async () => {
  srv = await startNginx(join(fixturesDir, 'hello.ts'), ['--workers', '2']);
});
afterAll(async () => {
  await srv?.stop();
});

async function get(path: string): Promise<number> {
  const r = await fetch(srv.url + path);
  await r.text();
  return r.status;
}


describe('nginx workers mode faults', () => {
  it('nginx worker processes and Node workers run unprivileged when started as root', () => {
    const master = Number(readFileSync(join(srv.dir, 'nginx.pid'), 'utf8').trim());
    const nginxWorkers = childrenOf(master);
    expect(nginxWorkers.length).toBeGreaterThan(0);
    const expected = process.getuid!() === 0 ? (uid: number) => expect(uid).not.toBe(0) : (uid: number) => expect(uid).toBe(process.getuid!());
    for (const pid of [...nginxWorkers, ...workersState(srv.dir).pids]) expected(uidOf(pid));
  });

  it('Node workers run as SCHED_BATCH (policy 3 in /proc/<pid>/sched), nginx as SCHED_OTHER', () => {
    const policy = (pid: number) => Number(/^policy\s+:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/sched`, 'utf8'))![1]);
    const master = Number(readFileSync(join(srv.dir, 'nginx.pid'), 'utf8').trim());
    for (const pid of workersState(srv.dir).pids) expect(policy(pid)).toBe(3);
    for (const pid of childrenOf(master)) expect(policy(pid)).toBe(0);
  });

  /** Sends `signal` to worker `index` under load; resolves once the supervisor respawned it and the load stopped. */
  async function signalUnderLoad(index: number, signal: NodeJS.Signals) {
    const before = workersState(srv.dir);
    const l = load(`${srv.url}/slow?ms=20`, CONCURRENCY);
    await sleep(500);
    process.kill(before.pids[index]!, signal);
    await waitFor(() => {
      const s = workersState(srv.dir);
      return s.respawns === before.respawns + 1 && s.pids[index] !== before.pids[index] && s.pids[index]! > 0;
    }, 20_000, 'the respawned worker');
    await sleep(500);
    return { before, r: await l.stop(), after: workersState(srv.dir) };
  }

  it('a worker killed under load: only in-flight requests may fail, the worker is respawned, service goes on', async () => {
    const { before, r, after } = await signalUnderLoad(0, 'SIGKILL');
    // At most what nginx had handed to the dead worker fails, as 502s: nginx re-runs nothing (proxy_next_upstream off).
    expect(r.failed, JSON.stringify(r)).toBeLessThanOrEqual(CONCURRENCY);
    expect(Object.keys(r.statuses).filter((k) => k !== '200' && k !== '502'), JSON.stringify(r)).toEqual([]);
    expect(r.ok).toBeGreaterThan(0);
    expect(alive(after.pids[0]!)).toBe(true);
    expect(after.pids[1]).toBe(before.pids[1]);
    // The end line names what the worker held (if anything), then the respawn.
    expect(srv.stderr()).toMatch(new RegExp(`worker ${before.pids[0]} died \\(SIGKILL\\)(; it held [^\\n]*)?; respawning`));
    expect(await get('/')).toBe(200);
  });

  it('a worker sent SIGTERM under load (recycled): it serves what nginx sends on its open connections until nginx closes them, zero failed requests, respawned', async () => {
    const { before, r } = await signalUnderLoad(1, 'SIGTERM');
    // nginx never retries (proxy_next_upstream off): a request lost to the worker closing a connection nginx was reusing would show here.
    expect(r.failed, JSON.stringify(r)).toBe(0);
    expect(r.retried, JSON.stringify(r)).toBe(0);
    expect(r.ok).toBeGreaterThan(0);
    expect(alive(before.pids[1]!)).toBe(false);
    expect(srv.stderr()).toMatch(new RegExp(`worker ${before.pids[1]} died \\(exit 0\\)(; it held [^\\n]*)?; respawning`));
  });

  it('nginx -s reload under load: zero failed requests', async () => {
    const l = load(`${srv.url}/slow?ms=20`, CONCURRENCY);
    await sleep(300);
    const r1 = spawnSync('nginx', ['-p', srv.dir, '-c', srv.conf, '-s', 'reload'], { encoding: 'utf8' });
    expect(r1.status, r1.stderr).toBe(0);
    await sleep(800);
    const r2 = spawnSync('nginx', ['-p', srv.dir, '-c', srv.conf, '-s', 'reload'], { encoding: 'utf8' });
    expect(r2.status, r2.stderr).toBe(0);
    await sleep(800);
    const r = await l.stop();
    expect(r.failed, JSON.stringify(r)).toBe(0);
    expect(r.retried, JSON.stringify(r)).toBeLessThanOrEqual(2 * CONCURRENCY);
    expect(r.ok).toBeGreaterThan(0);
  });

  it('graceful reload (SIGHUP to tsgi nginx run) under load: workers rolled, zero failed requests', async () => {
    const before = workersState(srv.dir);
    const reloads = srv.stderr().split('tsgi nginx: reloaded').length;
    const l = load(`${srv.url}/slow?ms=20`, CONCURRENCY);
    await sleep(300);
    srv.proc.kill('SIGHUP');
    await waitFor(() => srv.stderr().split('tsgi nginx: reloaded').length > reloads, 60_000, 'the reload');
    await sleep(300);
    const r = await l.stop();
    expect(r.failed, JSON.stringify(r)).toBe(0);
    expect(r.retried, JSON.stringify(r)).toBeLessThanOrEqual(2 * CONCURRENCY);
    expect(r.ok).toBeGreaterThan(0);
    const after = workersState(srv.dir);
    // Every worker replaced, on a fresh socket; the old ones drained and exited.
    for (let i = 0; i < before.pids.length; i++) {
      expect(after.pids[i]).not.toBe(before.pids[i]);
      expect(after.sockets[i]).not.toBe(before.sockets[i]);
      expect(alive(before.pids[i]!)).toBe(false);
    }
    expect(await get('/')).toBe(200);
  });

  it('SIGTERM stops nginx and the workers and removes the temp dir', async () => {
    const { pids } = workersState(srv.dir);
    const master = Number(readFileSync(join(srv.dir, 'nginx.pid'), 'utf8').trim());
    expect(await srv.stop()).toBe(0);
    expect(existsSync(srv.dir)).toBe(false);
    for (const pid of [...pids, master]) expect(alive(pid)).toBe(false);
  });
});

describe('nginx workers mode: SIGTERM in the middle of a SIGHUP reload', () => {
  it('stops gracefully (exit 0, no SIGKILL needed): the request in flight completes, old and new workers end, the temp dir goes', async () => {
    const s = await startNginx(join(fixturesDir, 'hello.ts'), ['--workers', '2']);
    try {
      const before = workersState(s.dir);
      s.proc.kill('SIGHUP');
      await waitFor(() => workersState(s.dir).pids[0] !== before.pids[0], 60_000, 'the first worker to roll');
      // Held by the nginx worker the second step of the reload retires: that step waits for it.
      const slow = fetch(`${s.url}/slow?ms=3000`).then((r) => r.status);
      await waitFor(() => workersState(s.dir).pids[1] !== before.pids[1], 60_000, 'the second new worker');
      const mid = workersState(s.dir);
      expect(await s.stop()).toBe(0);
      expect(await slow).toBe(200);
      expect(existsSync(s.dir)).toBe(false);
      for (const pid of [...before.pids, ...mid.pids]) expect(alive(pid), `worker ${pid} left running`).toBe(false);
      expect(s.stderr()).not.toContain('reload failed');
    } finally {
      await s.stop();
    }
  });
});

describe('nginx workers mode: SIGTERM while starting', () => {
  it('is a graceful stop once started: exit 0, never ready, no worker and no temp dir left', async () => {
    const port = await freePort();
    const proc = spawn(process.execPath, [tsgiBin, 'nginx', 'run', join(fixturesDir, 'hello.ts'), '--port', String(port), '--workers', '2'], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let err = '';
    proc.stderr!.on('data', (d) => (err += d));
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
    let worker = 0;
    let dir = '';
    try {
      // The first Node worker runs: the temp dir exists, nginx is not started yet.
      await waitFor(
        () =>
          childrenOf(proc.pid!).some((c) => {
            const m = /(\/\S*\/tsgi-nginx-[^/\s]+)\/worker\.mjs/.exec(cmdline(c));
            if (m) [worker, dir] = [c, m[1]!];
            return !!m;
          }),
        60_000,
        'the first Node worker',
      );
      proc.kill('SIGTERM');
      expect(await exited, err).toEqual({ code: 0, signal: null });
      expect(err).not.toContain('ready on');
      expect(existsSync(dir), `${dir} left behind`).toBe(false);
      expect(alive(worker)).toBe(false);
    } finally {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill('SIGKILL');
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });
});
