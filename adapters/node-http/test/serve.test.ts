/**
 * `tsgi serve` as a long-running process: workers that die (also before they
 * listen) are replaced with back-off and no connection is left hanging;
 * SIGHUP reloads onto the handler as it is now, with and without workers,
 * without failing a request; SIGTERM during start-up still runs `close`; a
 * busy port is one line and exit 1.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { Agent, get as httpGet } from 'node:http';
import { createServer } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { alive, childrenOf, environOf, freePort, runCli, sleep, startCli, tsgiBin, waitFor, type RunningCli } from '@tsgi/conformance/testing';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-serve-test-'));
const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'cache') };
const running: RunningCli[] = [];
afterAll(async () => {
  await Promise.all(running.map((r) => r.stop(5_000)));
  rmSync(dir, { recursive: true, force: true });
});

const READY = /ready on (http:\/\/\S+?)\/?\s/;

async function start(handler: string, extra: string[] = []): Promise<RunningCli> {
  const r = await startCli(['serve', handler, '--port', '0', ...extra], READY, { env });
  running.push(r);
  return r;
}

/**
 * A handler whose answers name its version and process; `/slow` takes 400 ms.
 * init and close append "<event> <version> <pid>" lines to `marks`.
 */
function versioned(name: string, version: string, opts: { initMs?: number; initFails?: boolean } = {}): string {
  const file = join(dir, `${name}.ts`);
  const marks = join(dir, `${name}.marks`);
  writeFileSync(
    file,
    `import { appendFileSync } from 'node:fs';
const mark = (what: string) => appendFileSync(${JSON.stringify(marks)}, what + ' ${version} ' + process.pid + '\\n');
export default {
  async init() {
    mark('init');
    ${opts.initMs ? `await new Promise((r) => setTimeout(r, ${opts.initMs}));` : ''}
    ${opts.initFails ? "throw new Error('database unreachable');" : ''}
  },
  async fetch(request: Request) {
    const path = new URL(request.url).pathname;
    if (path === '/slow') await new Promise((r) => setTimeout(r, 400));
    else await new Promise((r) => setTimeout(r, 2));
    return new Response('${version} ' + process.pid);
  },
  close() {
    mark('close');
  },
};
`,
  );
  return file;
}

const marksOf = (name: string): string[] => {
  try {
    return readFileSync(join(dir, `${name}.marks`), 'utf8').trim().split('\n').filter(Boolean);
  } catch {
    return [];
  }
};

type Outcome = 'ok' | 'refused' | 'reset' | 'timeout' | 'bad status';

/** One GET; a client timeout well below the test's own turns a hanging connection into 'timeout'. */
function request(url: string, agent: Agent | false, timeoutMs: number): Promise<{ outcome: Outcome; body: string }> {
  return new Promise((resolve) => {
    const req = httpGet(url, { agent, timeout: timeoutMs }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ outcome: res.statusCode === 200 ? 'ok' : 'bad status', body }));
      res.on('error', () => resolve({ outcome: 'reset', body }));
    });
    req.on('timeout', () => {
      req.destroy();
      resolve({ outcome: 'timeout', body: '' });
    });
    req.on('error', (err: NodeJS.ErrnoException) => {
      if (req.destroyed && err.message === 'socket hang up' && !err.code) return; // after our own timeout
      resolve({ outcome: err.code === 'ECONNREFUSED' ? 'refused' : err.code === 'ETIMEDOUT' ? 'timeout' : 'reset', body: '' });
    });
  });
}

/** `concurrency` loops of requests until `until` resolves; counts the outcomes and the bodies seen. */
async function load(
  url: string,
  until: Promise<unknown>,
  { concurrency = 6, keepAlive = false, timeoutMs = 8_000 } = {},
): Promise<{ counts: Record<Outcome, number>; bodies: string[] }> {
  const counts: Record<Outcome, number> = { ok: 0, refused: 0, reset: 0, timeout: 0, 'bad status': 0 };
  const bodies: string[] = [];
  let done = false;
  void until.finally(() => (done = true));
  const agent = keepAlive ? new Agent({ keepAlive: true, maxSockets: concurrency }) : false;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (!done) {
        const r = await request(url, agent, timeoutMs);
        counts[r.outcome]++;
        if (r.outcome === 'ok') bodies.push(r.body);
      }
    }),
  );
  if (agent) agent.destroy();
  return { counts, bodies };
}

