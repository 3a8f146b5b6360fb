// A system nginx: the parts `tsgi nginx conf` prints dropped into a private copy of Debian's
// /etc/nginx as they are (http part in conf.d/, server part in a site's server {}), `nginx -t` on it,
// and a real nginx from it in front of `tsgi nginx workers` (workers mode) or the njs bundle (embedded).
// The real /etc/nginx is only read.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { alive, createLocalUser, freePort, removeLocalUser, runCli, sleep, startCli, uidOf, waitFor, type RunningCli } from '@tsgi/conformance/testing';
import { fixturesDir } from './helpers.js';
import { parsePrometheus } from '@tsgi/core/node';
import { nginxBinary } from '../src/nginx.js';

const root = process.getuid?.() === 0;
const hello = join(fixturesDir, 'hello.ts');
const probe = join(fixturesDir, 'probe.ts');
const hang = join(fixturesDir, 'hang.ts');
const USER = 'tsgisys';

let base: string;
beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'tsgi-system-nginx-'));
  // nginx's workers (www-data) reach the sockets and temp paths under it.
  chmodSync(base, 0o755);
  if (root) createLocalUser(USER);
});
afterAll(() => {
  if (root) removeLocalUser(USER);
  rmSync(base, { recursive: true, force: true });
});

/**
 * A private copy of Debian's /etc/nginx under `dir`: the include, pid and log paths moved into it, the
 * default site replaced by one on `port` whose server {} includes snippets/tsgi.conf. `http` goes to
 * conf.d/tsgi.conf, `server` to snippets/tsgi.conf, each as printed (log paths moved like the rest).
 */
function debianCopy(dir: string, port: number, http: string, server: string): string {
  const etc = join(dir, 'etc');
  cpSync('/etc/nginx', etc, { recursive: true, verbatimSymlinks: true });
  mkdirSync(join(dir, 'log'));
  mkdirSync(join(dir, 'tmp'));
  // load_module modules/...: relative to the prefix, as Debian's /usr/share/nginx/modules.
  symlinkSync('/usr/lib/nginx/modules', join(dir, 'modules'));
  rmSync(join(etc, 'sites-enabled', 'default'));
  const moved = (s: string): string => s.replaceAll('/etc/nginx', etc).replaceAll('/var/log/nginx', join(dir, 'log')).replaceAll('/run/nginx.pid', join(dir, 'nginx.pid'));
  const tmp = join(dir, 'tmp');
  const temps = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((t) => `${t}_temp_path ${tmp}/${t};`).join(' ');
  const conf = moved(readFileSync('/etc/nginx/nginx.conf', 'utf8')).replace(/^http \{$/m, `http {\n\t${temps}`);
  expect(conf).toContain(temps);
  writeFileSync(join(etc, 'nginx.conf'), conf);
  writeFileSync(join(etc, 'conf.d', 'tsgi.conf'), moved(http));
  writeFileSync(join(etc, 'snippets', 'tsgi.conf'), moved(server));
  writeFileSync(join(etc, 'sites-enabled', 'tsgi'), `server {\n\tlisten 127.0.0.1:${port};\n\tserver_name _;\n\tinclude snippets/tsgi.conf;\n}\n`);
  return join(etc, 'nginx.conf');
}

function nginxTest(dir: string, conf: string): { status: number | null; stderr: string } {
  return spawnSync(nginxBinary(), ['-t', '-p', dir, '-e', join(dir, 'log', 'error.log'), '-c', conf], { encoding: 'utf8' });
}

async function startNginx(dir: string, conf: string, port: number): Promise<ChildProcess> {
  const proc = spawn(nginxBinary(), ['-p', dir, '-e', join(dir, 'log', 'error.log'), '-c', conf, '-g', 'daemon off;'], { stdio: 'ignore' });
  await waitFor(() => existsSync(join(dir, 'nginx.pid')), 20_000, 'nginx started');
  await waitFor(() => get(port, '/').then((r) => r.status > 0, () => false), 20_000, 'nginx answers');
  return proc;
}

async function stopNginx(proc: ChildProcess | undefined): Promise<void> {
  if (!proc || proc.exitCode !== null) return;
  const gone = new Promise((r) => proc.once('exit', r));
  proc.kill('SIGQUIT');
  const t = setTimeout(() => proc.kill('SIGKILL'), 15_000);
  await gone;
  clearTimeout(t);
}

/** GET `path` (Host example.test) on one connection: status, body and headers. */
function getFull(port: number, path: string, socketPath?: string): Promise<{ status: number; body: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((res, rej) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, socketPath, agent: false, headers: { host: 'example.test' } }, (r) => {
      let body = '';
      r.setEncoding('utf8');
      r.on('data', (d) => (body += d));
      r.on('end', () => res({ status: r.statusCode ?? 0, body, headers: r.headers }));
    });
    req.on('error', rej);
    req.end();
  });
}

