// The handler's hooks guarding content Apache serves itself (static files) through
// TsgiAuthenticate / TsgiAuthorize / TsgiLog, and Apache's own auth reaching the handler.
import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixture, startApache, waitFor, type RunningApache } from './helpers.js';

const M = '/usr/lib/apache2/modules';
let dir: string;
let server: RunningApache;

const basic = (user: string, pass: string) => 'Basic ' + Buffer.from(`${user}:${pass}`).toString('base64');

beforeAll(async () => {
  // Everything the unprivileged Apache children read lives outside the (maybe 0700) repo.
  dir = mkdtempSync('/tmp/tsgi-apache-auth-');
  chmodSync(dir, 0o755);
  for (const d of ['guarded', 'mixed', 'open']) {
    mkdirSync(join(dir, 'static', d), { recursive: true, mode: 0o755 });
    writeFileSync(join(dir, 'static', d, 'file.txt'), `static ${d}\n`, { mode: 0o644 });
  }
  chmodSync(join(dir, 'static'), 0o755);
  execFileSync('htpasswd', ['-bcB', join(dir, 'htpasswd'), 'bob', 'builder'], { stdio: 'ignore' });
  chmodSync(join(dir, 'htpasswd'), 0o644);
  const conf = join(dir, 'auth.conf');
  writeFileSync(
    conf,
    `
<IfModule !auth_basic_module>
  LoadModule auth_basic_module ${M}/mod_auth_basic.so
</IfModule>
<IfModule !authn_file_module>
  LoadModule authn_file_module ${M}/mod_authn_file.so
</IfModule>
Alias /static ${dir}/static
<Directory ${dir}/static>
  Require all granted
</Directory>
# The handler alone decides who gets the static files here.
<Location /static/guarded>
  AuthType tsgi
  AuthName guarded
  TsgiAuthenticate app
  TsgiAuthorize app
  Require valid-user
  TsgiLog app
</Location>
# The handler's authenticate first; with no opinion, mod_auth_basic gets its turn.
<Location /static/mixed>
  AuthType Basic
  AuthName mixed
  AuthBasicProvider file
  AuthUserFile ${dir}/htpasswd
  TsgiAuthenticate app
  TsgiAuthorize app
  Require valid-user
  TsgiLog app
</Location>
# Apache's own Basic auth in front of tsgi content.
<Location /app/basic>
  AuthType Basic
  AuthName basic
  AuthBasicProvider file
  AuthUserFile ${dir}/htpasswd
  Require valid-user
</Location>
`,
  );
  chmodSync(conf, 0o644);
  server = await startApache(fixture('auth.ts'), ['--location', '/app', '--include', conf]);
});