const body = async (url: string): Promise<string> => (await fetch(url, { headers: { connection: 'close' } })).text();

describe('tsgi serve --workers: dying workers', () => {
  it('replacements killed before they listen are replaced too; the primary keeps the port (the issue\'s reproduction)', async () => {
    const srv = await start(versioned('repro', 'v1'), ['--workers', '2']);
    const first = childrenOf(srv.proc.pid!);
    expect(first).toHaveLength(2);
    for (const p of first) process.kill(p, 'SIGKILL');
    await sleep(150);
    const replacements = childrenOf(srv.proc.pid!).filter((p) => !first.includes(p));
    expect(replacements.length).toBeGreaterThan(0);
    for (const p of replacements) process.kill(p, 'SIGKILL');
    // Connections made now wait in the backlog until a worker listens again.
    expect(await body(srv.ready)).toMatch(/^v1 \d+$/);
    await waitFor(() => childrenOf(srv.proc.pid!).length === 2, 30_000, 'two workers again');
    expect(alive(srv.proc.pid!)).toBe(true);
    expect(srv.stderr()).toMatch(/respawning/);
    expect(await srv.stop()).toBe(0);
  });

  it('a bounded load while workers are SIGKILLed: every request answered or cleanly cut, none left hanging', async () => {
    const srv = await start(versioned('kill-load', 'v1'), ['--workers', '2']);
    const killing = (async () => {
      for (let i = 0; i < 8; i++) {
        await sleep(300);
        const ws = childrenOf(srv.proc.pid!);
        if (ws.length) process.kill(ws[i % ws.length]!, 'SIGKILL');
      }
      await sleep(300);
    })();
    const { counts } = await load(`${srv.ready}/`, killing, { timeoutMs: 10_000 });
    expect(counts.timeout, JSON.stringify(counts)).toBe(0);
    expect(counts['bad status'], JSON.stringify(counts)).toBe(0);
    expect(counts.ok).toBeGreaterThan(0);
    // Still serving afterwards, with both workers back.
    expect(await body(srv.ready)).toMatch(/^v1 \d+$/);
    await waitFor(() => childrenOf(srv.proc.pid!).length === 2, 30_000, 'two workers again');
    expect(await srv.stop()).toBe(0);
  });
});

describe('tsgi serve: SIGHUP reloads onto the handler as it is now', () => {
  for (const extra of [[], ['--workers', '2']]) {
    const mode = extra.length ? 'with --workers 2' : 'single process';
    it(`${mode}: the in-flight request finishes, new requests see the new code, the old close() runs; zero failed requests under load`, async () => {
      const name = `reload-${extra.length ? 'workers' : 'single'}`;
      const file = versioned(name, 'v1');
      const srv = await start(file, extra);
      expect(await body(srv.ready)).toMatch(/^v1 /);
      const inflight = fetch(`${srv.ready}/slow`).then((r) => r.text());
      await sleep(50);
      versioned(name, 'v2');
      const seen = srv.stderr().length;
      srv.proc.kill('SIGHUP');
      // The load goes on a while after the reload, while the old generation drains.
      const reloaded = waitFor(() => /reloaded/.test(srv.stderr().slice(seen)), 30_000, 'the reload').then(() => sleep(1_500));
      const [fresh, kept] = await Promise.all([
        load(`${srv.ready}/`, reloaded, { concurrency: 4 }),
        load(`${srv.ready}/`, reloaded, { concurrency: 2, keepAlive: true }),
      ]);
      expect(await inflight).toMatch(/^v1 /);
      for (const r of [fresh, kept]) {
        expect(r.counts.ok, JSON.stringify(r.counts)).toBeGreaterThan(0);
        expect(r.counts.ok, JSON.stringify(r.counts)).toBe(Object.values(r.counts).reduce((a, b) => a + b));
      }
      expect(await body(srv.ready)).toMatch(/^v2 /);
      // Every v1 process (or generation) that ran init runs close, once.
      await waitFor(() => marksOf(name).filter((m) => m.startsWith('close v1')).length === marksOf(name).filter((m) => m.startsWith('init v1')).length, 30_000, 'close of v1');
      expect(marksOf(name).filter((m) => m.startsWith('close v2'))).toEqual([]);

      // A handler that no longer starts: one line, and v2 keeps serving.
      versioned(name, 'v3', { initFails: true });
      const before = srv.stderr().length;
      srv.proc.kill('SIGHUP');
      await waitFor(() => /reload failed/.test(srv.stderr().slice(before)), 30_000, 'the failed reload');
      expect(srv.stderr().slice(before)).toMatch(/reload failed.*(database unreachable|did not start)/);
      expect(await body(srv.ready)).toMatch(/^v2 /);
      expect(alive(srv.proc.pid!)).toBe(true);
      expect(await srv.stop()).toBe(0);
      const marks = marksOf(name);
      expect(marks.filter((m) => m.startsWith('close v2')).length).toBe(marks.filter((m) => m.startsWith('init v2')).length);
    });
  }
});

