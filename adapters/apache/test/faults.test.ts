// Fault behaviour of mod_tsgi + its Node workers through `tsgi apache run`:
// worker crashes, request-timeout, overload, graceful restart, bad config, privileges.
import { execFileSync } from 'node:child_process';
import { get as httpGet } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { load as backgroundLoad, sleep } from '@tsgi/conformance/testing';
import { fixture, freePort, runCli, startApache, uidOf, waitFor, workerPids, type RunningApache } from './helpers.js';

const PROCESSES = 2;
const MAX_INFLIGHT = 4;
const REQUEST_TIMEOUT = 4;

let server: RunningApache;
let marks: string;
let seq = 0;

beforeAll(async () => {
  // The workers (www-data when we are root) write "<pid> <state>" files here.
  marks = mkdtempSync('/tmp/tsgi-apache-marks-');
  chmodSync(marks, 0o777);
  server = await startApache(fixture('faults.ts'), [
    '--processes', String(PROCESSES),
    '--max-inflight', String(MAX_INFLIGHT),
    '--request-timeout', String(REQUEST_TIMEOUT),
    '--graceful-timeout', '10',
  ]);
  await waitFor(() => workerPids(server.pid).length === PROCESSES, 30_000, 'the workers');
});

afterAll(async () => {
  await server?.stop();
  if (marks) rmSync(marks, { recursive: true, force: true });
});

const url = (path: string) => new URL(path, server.url).href;

/** A mark file name and a reader for it. */
function newMark(): { file: string; read(): { pid: number; state: string } | null } {
  const file = join(marks, `m${++seq}`);
  return {
    file,
    read() {
      if (!existsSync(file)) return null;
      const [pid, state] = readFileSync(file, 'utf8').split(' ');
      return pid ? { pid: Number(pid), state: state ?? '' } : null;
    },
  };
}

/** Why requests failed without an HTTP status (shown when an assertion fails). */
const failures: string[] = [];

async function status(path: string): Promise<number> {
  try {
    const r = await fetch(url(path));
    await r.arrayBuffer();
    return r.status;
  } catch (err) {
    const cause = (err as { cause?: { code?: string; message?: string } }).cause;
    failures.push(`${path}: ${cause?.code ?? cause?.message ?? String(err)}`);
    return 0; // connection failure counts as a failed request
  }
}

/** One request on a fresh connection (no keep-alive): every failure is the server's. */
function freshStatus(path: string): Promise<number> {
  return new Promise((resolve) => {
    const req = httpGet(url(path), { agent: false, headers: { connection: 'close' } }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode ?? 0));
      res.on('error', (err) => {
        failures.push(`${path}: ${err.message}`);
        resolve(0);
      });
    });
    req.on('error', (err) => {
      failures.push(`${path}: ${(err as NodeJS.ErrnoException).code ?? err.message}`);
      resolve(0);
    });
  });
}

interface Sample {
  status: number;
  start: number;
}

/** `clients` loops of sequential requests until `total` are done; runs `midway` once half are done. */
async function load(
  total: number,
  clients: number,
  midway: () => void | Promise<void>,
  one: (path: string) => Promise<number> = status,
): Promise<Sample[]> {
  const samples: Sample[] = [];
  let started = 0;
  let fired = false;
  let trigger: Promise<void> = Promise.resolve();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      while (started < total) {
        started++;
        const start = performance.now();
        samples.push({ status: await one('/'), start });
        if (!fired && samples.length >= total / 2) {
          fired = true;
          trigger = Promise.resolve(midway());
        }
      }
    }),
  );
  await trigger;
  return samples;
}

const gone = (pid: number): boolean => !existsSync(`/proc/${pid}`) || / Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));