const get = (port: number, path: string, socketPath?: string): Promise<{ status: number; body: string }> =>
  getFull(port, path, socketPath).then(({ status, body }) => ({ status, body }));

async function parts(args: string[]): Promise<{ http: string; server: string }> {
  const [h, s] = await Promise.all(['http', 'server'].map((p) => runCli(['nginx', 'conf', ...args, '--part', p])));
  expect(h!.code, h!.stderr).toBe(0);
  expect(s!.code, s!.stderr).toBe(0);
  return { http: h!.stdout, server: s!.stdout };
}

const mode = (f: string): number => statSync(f).mode & 0o777;
const state = (file: string): { pids: number[]; respawns: number } => JSON.parse(readFileSync(file, 'utf8'));
const READY = /^tsgi nginx: ready: .* state (\S+)\)$/m;

describe.runIf(root)('tsgi nginx workers behind a system nginx (Debian layout)', () => {
  it('conf --part as printed passes nginx -t only once the workers made the secret include; then serves, survives a killed worker, a reload and a restart', async () => {
    const dir = join(base, 'workers');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const sockets = join(dir, 'run');
    const port = await freePort();
    const { http, server } = await parts([probe, '--workers', '2', '--socket-dir', sockets]);
    // One access log: Debian's own at http level; the parts add none.
    expect(`${http}${server}`).not.toMatch(/^\s*access_log/m);
    expect(`${http}${server}`).not.toMatch(/^\s*load_module/m);
    const conf = debianCopy(dir, port, http, server);
    // Before the workers ran there is no secret to include: nginx -t says so.
    const early = nginxTest(dir, conf);
    expect(early.status).not.toBe(0);
    expect(early.stderr).toContain(join(sockets, 'secret.conf'));

    let workers: RunningCli | undefined = await startCli(['nginx', 'workers', probe, '--socket-dir', sockets, '--processes', '2', '--user', USER], READY);
    let nginx: ChildProcess | undefined;
    try {
      const stateFile = workers.ready;
      // Privacy: the dir and sockets are root's and nginx's group's only; the secret nginx's master's only.
      const wwwData = Number(spawnSync('getent', ['group', 'www-data'], { encoding: 'utf8' }).stdout.split(':')[2]);
      expect(mode(sockets)).toBe(0o750);
      expect(statSync(sockets).gid).toBe(wwwData);
      expect(readdirSync(sockets).sort()).toEqual(['secret.conf', 'worker-0.sock', 'worker-1.sock']);
      for (const s of ['worker-0.sock', 'worker-1.sock']) {
        expect(mode(join(sockets, s))).toBe(0o660);
        expect(statSync(join(sockets, s)).gid).toBe(wwwData);
      }
      expect(mode(join(sockets, 'secret.conf'))).toBe(0o600);
      const secret = readFileSync(join(sockets, 'secret.conf'), 'utf8');
      const pids = state(stateFile).pids;
      expect(pids).toHaveLength(2);
      const uid = Number(spawnSync('id', ['-u', USER], { encoding: 'utf8' }).stdout);
      for (const p of pids) expect(uidOf(p)).toBe(uid);

      const ok = nginxTest(dir, conf);
      expect(ok.status, ok.stderr).toBe(0);
      nginx = await startNginx(dir, conf, port);
      const r = await get(port, '/hi?x=1');
      expect(r.status).toBe(200);
      const seen = JSON.parse(r.body) as { url: string; ip: string; headers: Record<string, string> };
      expect(seen.url).toBe('http://example.test/hi?x=1');
      expect(seen.ip).toBe('127.0.0.1');
      // The X-Tsgi-* headers nginx sets never reach the handler.
      expect(Object.keys(seen.headers).filter((h) => h.startsWith('x-tsgi'))).toEqual([]);
      // The auth phase through auth_request: probe's authenticate refuses /guarded.
      expect((await get(port, '/guarded')).status).toBe(401);
      // Without nginx (no secret), straight on the socket: refused.
      expect((await get(0, '/', join(sockets, 'worker-0.sock'))).status).toBe(403);

      // A killed worker is respawned; the socket stays, nginx keeps answering.
      process.kill(pids[0]!, 'SIGKILL');
      await waitFor(() => state(stateFile).respawns >= 1 && !state(stateFile).pids.includes(pids[0]!) && state(stateFile).pids.every((p) => p > 0), 20_000, 'respawned');
      for (let i = 0; i < 4; i++) expect((await get(port, '/')).status).toBe(200);

      // SIGHUP: new workers on the same sockets, the old ones gone, no nginx reload.
      const before = state(stateFile).pids;
      workers.proc.kill('SIGHUP');
      await waitFor(() => workers!.stderr().includes('tsgi nginx: reloaded'), 30_000, 'reloaded');
      const after = state(stateFile).pids;
      expect(after.some((p) => before.includes(p))).toBe(false);
      await waitFor(() => before.every((p) => !alive(p)), 20_000, 'old workers gone');
      for (let i = 0; i < 4; i++) expect((await get(port, '/')).status).toBe(200);

      // SIGTERM: drained, exit 0, the sockets removed, the secret kept.
      expect(await workers.stop()).toBe(0);
      expect(readdirSync(sockets)).toEqual(['secret.conf']);
      for (const p of after) expect(alive(p)).toBe(false);
      // A restart keeps the secret: nginx answers again without a reload.
      workers = await startCli(['nginx', 'workers', probe, '--socket-dir', sockets, '--processes', '2', '--user', USER], READY);
      expect(readFileSync(join(sockets, 'secret.conf'), 'utf8')).toBe(secret);
      expect(workers.stderr()).not.toContain('new secret');
      await waitFor(() => get(port, '/').then((x) => x.status === 200), 20_000, 'served after the restart');
    } finally {
      await stopNginx(nginx);
      await workers?.stop();
    }
  }, 180_000);

  it('the operations options, as tsgi nginx run --workers takes them: --request-timeout 1s gives 504, --metrics Prometheus text (issue 12)', async () => {
    const dir = join(base, 'ops');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const sockets = join(dir, 'run');
    const port = await freePort();
    const { http, server } = await parts([hang, '--workers', '1', '--socket-dir', sockets, '--request-timeout', '1s']);
    const conf = debianCopy(dir, port, http, server);
    const ops = ['--request-timeout', '1s', '--metrics', '/metrics', '--health', '/healthz', '--drain-delay', '2'];
    const workers = await startCli(['nginx', 'workers', hang, '--socket-dir', sockets, '--processes', '1', '--user', USER, ...ops], READY);
    let nginx: ChildProcess | undefined;
    try {
      nginx = await startNginx(dir, conf, port);
      const count = async (status: string): Promise<number> => {
        const m = await get(port, '/metrics');
        expect(m.status).toBe(200);
        return parsePrometheus(m.body).find((x) => x.name === 'tsgi_requests_total' && x.labels.status === status)?.value ?? 0;
      };
      const before = await count('200');
      // The workers' deadline (nginx's own proxy_read_timeout is 300 s, past this test's time limit).
      const timedOut = await get(port, '/hang');
      expect(timedOut.status).toBe(504);
      expect(await get(port, '/')).toEqual({ status: 200, body: 'ok\n' });
      expect(await get(port, '/healthz')).toEqual({ status: 200, body: 'ok\n' });
      expect(await count('504')).toBe(1);
      expect(await count('200')).toBe(before + 1);
      // --drain-delay: after SIGTERM the health path says 503 while requests are still served, then the stop.
      const stopped = workers.stop();
      await waitFor(() => get(port, '/healthz').then((r) => r.status === 503 && r.body === 'draining\n'), 5_000, 'health 503 draining');
      expect(await get(port, '/')).toEqual({ status: 200, body: 'ok\n' });
      expect(await stopped).toBe(0);
      expect(workers.stderr()).toContain('draining for 2 s');
    } finally {
      await stopNginx(nginx);
      await workers.stop();
    }
  }, 120_000);

  it('bad input: one line, nothing started', async () => {
    const dir = join(base, 'bad');
    mkdirSync(dir);
    const cases: [string[], RegExp][] = [
      [['nginx', 'workers', hello, '--socket-dir', 'relative/dir'], /^tsgi nginx: --socket-dir must be an absolute path/],
      [['nginx', 'workers', hello, '--nginx-group', 'no-such-group-x'], /^tsgi nginx: no such group 'no-such-group-x' \(--nginx-group\)$/],
      [['nginx', 'workers', hello, '--user', 'no-such-user-x'], /^tsgi nginx: no such user 'no-such-user-x' \(--user\)$/],
      [['nginx', 'workers', join(fixturesDir, 'no-fetch.ts'), '--socket-dir', join(dir, 's'), '--user', USER], /default export must be an object with a fetch/],
    ];
    for (const [args, line] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim().split('\n')[0]).toMatch(line);
    }
    // The operations options: the same one line as tsgi nginx run --workers gives (one parser entry each).
    for (const bad of [['--request-timeout', 'soon'], ['--max-inflight', 'x'], ['--max-heap', 'lots'], ['--metrics', 'metrics'], ['--queue-timeout', '2d']]) {
      const [w, r] = await Promise.all([runCli(['nginx', 'workers', hello, ...bad]), runCli(['nginx', 'run', hello, '--workers', '1', '--port', '1', ...bad])]);
      expect(w.code, bad.join(' ')).toBe(1);
      const line = w.stderr.trim().split('\n');
      expect(line, bad.join(' ')).toHaveLength(1);
      expect(line[0]).toMatch(new RegExp(`^tsgi nginx: ${bad[0]} must be `));
      expect(line).toEqual(r.stderr.trim().split('\n'));
    }
    // A socket dir someone else owns is refused (they could swap the include nginx's master reads).
    const theirs = join(dir, 'theirs');
    mkdirSync(theirs);
    spawnSync('chown', [USER, theirs]);
    const r = await runCli(['nginx', 'workers', hello, '--socket-dir', theirs, '--user', USER]);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/^tsgi nginx: --socket-dir \S+ belongs to uid \d+, not to us/);
  }, 60_000);
});