describe('tsgi serve: SIGTERM during start-up', () => {
  for (const extra of [[], ['--workers', '2']]) {
    const mode = extra.length ? 'with --workers 2' : 'single process';
    it(`${mode}: every process that ran init runs close, then exit 0`, async () => {
      const name = `term-${extra.length ? 'workers' : 'single'}`;
      const file = versioned(name, 'v1', { initMs: 1_500 });
      const proc = spawn(process.execPath, [tsgiBin, 'serve', file, '--port', '0', ...extra], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env,
      });
      let out = '';
      proc.stdout!.on('data', (d) => (out += d));
      proc.stderr!.on('data', (d) => (out += d));
      const exited = once(proc, 'exit');
      // With workers, wait until the second worker is in init (the first one has started).
      const inits = extra.length ? 2 : 1;
      await waitFor(() => marksOf(name).filter((m) => m.startsWith('init')).length >= inits, 30_000, 'init to start');
      proc.kill('SIGTERM');
      const [code] = await exited;
      expect(code, out).toBe(0);
      const marks = marksOf(name);
      const initPids = marks.filter((m) => m.startsWith('init')).map((m) => m.split(' ')[2]).sort();
      const closePids = marks.filter((m) => m.startsWith('close')).map((m) => m.split(' ')[2]).sort();
      expect(closePids, out).toEqual(initPids);
    });
  }
});

describe('tsgi serve: a busy port', () => {
  it('prints one line and exits 1, single process and --workers', async () => {
    const port = await freePort();
    const blocker = createServer().listen(port, '127.0.0.1');
    await once(blocker, 'listening');
    try {
      const file = versioned('busy', 'v1');
      for (const extra of [[], ['--workers', '2']]) {
        const r = await runCli(['serve', file, '--port', String(port), ...extra], 30_000, env);
        expect(r.code, r.stderr).toBe(1);
        expect(r.stderr.trim().split('\n'), r.stderr).toHaveLength(1);
        expect(r.stderr).toContain(`cannot listen on 127.0.0.1:${port}: address in use`);
      }
    } finally {
      blocker.close();
    }
  });
});