describe('worker crashes', () => {
  it('kill -9 of a worker mid-request: its requests get 502, the others finish, the worker is respawned', async () => {
    const before = workerPids(server.pid);
    expect(before).toHaveLength(PROCESSES);
    const reqs = Array.from({ length: 4 }, () => {
      const m = newMark();
      return { m, res: status(`/slow?ms=2500&mark=${encodeURIComponent(m.file)}`) };
    });
    await waitFor(() => reqs.every((r) => r.m.read()?.state === 'started'), 20_000, 'the slow requests to start');
    const victim = reqs[0]!.m.read()!.pid;
    expect(before).toContain(victim);
    process.kill(victim, 'SIGKILL');
    for (const r of reqs) {
      const st = await r.res;
      expect(st, `request on pid ${r.m.read()!.pid}`).toBe(r.m.read()!.pid === victim ? 502 : 200);
    }
    await waitFor(() => {
      const now = workerPids(server.pid);
      return now.length === PROCESSES && !now.includes(victim);
    }, 30_000, 'a replacement worker');
    expect(await status('/')).toBe(200);
    // Logged in Apache's error log with the request id (it reaches us through the CLI's stderr).
    await waitFor(() => /mod_tsgi: request \S+: daemon app: .*\(502\)/.test(server.errors()), 10_000, 'the 502 in the error log');
  });

  it('kill -9 of every worker under load: failures only for requests in flight, then service resumes', async () => {
    const clients = 4;
    const before = workerPids(server.pid);
    let readyAt = Infinity;
    const samples = await load(400, clients, async () => {
      const victims = workerPids(server.pid);
      for (const pid of victims) process.kill(pid, 'SIGKILL');
      await waitFor(() => victims.every(gone), 10_000, 'the workers to die');
      await waitFor(() => {
        const now = workerPids(server.pid);
        return now.length === PROCESSES && now.every((p) => !victims.includes(p));
      }, 30_000, 'replacement workers');
      readyAt = performance.now();
    });
    expect(samples).toHaveLength(400);
    const failed = samples.filter((s) => s.status !== 200);
    const detail = `statuses ${failed.map((f) => f.status).join(' ')}; ${failures.join('; ')}`;
    // Only requests caught by the crash fail (a handful per client at most), all as 502...
    expect(failed.length, detail).toBeLessThanOrEqual(2 * clients);
    for (const f of failed) expect(f.status, detail).toBe(502);
    // ...and once the replacements run, everything succeeds again.
    const after = samples.filter((s) => s.start > readyAt);
    expect(after.every((s) => s.status === 200), detail).toBe(true);
    await waitFor(() => {
      const now = workerPids(server.pid);
      return now.length === PROCESSES && now.every((p) => !before.includes(p));
    }, 30_000, 'replacement workers');
    expect(await status('/')).toBe(200);
  });
});

describe('timeouts and overload', () => {
  it('request-timeout: 504, request.signal aborts in the worker, which keeps serving others', async () => {
    const m = newMark();
    const hung = status(`/hang?mark=${encodeURIComponent(m.file)}`);
    await waitFor(() => m.read()?.state === 'waiting', 20_000, 'the hanging request');
    const pid = m.read()!.pid;
    // Meanwhile the same worker (and the other) serve normally.
    const others = await Promise.all(Array.from({ length: 6 }, () => status('/')));
    expect(others.every((s) => s === 200)).toBe(true);
    expect(await hung).toBe(504);
    await waitFor(() => m.read()?.state === 'aborted', 10_000, 'request.signal to abort');
    // Not a restart: the worker that held the request is still the same process.
    expect(workerPids(server.pid)).toContain(pid);
    await waitFor(() => /mod_tsgi: request \S+: daemon app: request-timeout \(504\)/.test(server.errors()), 10_000, 'the 504 in the error log');
  });

  it('a full worker (max-inflight) answers 503 with Retry-After; all else succeeds', async () => {
    const n = PROCESSES * MAX_INFLIGHT + 4;
    const results = await Promise.all(
      Array.from({ length: n }, async () => {
        try {
          const r = await fetch(url('/slow?ms=1500'));
          await r.arrayBuffer();
          return { status: r.status, retry: r.headers.get('retry-after') };
        } catch {
          return { status: 0, retry: null };
        }
      }),
    );
    const refused = results.filter((r) => r.status === 503);
    expect(refused.length).toBeGreaterThanOrEqual(n - PROCESSES * MAX_INFLIGHT);
    for (const r of refused) expect(Number(r.retry)).toBeGreaterThanOrEqual(1);
    for (const r of results) expect([200, 503]).toContain(r.status);
    expect(await status('/')).toBe(200);
  });
});