describe.runIf(root)('tsgi nginx conf (embedded) on a system nginx (Debian layout)', () => {
  it('the parts pass nginx -t as they are (the js module is Debian\'s), serve, and log each request once, with the log hook', async () => {
    const dir = join(base, 'embedded');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const build = join(dir, 'build');
    const b = await runCli(['nginx', 'build', hello, '-o', build]);
    expect(b.code, b.stderr).toBe(0);
    const port = await freePort();
    const { http, server } = await parts([hello, '-o', build]);
    expect(`${http}${server}`).not.toMatch(/^\s*load_module/m);
    // Exactly one access_log, in the tsgi location (it replaces the inherited one there).
    expect(server.match(/^\s*access_log .*$/gm)).toEqual(['  access_log /var/log/nginx/access.log tsgi;']);
    const conf = debianCopy(dir, port, http, server);
    const t = nginxTest(dir, conf);
    expect(t.status, t.stderr).toBe(0);
    const nginx = await startNginx(dir, conf, port);
    try {
      const r = await get(port, '/once-logged');
      expect(r).toEqual({ status: 200, body: 'hello\n' });
      await waitFor(() => readFileSync(join(dir, 'log', 'access.log'), 'utf8').includes('/once-logged'), 10_000, 'logged');
      const lines = readFileSync(join(dir, 'log', 'access.log'), 'utf8').split('\n').filter((l) => l.includes('/once-logged'));
      expect(lines).toHaveLength(1);
    } finally {
      await stopNginx(nginx);
    }
  }, 120_000);

  it('tsgi nginx build --request-timeout --server-timing: the bundle answers a never-answering handler 504 at its deadline, with Server-Timing (issue 12)', async () => {
    const dir = join(base, 'embedded-ops');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const build = join(dir, 'build');
    const b = await runCli(['nginx', 'build', hang, '-o', build, '--request-timeout', '1s', '--server-timing']);
    expect(b.code, b.stderr).toBe(0);
    const port = await freePort();
    const { http, server } = await parts([hang, '-o', build]);
    const nginx = await startNginx(dir, debianCopy(dir, port, http, server), port);
    try {
      // Without the deadline njs ends a request whose promise never settles at once, with nginx's 500.
      const r = await getFull(port, '/hang');
      expect(r.status).toBe(504);
      expect(r.body).toBe('Gateway Timeout\n');
      expect(r.headers['content-type']).toBe('text/plain;charset=UTF-8');
      await waitFor(() => readFileSync(join(dir, 'log', 'error.log'), 'utf8').includes('request-timeout (1 s) reached before the response: 504'), 10_000, 'the timeout logged');
      // An answer after the deadline is dropped: the client had its 504, nothing is sent twice.
      expect((await getFull(port, '/late')).status).toBe(504);
      await sleep(1_500);
      expect(readFileSync(join(dir, 'log', 'error.log'), 'utf8')).not.toMatch(/cannot send|\[alert\]|\[crit\]/);
      const ok = await getFull(port, '/');
      expect(ok.status).toBe(200);
      expect(ok.headers['server-timing']).toMatch(/^queue;dur=0, fetch;dur=\d+$/);
    } finally {
      await stopNginx(nginx);
    }
  }, 120_000);
});