describe('tsgi serve: the environment workers see', () => {
  const file = join(dir, 'env.ts');
  writeFileSync(file, "export default { fetch: () => Response.json({ pid: process.pid, keys: Object.keys(process.env).sort(), env: process.env }) };\n");
  const withVars = { ...env, TSGI_T_NODE_KEEP: 'kept', TSGI_T_NODE_DROP: 'dropped' };
  const seen = async (url: string): Promise<{ pid: number; keys: string[]; env: Record<string, string> }> =>
    (await fetch(url, { headers: { connection: 'close' } })).json() as never;

  it('by default, the environment tsgi serve was started with (workers run as the same user)', async () => {
    const srv = await startCli(['serve', file, '--port', '0', '--workers', '2'], READY, { env: withVars });
    running.push(srv);
    const got = await seen(srv.ready);
    expect(got.env.TSGI_T_NODE_KEEP).toBe('kept');
    expect(got.env.TSGI_T_NODE_DROP).toBe('dropped');
    expect(got.env.HOME).toBe(process.env.HOME);
    expect(got.keys).not.toContain('TSGI_SERVE_WORKER');
    expect(await srv.stop()).toBe(0);
  });

  for (const extra of [[], ['--workers', '2']]) {
    const mode = extra.length ? 'with --workers 2' : 'single process';
    it(`${mode}: --clear-env --env NAME leaves HOME, USER, LOGNAME, PATH and the names asked for`, async () => {
      const srv = await startCli(
        ['serve', file, '--port', '0', '--clear-env', '--env', 'TSGI_T_NODE_KEEP', '--env', 'TSGI_T_NODE_UNSET', ...extra],
        READY,
        { env: withVars },
      );
      running.push(srv);
      const got = await seen(srv.ready);
      const { username, homedir } = (await import('node:os')).userInfo();
      expect(got.keys).toEqual(['HOME', 'LOGNAME', 'PATH', 'TSGI_T_NODE_KEEP', 'USER']);
      expect(got.env).toMatchObject({ HOME: homedir, USER: username, LOGNAME: username, PATH: process.env.PATH, TSGI_T_NODE_KEEP: 'kept' });
      if (extra.length) {
        // What the kernel holds for the worker: the same, plus what Node's IPC channel needs.
        const environ = environOf(got.pid);
        expect(Object.keys(environ).filter((k) => !k.startsWith('NODE_CHANNEL_') && k !== 'TSGI_SERVE_WORKER').sort()).toEqual(got.keys);
      }
      expect(await srv.stop()).toBe(0);
    });
  }

  it('--env without --clear-env is refused', async () => {
    const r = await runCli(['serve', file, '--env', 'X'], 20_000, env);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--env needs --clear-env/);
  });
});

describe('tsgi serve --drain-delay', () => {
  for (const extra of [[], ['--workers', '2']]) {
    const mode = extra.length ? 'with --workers 2' : 'single process';
    it(`${mode}: SIGHUP has no drain period; on Ctrl-C the health path says 503, a second Ctrl-C stops without waiting for the rest`, async () => {
      const file = versioned(`drain-${extra.length ? 'workers' : 'single'}`, 'v1');
      // Far longer than the test: only the second Ctrl-C can end it in time.
      const srv = await start(file, ['--health', '/healthz', '--drain-delay', '10m', ...extra]);
      const health = (): Promise<number> => fetch(`${srv.ready}/healthz`, { headers: { connection: 'close' } }).then((r) => r.status, () => 0);
      expect(await health()).toBe(200);
      srv.proc.kill('SIGHUP');
      await waitFor(() => /reloaded/.test(srv.stderr()), 30_000, 'the reload');
      expect(await health(), srv.stderr()).toBe(200);
      srv.proc.kill('SIGINT');
      await waitFor(async () => (await health()) === 503, 30_000, 'the health path to say 503');
      // The probe's connection is not kept; the application's answers are as before.
      const head = await new Promise<{ status?: number; connection?: string; retryAfter?: string | string[] }>((resolve, reject) =>
        httpGet(`${srv.ready}/healthz`, { agent: new Agent({ keepAlive: true }) }, (res) => {
          res.resume();
          resolve({ status: res.statusCode, connection: res.headers.connection, retryAfter: res.headers['retry-after'] });
        }).on('error', reject),
      );
      expect(head).toEqual({ status: 503, connection: 'close', retryAfter: '1' });
      expect((await fetch(`${srv.ready}/`)).status).toBe(200);
      expect(srv.stderr()).toMatch(/tsgi serve: draining for 600 s/);
      srv.proc.kill('SIGINT');
      const end = await Promise.race([srv.exited, sleep(30_000).then(() => undefined)]);
      expect(end, srv.stderr()).toEqual({ code: 0, signal: null });
    });
  }

  it('a bad value: one line, exit 1', async () => {
    const r = await runCli(['serve', versioned('drain-bad', 'v1'), '--drain-delay', 'soon'], 20_000, env);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toEqual(["tsgi serve: --drain-delay must be a duration (seconds, or with ms, s, m or h), got 'soon'"]);
  });
});