describe('graceful restart', () => {
  it('apachectl graceful (SIGUSR1) under load: zero failed requests, workers replaced', async () => {
    const before = workerPids(server.pid);
    expect(before).toHaveLength(PROCESSES);
    // Fresh connections: on graceful, Apache itself closes idle keep-alive connections, and a
    // client that writes on one at that instant loses the request (any Apache module, static
    // files too; clients retry those). What must hold is that no accepted request fails.
    const samples = await load(
      400,
      4,
      () => {
        process.kill(server.pid, 'SIGUSR1');
      },
      freshStatus,
    );
    expect(samples.filter((s) => s.status !== 200), failures.join('; ') + '\n' + server.errors().split('\n').filter((l) => !/AH0009[34]|AH00489|AH00493/.test(l)).slice(-30).join('\n')).toEqual([]);
    await waitFor(() => {
      const now = workerPids(server.pid);
      return now.length === PROCESSES && now.every((p) => !before.includes(p));
    }, 30_000, 'the new generation of workers');
    expect(await status('/')).toBe(200);
  });
});

describe('reload (SIGHUP to tsgi apache run, decision 10)', () => {
  let dir: string;
  let app: RunningApache;
  beforeAll(async () => {
    dir = mkdtempSync('/tmp/tsgi-apache-reload-');
    writeFileSync(join(dir, 'handler.mjs'), "export default { fetch: () => new Response('v1') };\n");
    app = await startApache(join(dir, 'handler.mjs'), ['--processes', '1']);
  });
  afterAll(async () => {
    await app?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  // A fresh connection each time: a graceful restart closes idle keep-alive ones (see "graceful restart").
  const text = (): Promise<string> =>
    new Promise((resolve, reject) => {
      httpGet(app.url, { agent: false, headers: { connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(body));
        res.on('error', reject);
      }).on('error', reject);
    });

  it('serves the handler as it is now: rebuilt, new workers, the old ones drain', async () => {
    expect(await text()).toBe('v1');
    const before = workerPids(app.pid);
    writeFileSync(join(dir, 'handler.mjs'), "export default { fetch: () => new Response('v2') };\n");
    const from = app.errors().length;
    app.proc.kill('SIGHUP');
    await waitFor(async () => (await text()) === 'v2', 30_000, 'the new handler');
    await waitFor(() => workerPids(app.pid).every((p) => !before.includes(p)), 30_000, 'the old worker to go');
    // mod_tsgi's gate says so (before it tells the old worker to go).
    await waitFor(() => /mod_tsgi: daemon \S+: reloaded: 1 new worker ready; the previous 1 drains$/m.test(app.errors().slice(from)), 10_000, 'the reloaded line');
  });

  it('a handler that no longer builds: one line, and the previous one keeps serving', async () => {
    writeFileSync(join(dir, 'handler.mjs'), 'export default { fetch: () => new Response(\n');
    const from = app.errors().length;
    app.proc.kill('SIGHUP');
    await waitFor(() => /reload failed/.test(app.errors().slice(from)), 30_000, 'the reload failure');
    expect(app.errors().slice(from).trim().split('\n')).toEqual([expect.stringMatching(/^tsgi apache: reload failed: cannot bundle handler .*; still serving the previous handler$/)]);
    expect(await text()).toBe('v2');
  });

  // The reload gate (issue 12): the previous workers serve until every new one said ready.
  it('a handler whose init fails: one line names it, nothing respawns in a loop, the previous keeps serving; fixed, it is served', async () => {
    const before = workerPids(app.pid);
    writeFileSync(join(dir, 'handler.mjs'), "export default { async init() { throw new Error('init-fails-on-reload'); }, fetch: () => new Response('v3') };\n");
    const from = app.errors().length;
    app.proc.kill('SIGHUP');
    await waitFor(() => /init-fails-on-reload/.test(app.errors().slice(from)), 30_000, 'the reload failure');
    // Long enough for a respawn loop to show (the back-off: 0, 0.1, 0.2, 0.4, 0.8 s).
    await sleep(3_000);
    const said = app.errors().slice(from).split('\n').filter((l) => /init-fails-on-reload/.test(l));
    expect(said, app.errors().slice(from)).toEqual([expect.stringMatching(/mod_tsgi: daemon \S+: reload failed: .*init-fails-on-reload.*; still serving the previous handler$/)]);
    // Nothing claims it reloaded.
    expect(app.errors().slice(from)).not.toMatch(/reloaded/);
    expect(await text()).toBe('v2');
    expect(workerPids(app.pid)).toEqual(before);

    writeFileSync(join(dir, 'handler.mjs'), "export default { fetch: () => new Response('v4') };\n");
    app.proc.kill('SIGHUP');
    await waitFor(async () => (await text()) === 'v4', 30_000, 'the fixed handler');
    await waitFor(() => workerPids(app.pid).every((p) => !before.includes(p)), 30_000, 'the previous worker to go');
    await waitFor(() => /mod_tsgi: daemon \S+: reloaded: 1 new worker ready; the previous 1 drains$/m.test(app.errors().slice(from)), 10_000, 'the reloaded line');
  });

  it('a second reload while the first one\'s workers still run init: the previous serves throughout, then only the last handler', async () => {
    const gates = mkdtempSync('/tmp/tsgi-apache-gate-');
    chmodSync(gates, 0o755);
    const open = join(gates, 'open');
    // init waits for a file: the new workers stay in init until the test lets them go.
    const slow = (v: string): string => `import { existsSync } from 'node:fs';
export default {
  async init() { while (!existsSync(${JSON.stringify(open)})) await new Promise((r) => setTimeout(r, 50)); },
  fetch: () => new Response('${v}'),
};
`;
    try {
      const before = workerPids(app.pid);
      const l = backgroundLoad(app.url, 2, true);
      writeFileSync(join(dir, 'handler.mjs'), slow('v5'));
      app.proc.kill('SIGHUP');
      let first: number[] = [];
      await waitFor(() => (first = workerPids(app.pid).filter((p) => !before.includes(p))).length > 0, 30_000, 'the first reload\'s worker');
      expect(await text()).toBe('v4');
      writeFileSync(join(dir, 'handler.mjs'), slow('v6'));
      app.proc.kill('SIGHUP');
      await waitFor(() => {
        const now = workerPids(app.pid);
        return first.every((p) => !now.includes(p)) && now.some((p) => !before.includes(p));
      }, 30_000, 'the second reload\'s worker in place of the first one\'s');
      expect(await text()).toBe('v4');
      writeFileSync(open, '');
      await waitFor(async () => (await text()) === 'v6', 30_000, 'the last handler');
      await waitFor(() => workerPids(app.pid).every((p) => !before.includes(p)), 30_000, 'the previous worker to go');
      const r = await l.stop();
      expect(r.failed, JSON.stringify(r)).toBe(0);
      expect(Object.keys(r.bodies).sort()).toEqual(['v4', 'v6']);
    } finally {
      rmSync(gates, { recursive: true, force: true });
    }
  });
});

describe('privileges', () => {
  it('workers never run as root (www-data when started as root)', async () => {
    const pids = workerPids(server.pid);
    expect(pids.length).toBe(PROCESSES);
    for (const pid of pids) expect(uidOf(pid)).not.toBe(0);
    const r = await fetch(url('/uid'));
    const [uid] = (await r.text()).split(' ').map(Number);
    expect(uid).not.toBe(0);
    if (process.getuid?.() === 0) {
      const wwwData = Number(execFileSync('id', ['-u', 'www-data'], { encoding: 'utf8' }).trim());
      expect(uid).toBe(wwwData);
    }
  });
});

describe('start-up errors', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync('/tmp/tsgi-apache-badconf-');
    chmodSync(dir, 0o755);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const args = (inc: string) => ['apache', 'run', fixture('faults.ts'), '--port', '1', '--include', inc];

  it('an unknown daemon name: Apache refuses to start with a clear message', async () => {
    const inc = join(dir, 'unknown.conf');
    writeFileSync(inc, '<Location /x>\n  SetHandler tsgi\n  TsgiDaemonName nosuchdaemon\n</Location>\n');
    const r = await runCli(args(inc));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/nosuchdaemon/);
  });

  it('a bad number in TsgiDaemon: Apache refuses to start with a clear message', async () => {
    const inc = join(dir, 'badnum.conf');
    writeFileSync(inc, `TsgiDaemon other handler=${fixture('faults.ts')} processes=many\n`);
    const r = await runCli(args(inc));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/processes/);
  });

  it('an unknown TsgiDaemon option is refused', async () => {
    const inc = join(dir, 'badopt.conf');
    writeFileSync(inc, `TsgiDaemon other handler=${fixture('faults.ts')} colour=blue\n`);
    const r = await runCli(args(inc));
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/colour/);
  });

  it('a wrong handler path: one line, exit 1, before Apache starts', async () => {
    const r = await runCli(['apache', 'run', join(dir, 'nope.ts'), '--port', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/handler not found/);
  });

  it('a handler without fetch: one line, exit 1', async () => {
    const h = join(dir, 'nofetch.mjs');
    writeFileSync(h, 'export default { hello: 1 };\n');
    const r = await runCli(['apache', 'run', h, '--port', '1']);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/fetch/);
  });

  it('a handler whose init fails: one line with the reason, exit 1, never ready', async () => {
    const h = join(dir, 'init-fails.mjs');
    writeFileSync(h, "export default { init() { throw new Error('database unreachable'); }, fetch: () => new Response('x') };\n");
    const r = await runCli(['apache', 'run', h, '--port', String(await freePort())], 30_000);
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n'), r.stderr).toEqual(['tsgi apache: handler init failed: database unreachable']);
  });

  it('a busy port: one line "cannot listen on HOST:PORT: address in use", exit 1, before Apache starts', async () => {
    const busy = createServer();
    await new Promise<void>((res) => busy.listen(0, '127.0.0.1', res));
    const port = (busy.address() as AddressInfo).port;
    try {
      const r = await runCli(['apache', 'run', fixture('faults.ts'), '--port', String(port)]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n'), r.stderr).toEqual([`tsgi apache: cannot listen on 127.0.0.1:${port}: address in use`]);
    } finally {
      busy.close();
    }
  });

  it('a server root the worker user cannot reach: a clear message before Apache starts', async () => {
    const locked = mkdtempSync('/tmp/tsgi-apache-locked-'); // 0700, owned by us
    try {
      const r = await runCli(['apache', 'run', fixture('faults.ts'), '--port', '1', '--server-root', locked]);
      expect(r.code).not.toBe(0);
      // As root the workers run as www-data, which cannot enter a 0700 root-owned folder.
      if (process.getuid?.() === 0) expect(r.stderr).toMatch(/worker user 'www-data' cannot reach .*tsgi-apache-locked-/);
    } finally {
      rmSync(locked, { recursive: true, force: true });
    }
  });

  it('bad CLI numbers are refused', async () => {
    const badPort = await runCli(['apache', 'run', fixture('faults.ts'), '--port', '70000']);
    expect(badPort.code).toBe(1);
    expect(badPort.stderr).toMatch(/--port/);
    const bad = await runCli(['apache', 'run', fixture('faults.ts'), '--port', '8080', '--processes', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--processes/);
  });

  it('tsgi apache conf prints a snippet with LoadModule, TsgiDaemon and the Location (installed paths: tsgi apache install)', async () => {
    const r = await runCli(['apache', 'conf', fixture('faults.ts'), '--location', '/api', '--processes', '3']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/LoadModule tsgi_module \/usr\/lib\/apache2\/modules\/mod_tsgi\.so/);
    expect(r.stdout).toMatch(/TsgiDaemon app handler=\/var\/lib\/tsgi\/app\/app\.mjs worker=\/var\/lib\/tsgi\/app\/app\.mjs processes=3/);
    expect(r.stdout).toMatch(/<Location \/api>\s+SetHandler tsgi\s+TsgiDaemonName app\s+<\/Location>/);
  });
});