afterAll(async () => {
  await server?.stop();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

const get = (path: string, headers: Record<string, string> = {}) => fetch(new URL(path, server.url), { headers });

interface Logged {
  method: string;
  url: string;
  status: number;
  user?: string;
  server: string;
}

async function logged(): Promise<Logged[]> {
  return (await (await get('/app/log')).json()) as Logged[];
}

/** Waits for the log hook (fire and forget from Apache's log phase) to have seen `path` with `status`. */
async function logEntry(path: string, status: number, user?: string): Promise<Logged> {
  let hit: Logged | undefined;
  await waitFor(
    async () => {
      hit = (await logged()).find((e) => new URL(e.url).pathname === path.split('?')[0] && e.status === status && e.user === user);
      return hit !== undefined;
    },
    15_000,
    `a log entry for ${path} ${status} ${user}`,
  );
  return hit!;
}

describe('TsgiAuthenticate / TsgiAuthorize guarding a static file', () => {
  it('accepts: authenticate returns { user }, authorize allows, Apache serves the file', async () => {
    const r = await get('/static/guarded/file.txt', { 'x-token': 'alice' });
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('static guarded\n');
  });

  it('rejects with the handler response: 401 + WWW-Authenticate, and the file is not sent', async () => {
    const r = await get('/static/guarded/file.txt', { 'x-token': 'bad' });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toBe('Bearer realm="tsgi"');
    const body = await r.text();
    expect(body).toBe('bad token\n');
    expect(body).not.toContain('static');
  });

  it('no opinion with AuthType tsgi: 401, the file is not sent', async () => {
    const r = await get('/static/guarded/file.txt');
    expect(r.status).toBe(401);
    expect(await r.text()).not.toContain('static guarded');
  });

  it('authorize false gives the bare 403', async () => {
    const r = await get('/static/guarded/file.txt', { 'x-token': 'mallory' });
    expect(r.status).toBe(403);
    expect(await r.text()).toBe('Forbidden\n');
  });

  it('authorize returning a Response rejects with it (status, headers, body)', async () => {
    const r = await get('/static/guarded/file.txt', { 'x-token': 'eve' });
    expect(r.status).toBe(403);
    expect(r.headers.get('x-why')).toBe('eve');
    expect(await r.text()).toBe('go away\n');
  });

  it('a throwing hook gives a bare 500 without the message; the next request is fine', async () => {
    const r = await get('/static/guarded/file.txt', { 'x-token': 'boom' });
    expect(r.status).toBe(500);
    const body = await r.text();
    expect(body).not.toContain('secret');
    expect(body).not.toContain('static');
    const ok = await get('/static/guarded/file.txt', { 'x-token': 'alice' });
    expect(ok.status).toBe(200);
  });

  it('TsgiLog: the log hook sees the static request with ctx.user from authenticate', async () => {
    await get('/static/guarded/file.txt?for=log', { 'x-token': 'carol' });
    const e = await logEntry('/static/guarded/file.txt', 200, 'carol');
    expect(e.method).toBe('GET');
    expect(e.server).toBe('apache');
    expect(new URL(e.url).search).toBe('?for=log');
    // Rejections are logged too, with the user authenticate set before authorize refused.
    await get('/static/guarded/file.txt?denied', { 'x-token': 'mallory' });
    await logEntry('/static/guarded/file.txt', 403, 'mallory');
  });

  it('an unguarded static file needs nothing', async () => {
    const r = await get('/static/open/file.txt');
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('static open\n');
  });
});

describe("Apache's own auth and the handler's hooks together", () => {
  it('mod_auth_basic user reaches the handler as ctx.user (content under SetHandler tsgi)', async () => {
    const r = await get('/app/basic/whoami', { authorization: basic('bob', 'builder') });
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('user=bob server=apache\n');
  });

  it('mod_auth_basic still refuses a wrong password before the handler runs', async () => {
    const r = await get('/app/basic/whoami', { authorization: basic('bob', 'wrong') });
    expect(r.status).toBe(401);
    expect(r.headers.get('www-authenticate')).toMatch(/^Basic realm="basic"/);
    const none = await get('/app/basic/whoami');
    expect(none.status).toBe(401);
  });

  it('content without Apache auth: the handler pipeline alone (authenticate sets ctx.user)', async () => {
    const r = await get('/app/whoami', { 'x-token': 'dave' });
    expect(await r.text()).toBe('user=dave server=apache\n');
    const anon = await get('/app/whoami');
    expect(await anon.text()).toBe('user=- server=apache\n');
  });

  it('handler authenticate with no opinion falls through to Basic; the log sees the Basic user', async () => {
    const viaBasic = await get('/static/mixed/file.txt', { authorization: basic('bob', 'builder') });
    expect(viaBasic.status).toBe(200);
    expect(await viaBasic.text()).toBe('static mixed\n');
    await logEntry('/static/mixed/file.txt', 200, 'bob');
    const viaToken = await get('/static/mixed/file.txt', { 'x-token': 'alice' });
    expect(viaToken.status).toBe(200);
    const neither = await get('/static/mixed/file.txt');
    expect(neither.status).toBe(401);
    expect(neither.headers.get('www-authenticate')).toMatch(/^Basic realm="mixed"/);
  });
});
