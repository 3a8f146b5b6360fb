// authenticate/authorize guarding a static file through auth_request, in embedded and workers mode;
// and --preload read-only data in both modes.
// The guarded location comes from --include-server; the files live in a world-readable temp dir
// (nginx's workers run unprivileged).
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fixturesDir, startNginx, type Running } from './helpers.js';

let files: string;
const servers: Record<string, Running> = {};

beforeAll(async () => {
  files = mkdtempSync(join(tmpdir(), 'tsgi-auth-files-'));
  chmodSync(files, 0o755);
  writeFileSync(join(files, 'secret.txt'), 'the static secret\n');
  chmodSync(join(files, 'secret.txt'), 0o644);
  const guard = join(files, 'guard.conf');
  writeFileSync(
    guard,
    `location /files/ {
  auth_request /_tsgi_auth;
  auth_request_set $tsgi_user $sent_http_x_tsgi_user;
  auth_request_set $tsgi_challenge $tsgi_auth_challenge;
  add_header WWW-Authenticate $tsgi_challenge always;
  add_header X-Tsgi-User $tsgi_user always;
  # what the auth subrequest itself answered (accessReply), to check one mapping for both modes
  auth_request_set $tsgi_auth_status $status;
  add_header X-Auth-Status $tsgi_auth_status always;
  auth_request_set $tsgi_refused $sent_http_x_tsgi_status;
  add_header X-Auth-Refused $tsgi_refused always;
  alias ${files}/;
}
`,
  );
  const config = join(files, 'config.json');
  writeFileSync(config, JSON.stringify({ greeting: 'hi from preload', list: [1, 2, 3] }));
  const handler = join(fixturesDir, 'auth.ts');
  const common = ['--include-server', guard, '--preload', `tsgiConfig=${config}`, '--request-timeout', '1'];
  const [e, w] = await Promise.all([startNginx(handler, common), startNginx(handler, [...common, '--workers', '1'])]);
  servers.embedded = e;
  servers.workers = w;
});

afterAll(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  if (files) rmSync(files, { recursive: true, force: true });
});

/**
 * core's accessReply, the auth_request answer of both modes: what the auth subrequest answers
 * (status, x-tsgi-status) and what the client of the guarded location then gets.
 */
const MAPPING: { case: string; token?: string; auth: number; refused: string | null; client: number; user?: string; challenge?: string }[] = [
  { case: 'allowed, with a user', token: 'good', auth: 204, refused: null, client: 200, user: 'alice' },
  { case: 'authenticate refuses with 401', token: 'forged', auth: 401, refused: null, client: 401, challenge: 'Bearer realm="tsgi"' },
  { case: 'authorize returns false (anonymous)', auth: 403, refused: '403', client: 403 },
  { case: 'authorize returns false (a user)', token: 'mallory', auth: 403, refused: '403', client: 403 },
  { case: 'authorize refuses with a 429 of its own', token: 'limited', auth: 403, refused: '429', client: 403 },
  { case: 'authorize refuses with a 500 of its own: a 500 stays 500', token: 'broken', auth: 500, refused: null, client: 500 },
  { case: 'authenticate throws: the bare 500 stays 500', token: 'boom', auth: 500, refused: null, client: 500 },
  // The auth subrequest's own deadline (issue 12): its 504 is what auth_request turns into 500.
  { case: 'authenticate never answers: 504 at the request deadline', token: 'hang', auth: 504, refused: null, client: 500 },
];

for (const mode of ['embedded', 'workers'] as const) {
  describe(`auth_request guard (${mode})`, () => {
    const get = async (path: string, token?: string) => {
      const r = await fetch(servers[mode]!.url + path, { headers: token ? { authorization: `Bearer ${token}` } : {} });
      return { status: r.status, body: await r.text(), headers: r.headers };
    };

    it('an accepted and authorized user gets the static file; the user is passed on', async () => {
      const r = await get('/files/secret.txt', 'good');
      expect(r.status).toBe(200);
      expect(r.body).toBe('the static secret\n');
      expect(r.headers.get('x-tsgi-user')).toBe('alice');
    });

    for (const m of MAPPING) {
      it(`auth_request answer: ${m.case} -> ${m.auth}, the client gets ${m.client}`, async () => {
        const r = await get('/files/secret.txt', m.token);
        expect({ status: r.status, auth: r.headers.get('x-auth-status'), refused: r.headers.get('x-auth-refused') }).toEqual({
          status: m.client,
          auth: String(m.auth),
          refused: m.refused,
        });
        expect(r.headers.get('x-tsgi-user')).toBe(m.user ?? null);
        expect(r.headers.get('www-authenticate')).toBe(m.challenge ?? null);
        if (m.client !== 200) expect(r.body).not.toContain('the static secret');
      });
    }

    it('authenticate rejecting with a Response: 401 with its WWW-Authenticate, no file', async () => {
      const r = await get('/files/secret.txt', 'forged');
      expect(r.status).toBe(401);
      expect(r.headers.get('www-authenticate')).toBe('Bearer realm="tsgi"');
      expect(r.body).not.toContain('the static secret');
    });

    it('authorize returning false: 403 for anonymous and for a user without access', async () => {
      for (const token of [undefined, 'mallory']) {
        const r = await get('/files/secret.txt', token);
        expect(r.status).toBe(403);
        expect(r.body).not.toContain('the static secret');
      }
    });

    it('the handler itself still runs the whole pipeline on its own location', async () => {
      expect((await get('/hello', 'good')).body).toBe('app alice /hello\n');
      expect((await get('/hello')).body).toBe('app - /hello\n');
      expect((await get('/hello', 'forged')).status).toBe(401);
    });

    it('--preload: read-only data the handler reads as a global (js_preload_object in embedded mode)', async () => {
      expect((await get('/config', 'good')).body).toBe('hi from preload 3 true\n');
    });

    it('a client cannot reach the internal auth location', async () => {
      expect((await get('/_tsgi_auth', 'good')).status).toBe(404);
    });
  });
}