describe('recycling and draining (a second server: one worker, max-requests 20)', () => {
  let small: RunningApache;
  let dir: string;
  beforeAll(async () => {
    dir = mkdtempSync('/tmp/tsgi-apache-drain-');
    chmodSync(dir, 0o777);
    small = await startApache(fixture('faults.ts'), ['--processes', '1', '--max-requests', '20', '--graceful-timeout', '10'], {
      FAULTS_MARKS_DIR: dir,
    });
  });
  afterAll(async () => {
    await small?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('max-requests: the worker drains, exits and is replaced; no request fails', async () => {
    const pids = new Set<string>();
    const statuses: number[] = [];
    await Promise.all(
      Array.from({ length: 3 }, async () => {
        for (let i = 0; i < 30; i++) {
          const r = await fetch(new URL('/pid', small.url));
          statuses.push(r.status);
          pids.add(await r.text());
        }
      }),
    );
    expect(statuses.filter((s) => s !== 200)).toEqual([]);
    // 90 requests at 20 per worker: at least four generations, each one ran close().
    expect(pids.size).toBeGreaterThanOrEqual(4);
    await waitFor(() => [...pids].filter((p) => existsSync(join(dir, `closed.${p}`))).length >= pids.size - 1, 20_000, 'close() of the retired workers');
  });

  it('stop: in-flight requests finish, waitUntil work completes, then close() runs', async () => {
    const slowMark = join(dir, 'slow');
    const laterMark = join(dir, 'later');
    const slow = fetch(new URL(`/slow?ms=1500&mark=${encodeURIComponent(slowMark)}`, small.url)).then(async (r) => [r.status, await r.text()] as const);
    await waitFor(() => existsSync(slowMark), 10_000, 'the slow request to start');
    const later = await fetch(new URL(`/later?ms=800&mark=${encodeURIComponent(laterMark)}`, small.url));
    expect(later.status).toBe(200);
    const worker = workerPids(small.pid)[0]!;
    await small.stop();
    const [st, body] = await slow;
    expect(st).toBe(200);
    expect(body).toMatch(/^slow /);
    expect(readFileSync(laterMark, 'utf8')).toMatch(/ waited$/);
    expect(existsSync(join(dir, `closed.${worker}`))).toBe(true);
    expect(small.proc.exitCode).toBe(0);
  });
});

describe('stopping', () => {
  it('SIGTERM to tsgi apache run: Apache and the workers stop, the server root is removed', async () => {
    const pids = [server.pid, ...workerPids(server.pid)];
    const root = server.root;
    expect(existsSync(root)).toBe(true);
    await server.stop();
    expect(server.proc.exitCode).toBe(0);
    expect(existsSync(root)).toBe(false);
    await waitFor(() => pids.every((p) => !existsSync(`/proc/${p}`) || readFileSync(`/proc/${p}/stat`, 'utf8').includes(') Z ')), 20_000, 'the processes to exit');
  });
});
