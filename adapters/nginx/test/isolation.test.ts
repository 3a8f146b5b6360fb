// Workers mode seen from outside nginx: another local user cannot reach the run's files, sockets
// or access log; a client that bypasses nginx cannot pose as it; the workers' environment,
// request URLs, stacks and build processes.
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContext } from '@tsgi/conformance';
import { childrenOf, cmdline, environOf, uidOf } from '@tsgi/conformance/testing';
import { fixturesDir, startNginx, waitFor, workersState, type Running } from './helpers.js';

const OTHER = 'tsgi-t-ngx';
const probe = join(fixturesDir, 'probe.ts');
const isRoot = process.getuid?.() === 0;

function account(name: string): { uid: number; gid: number; home: string } {
  const f = execFileSync('getent', ['passwd', name], { encoding: 'utf8' }).trim().split(':');
  return { uid: Number(f[2]), gid: Number(f[3]), home: f[5]! };
}

function removeOther(): void {
  spawnSync('userdel', [OTHER], { stdio: 'ignore' });
}

/** Runs a node script as the other user; it prints one JSON line. */
function asOther(script: string): Record<string, string> {
  const { uid, gid } = account(OTHER);
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid, gid, cwd: '/', encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`script as ${OTHER} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, string>;
}

/** A request straight to a worker's Unix socket, bypassing nginx. */
function direct(socketPath: string, path: string, headers: Record<string, string>): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path, headers: { host: 'evil.example', ...headers } }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode!, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

function descendants(pid: number): number[] {
  const out: number[] = [];
  for (const c of childrenOf(pid)) out.push(c, ...descendants(c));
  return out;
}

const SPOOF = { 'x-real-ip': '6.6.6.6', 'x-forwarded-proto': 'https' };

describe.runIf(isRoot)('nginx workers mode: isolation (as root, with a second local user)', () => {
  let srv: Running;
  let clean: Running;

  beforeAll(async () => {
    removeOther();
    execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', OTHER]);
    const env = { ...process.env, DATABASE_URL: 'postgres://db.example/app', HOME: '/root', USER: 'root', LOGNAME: 'root', PWD: '/somewhere' };
    srv = await startNginx(probe, ['--workers', '1'], env);
    clean = await startNginx(probe, ['--workers', '1', '--clear-env', '--env', 'DATABASE_URL'], env);
  });
  afterAll(async () => {
    removeOther();
    await srv?.stop();
    await clean?.stop();
  });

  it('another local user cannot list the run dir, read the conf, the bundle or the access log, nor connect to a socket', () => {
    const { sockets } = workersState(srv.dir);
    const out = asOther(`
      import { readdirSync, readFileSync, openSync, constants } from 'node:fs';
      import { connect } from 'node:net';
      const r = {};
      const t = (k, f) => { try { f(); r[k] = 'ok'; } catch (e) { r[k] = e.code; } };
      t('list', () => readdirSync(${JSON.stringify(srv.dir)}));
      t('conf', () => readFileSync(${JSON.stringify(srv.conf)}));
      t('bundle', () => readFileSync(${JSON.stringify(join(srv.dir, 'worker.mjs'))}));
      t('log', () => openSync(${JSON.stringify(join(srv.dir, 'access.log'))}, constants.O_RDONLY | constants.O_NONBLOCK));
      const sock = (p) => new Promise((res) => { const s = connect(p); s.on('connect', () => { s.destroy(); res('ok'); }); s.on('error', (e) => res(e.code)); });
      for (const [i, p] of ${JSON.stringify(sockets)}.entries()) r['socket' + i] = await sock(p);
      const res = await fetch(${JSON.stringify(srv.url + '/probe')});
      r.nginx = String(res.status);
      console.log(JSON.stringify(r));
    `);
    // Through nginx the user is served like anyone else.
    expect(out).toEqual({ list: 'EACCES', conf: 'EACCES', bundle: 'EACCES', log: 'EACCES', socket0: 'EACCES', nginx: '200' });
  });

  it('the run dir is 0710 root:<worker group>, the conf and the access-log FIFO 0600 root, sockets 0660', () => {
    const www = account('www-data');
    const mode = (p: string): string => (statSync(p).mode & 0o7777).toString(8);
    const st = statSync(srv.dir);
    expect([mode(srv.dir), st.uid, st.gid]).toEqual(['710', 0, www.gid]);
    expect([mode(srv.conf), statSync(srv.conf).uid]).toEqual(['600', 0]);
    const fifo = statSync(join(srv.dir, 'access.log'));
    expect([fifo.isFIFO(), mode(join(srv.dir, 'access.log')), fifo.uid]).toEqual([true, '600', 0]);
    for (const s of workersState(srv.dir).sockets) expect([mode(s), statSync(s).gid]).toEqual(['660', www.gid]);
  });

  it('a request that bypasses nginx cannot set ctx.ip, the scheme, the host or the access phase: 403, logged once', async () => {
    const [sock] = workersState(srv.dir).sockets;
    const before = srv.stderr();
    const spoofed = await direct(sock!, '/probe', SPOOF);
    expect(spoofed.status).toBe(403);
    expect(spoofed.body).toBe('Forbidden\n');
    expect((await direct(sock!, '/probe', { ...SPOOF, 'x-tsgi-secret': 'guess' })).status).toBe(403);
    expect((await direct(sock!, '/probe', { 'x-tsgi-phase': 'access' })).status).toBe(403);
    await waitFor(() => srv.stderr().length > before.length, 5_000, 'the refusal in the log');
    const logged = srv.stderr().slice(before.length);
    expect(logged.match(/refused a request that did not come through nginx/g)).toHaveLength(1);
    // With the secret from the conf (root can read it) the same headers are trusted: the secret is what counts.
    const secret = /X-Tsgi-Secret (\S+);/.exec(readFileSync(srv.conf, 'utf8'))![1]!;
    // A guess of the right length that differs in its last character only.
    const near = secret.slice(0, -1) + (secret.endsWith('0') ? '1' : '0');
    expect((await direct(sock!, '/probe', { ...SPOOF, 'x-tsgi-secret': near })).status).toBe(403);
    const trusted = await direct(sock!, '/probe', { ...SPOOF, 'x-tsgi-secret': secret });
    expect(trusted.status).toBe(200);
    const seen = JSON.parse(trusted.body) as { url: string; ip: string; headers: Record<string, string> };
    expect([seen.ip, seen.url]).toEqual(['6.6.6.6', 'https://evil.example/probe']);
    expect(seen.headers['x-tsgi-secret']).toBeUndefined();
  });

  it('through nginx: the handler never sees the secret, and client-sent proxy headers are overridden', async () => {
    const res = await fetch(srv.url + '/probe', {
      headers: { ...SPOOF, 'x-tsgi-phase': 'access', 'x-tsgi-request': 'GET http://evil.example:1/probe HTTP/1.0', 'x-tsgi-secret': 'guess' },
    });
    expect(res.status).toBe(200);
    const seen = (await res.json()) as { url: string; ip: string; headers: Record<string, string> };
    expect([seen.ip, seen.url]).toEqual(['127.0.0.1', `${srv.url}/probe`]);
    // nginx sets these three (config.ts proxyCommon) over the client's; the worker hides them.
    expect(Object.keys(seen.headers).filter((k) => ['x-tsgi-secret', 'x-tsgi-request', 'x-tsgi-phase'].includes(k))).toEqual([]);
    const secret = /X-Tsgi-Secret (\S+);/.exec(readFileSync(srv.conf, 'utf8'))![1]!;
    expect(JSON.stringify(seen)).not.toContain(secret);
  });

  it('request.url: the authority of an absolute-form target wins, the scheme is the connection\'s, bad authorities get 400', async () => {
    const t = makeContext(srv.url, { server: 'nginx', mode: 'workers' });
    const url = async (raw: string): Promise<string> => {
      const r = await t.exchange(raw);
      expect(r.status, raw).toBe(200);
      return (JSON.parse(r.body.toString()) as { url: string }).url;
    };
    expect(await url(`GET http://other.example:8443/probe?q=1 HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`)).toBe(
      'http://other.example:8443/probe?q=1',
    );
    expect(await url(`GET HTTPS://Other.Example/probe HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`)).toBe(
      'http://other.example/probe',
    );
    expect(await url('GET /probe HTTP/1.0\r\n\r\n')).toBe(`${srv.url}/probe`);
    // The Host the handler sees is the target's authority (RFC 9112 3.2.2), also when the client sent none.
    const host = async (raw: string): Promise<string | undefined> => {
      const r = await t.exchange(raw);
      expect(r.status, raw).toBe(200);
      return (JSON.parse(r.body.toString()) as { headers: Record<string, string> }).headers.host;
    };
    expect(await host(`GET http://other.example:8443/probe HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`)).toBe('other.example:8443');
    expect(await host('GET http://other.example:8443/probe HTTP/1.0\r\n\r\n')).toBe('other.example:8443');
    expect(await host('GET /probe HTTP/1.0\r\n\r\n')).toBeUndefined();
    expect(await url(`GET /probe HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`)).toBe(`${srv.url}/probe`);
    for (const raw of [
      `GET http://evil@other.example/probe HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      `GET /probe HTTP/1.1\r\nHost: a@b\r\nConnection: close\r\n\r\n`,
      `GET /probe HTTP/1.1\r\nHost: a/x@y\r\nConnection: close\r\n\r\n`,
      `GET /probe HTTP/1.1\r\nHost: a\r\nHost: b\r\nConnection: close\r\n\r\n`,
      `GET http://other.example:99999/probe HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      // core's rule checks Host also when the target's authority wins
      `GET http://other.example/probe HTTP/1.1\r\nHost: a!b.example\r\nConnection: close\r\n\r\n`,
    ]) {
      expect((await t.exchange(raw)).status, raw).toBe(400);
    }
  });

  it('workers get HOME, USER, LOGNAME of their user and PWD = their cwd; the rest of the environment is kept', async () => {
    const www = account('www-data');
    const [pid] = workersState(srv.dir).pids;
    expect(uidOf(pid!)).toBe(www.uid);
    const env = environOf(pid!);
    expect([env.HOME, env.USER, env.LOGNAME, env.PWD]).toEqual([www.home, 'www-data', 'www-data', srv.dir]);
    expect(env.DATABASE_URL).toBe('postgres://db.example/app');
    expect(env.PATH).toBe(process.env.PATH);
    const secret = /X-Tsgi-Secret (\S+);/.exec(readFileSync(srv.conf, 'utf8'))![1]!;
    expect(readFileSync(`/proc/${pid}/environ`, 'utf8')).not.toContain(secret);
  });

  it('--clear-env --env NAME: only HOME, USER, LOGNAME, PATH, PWD and the allowed names', async () => {
    const www = account('www-data');
    const [pid] = workersState(clean.dir).pids;
    // NODE_CHANNEL_*: Node's IPC channel to the supervisor (node removes them from process.env at start).
    const env = Object.fromEntries(Object.entries(environOf(pid!)).filter(([k]) => !k.startsWith('NODE_CHANNEL_')));
    const want = {
      DATABASE_URL: 'postgres://db.example/app',
      HOME: www.home,
      USER: 'www-data',
      LOGNAME: 'www-data',
      PATH: '/usr/local/bin:/bin:/usr/bin',
      PWD: clean.dir,
    };
    expect(env).toEqual(want);
    // What the handler sees.
    const seen = (await (await fetch(clean.url + '/env')).json()) as { env: Record<string, string>; cwd: string };
    expect(seen).toEqual({ env: want, cwd: clean.dir });
  });

  it('a thrown error logs a stack that points at the handler\'s .ts line', async () => {
    const before = srv.stderr().length;
    const res = await fetch(srv.url + '/throw');
    expect(res.status).toBe(500);
    await waitFor(() => srv.stderr().slice(before).includes('probe stack'), 5_000, 'the logged error');
    await waitFor(() => /\n\s+at .*probe\.ts:7:\d+/.test(srv.stderr().slice(before)), 5_000, 'probe.ts:7 in the stack');
  });

  it('no esbuild service process stays alive after the build, nor after a reload', async () => {
    const esbuilds = (): string[] => descendants(srv.proc.pid!).map(cmdline).filter((c) => c.includes('esbuild'));
    expect(esbuilds()).toEqual([]);
    const before = srv.stderr().length;
    srv.proc.kill('SIGHUP');
    await waitFor(() => srv.stderr().slice(before).includes('tsgi nginx: reloaded'), 60_000, 'the reload');
    expect(esbuilds()).toEqual([]);
    expect((await fetch(srv.url + '/probe')).status).toBe(200);
  });
});
