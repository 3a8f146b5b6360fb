/**
 * The njs runtime inside real nginx + njs 0.7.9:
 *  - the Web API probe cases (runtime-probe.ts) run in njs and must match Node's results;
 *  - the bridge serves the conformance fixture's simple routes (built with the product
 *    build, src/build.ts) and a log/waitUntil/auth test handler.
 * One nginx for the whole file.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { request as httpRequest } from 'node:http';
import { httpOnlyFixturePath } from '@tsgi/conformance';
import { buildNjs as productBuild } from '../src/build.js';
import { buildNjs, RUNTIME_DIR, startNginx, type Nginx } from './runtime-helpers.js';
import { probe, cases } from './runtime-probe.js';

const here = dirname(fileURLToPath(import.meta.url));

let ngx: Nginx;
let nodeResults: Record<string, unknown>;

async function buildProduct(handler: string): Promise<string> {
  const out = mkdtempSync(join(tmpdir(), 'tsgi-njs-build-'));
  try {
    const { file } = await productBuild({ handler, outDir: out });
    return readFileSync(file, 'utf8');
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

beforeAll(async () => {
  const probeEntry = `
import { probe } from ${JSON.stringify(join(here, 'runtime-probe.ts'))};
function content(r) {
  probe({ Headers, Request, Response, URL, URLSearchParams, ReadableStream, AbortController, FormData, Blob, File }).then(
    function (res) { r.return(200, JSON.stringify(res)); },
    function (e) { r.return(500, String(e)); });
}
export default { content };
`;
  const probeJs = await buildNjs(probeEntry, RUNTIME_DIR);
  const fixtureJs = await buildProduct(httpOnlyFixturePath);
  const logJs = await buildProduct(resolve(here, 'fixtures/runtime-log-handler.ts'));
  ngx = await startNginx(
    { probe: probeJs, tsgi: fixtureJs, lg: logJs },
    `
    location = /__probe { js_content probe.content; }
    location / { js_content tsgi.content; }
    location = /_tsgi_auth { internal; js_content tsgi.auth; }
    location /lg/ { js_content lg.content; }
    location = /_lg_auth { internal; js_content lg.auth; }
    location /guarded/ {
      auth_request /_lg_auth;
      auth_request_set $tsgi_user $sent_http_x_tsgi_user;
      # njs 0.7.9 does not fill the subrequest's www_authenticate slot that auth_request copies:
      # carry the header over by hand.
      auth_request_set $tsgi_www_auth $sent_http_www_authenticate;
      add_header WWW-Authenticate $tsgi_www_auth always;
      js_content lg.fetch;
    }
    `,
    'js_set $tsgi_log lg.log;',
  );
  nodeResults = Object.fromEntries(
    await probe({ Headers, Request, Response, URL, URLSearchParams, ReadableStream, AbortController, FormData, Blob, File }),
  );
}, 120_000);

afterAll(async () => {
  await ngx?.stop();
});

interface Raw {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: Buffer;
  aborted: boolean;
}

/** A raw HTTP exchange (fetch hides cut connections and HEAD details). */
function raw(method: string, path: string, headers: Record<string, string> = {}, body?: string | Buffer): Promise<Raw> {
  return new Promise((res, rej) => {
    const req = httpRequest(ngx.url + path, { method, headers, agent: false }, (resp) => {
      const chunks: Buffer[] = [];
      let aborted = false;
      resp.on('data', (c: Buffer) => chunks.push(c));
      resp.on('aborted', () => (aborted = true));
      resp.on('error', () => (aborted = true));
      resp.on('close', () =>
        res({ status: resp.statusCode!, headers: resp.headers, body: Buffer.concat(chunks), aborted: aborted || !resp.complete }),
      );
    });
    req.on('error', rej);
    if (body !== undefined) req.end(body);
    else req.end();
  });
}

describe('Web API probe inside njs 0.7.9 matches Node', () => {
  let njsResults: Record<string, unknown>;
  beforeAll(async () => {
    const r = await fetch(ngx.url + '/__probe');
    expect(r.status).toBe(200);
    njsResults = Object.fromEntries((await r.json()) as Array<[string, unknown]>);
  });
  it.each(Object.keys(cases))('%s', (name) => {
    expect(njsResults[name]).toEqual(nodeResults[name]);
  });
});

describe('bridge serves the conformance fixture in njs', () => {
  it('GET / text with content-type', async () => {
    const r = await raw('GET', '/');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('Hello, tsgi!');
    expect(r.headers['content-type']).toBe('text/plain;charset=UTF-8');
  });
  it('Response.json', async () => {
    const r = await raw('GET', '/json');
    expect(r.headers['content-type']).toBe('application/json');
    expect(JSON.parse(r.body.toString())).toEqual({ ok: true, n: 42, s: 'hé' });
  });
  it('all 256 byte values from a Uint8Array and an ArrayBuffer', async () => {
    for (const p of ['/bytes/u8', '/bytes/ab']) {
      const r = await raw('GET', p);
      expect([...r.body]).toEqual([...Array(256).keys()]);
    }
  });
  it('streams keep split UTF-8 bytes intact', async () => {
    const r = await raw('GET', '/stream/basic');
    expect(r.body.toString()).toBe('chunk-1;café;chunk-3');
  });
  it('large bodies (string path and stream path) arrive whole', async () => {
    for (const p of ['/large?size=3000000', '/large/stream?size=1000000']) {
      const r = await raw('GET', p);
      expect(r.status).toBe(200);
      expect(r.body.length).toBe(Number(p.split('=')[1]));
      expect(r.aborted).toBe(false);
    }
  });
  it('echoes a POST body, and an empty POST body', async () => {
    const r = await raw('POST', '/echo/body', { 'content-type': 'application/octet-stream' }, Buffer.from([0, 1, 2, 255]));
    expect([...r.body]).toEqual([0, 1, 2, 255]);
    const e = await raw('POST', '/echo/sum', { 'content-length': '0' }, '');
    expect(e.status).toBe(200);
  });
  it('two Set-Cookie lines, late header, statuses', async () => {
    const c = await raw('GET', '/cookies');
    expect(c.headers['set-cookie']).toEqual(['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    expect((await raw('GET', '/headers/late')).headers['x-late']).toBe('yes');
    const s204 = await raw('GET', '/status/204');
    expect([s204.status, s204.headers['x-status'], s204.body.length]).toEqual([204, '204', 0]);
    const s201 = await raw('GET', '/status/201');
    expect([s201.status, s201.body.toString()]).toEqual([201, 'created']);
  });
  it('redirects keep their Location and empty body', async () => {
    const r = await raw('GET', '/redirect/302');
    expect([r.status, r.headers.location, r.body.length]).toEqual([302, '/text', 0]);
    const a = await raw('GET', '/redirect/absolute');
    expect(a.status).toBe(301);
    expect(a.headers.location).toBe(`${ngx.url}/text?from=redirect`);
  });
  it('HEAD gets headers without a body, and an endless stream is cancelled', async () => {
    const h = await raw('HEAD', '/');
    expect([h.status, h.body.length]).toEqual([200, 0]);
    const e = await raw('HEAD', '/stream/endless?key=h1');
    expect([e.status, e.body.length]).toEqual([200, 0]);
  });
  it('throws (sync, async, not a Response, CR/LF header) give a bare 500', async () => {
    for (const p of ['/throw/sync', '/throw/async', '/throw/not-response', '/crlf/plain', '/crlf/native', '/crlf/headers']) {
      const r = await raw('GET', p);
      expect([p, r.status, r.body.toString()]).toEqual([p, 500, 'Internal Server Error\n']);
      expect(r.headers['x-injected']).toBeUndefined();
    }
  });
  it('a stream failing before its first byte gives a bare 500; midway cuts the connection', async () => {
    const early = await raw('GET', '/stream/error-early');
    expect([early.status, early.body.toString()]).toEqual([500, 'Internal Server Error\n']);
    const mid = await raw('GET', '/stream/error-midway');
    expect(mid.status).toBe(200);
    expect(mid.aborted).toBe(true);
    expect(ngx.errorLog()).not.toContain('header already sent');
  });
  it('authenticate/authorize in js_content', async () => {
    const no = await raw('GET', '/auth/accept');
    expect([no.status, no.headers['www-authenticate']]).toEqual([401, 'Bearer realm="tsgi"']);
    const yes = await raw('GET', '/auth/accept', { authorization: 'Bearer good' });
    expect(JSON.parse(yes.body.toString())).toEqual({ path: '/auth/accept', user: 'alice' });
    const f = await raw('GET', '/authz/false');
    expect([f.status, f.body.toString()]).toEqual([403, 'Forbidden\n']);
    const t = await raw('GET', '/authz/response');
    expect([t.status, t.headers['x-authz']]).toEqual([418, 'teapot']);
    for (const p of ['/auth/invalid', '/auth/throw', '/auth/throw-async']) {
      expect((await raw('GET', p)).status).toBe(500);
    }
  });
  it('new Request(request, init) and clone() from the bridge-made request', async () => {
    const r = await raw('GET', '/lg/copy?q=1', { 'x-h': 'hv' });
    expect(JSON.parse(r.body.toString())).toEqual({ url: `${ngx.url}/lg/copy?q=1`, method: 'PUT', h: 'hv', body: 'b' });
  });
  it('ctx in njs', async () => {
    const r = await raw('GET', '/ctx');
    const j = JSON.parse(r.body.toString());
    expect(j.server).toBe('nginx');
    expect(j.ip).toBe('127.0.0.1');
  });
  it('the next request is fine after failures', async () => {
    expect((await raw('GET', '/')).status).toBe(200);
  });
});

describe('bridge auth() behind auth_request', () => {
  it('allows and passes the user on to fetch()', async () => {
    const r = await raw('GET', '/guarded/ctx', { 'x-user': 'carol' });
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toMatchObject({ server: 'nginx', user: 'carol' });
    const anon = await raw('GET', '/guarded/ctx');
    expect(JSON.parse(anon.body.toString()).user).toBe(null);
  });
  it("core accessReply's mapping: 401 keeps WWW-Authenticate; 403 stays; other refusals become 403; a 500 stays 500", async () => {
    const u = await raw('GET', '/guarded/ctx', { 'x-deny': '401' });
    expect([u.status, u.headers['www-authenticate']]).toEqual([401, 'Basic realm="t"']);
    expect((await raw('GET', '/guarded/ctx', { 'x-deny': '403' })).status).toBe(403);
    expect((await raw('GET', '/guarded/ctx', { 'x-deny': '418' })).status).toBe(403);
    expect((await raw('GET', '/guarded/ctx', { 'x-deny': '500' })).status).toBe(500);
  });
  it("authenticate sees the client's method and URL", async () => {
    expect((await raw('DELETE', '/guarded/ctx')).status).toBe(403);
    expect((await raw('GET', '/guarded/deny-by-path')).status).toBe(403);
    expect((await raw('POST', '/guarded/ctx', {}, 'x')).status).toBe(200);
  });
  it('a throwing authenticate gives 500', async () => {
    expect((await raw('GET', '/guarded/ctx', { 'x-deny': 'throw' })).status).toBe(500);
    expect((await raw('GET', '/guarded/ctx', { 'x-user': 'dave' })).status).toBe(200);
  });
});

describe('log hook via js_set in the log phase, waitUntil', () => {
  it('log receives method, url, status, bytes, user', async () => {
    const r = await raw('GET', '/lg/one?x=1', { 'x-user': 'bob', 'x-h': 'v' });
    expect(r.body.toString()).toBe('logged GET');
    await waitFor(() => ngx.errorLog().includes('/lg/one?x=1"'));
    const line = ngx.errorLog().split('\n').find((l) => l.includes('TSGI-LOG') && l.includes('/lg/one?x=1"'))!;
    const entry = JSON.parse(line.slice(line.indexOf('TSGI-LOG ') + 9, line.lastIndexOf('}') + 1));
    expect(entry).toMatchObject({ method: 'GET', url: `${ngx.url}/lg/one?x=1`, status: 200, bytes: 10, user: 'bob' });
    expect(typeof entry.durationMs).toBe('number');
  });
  it('waitUntil work finishes after the response; a rejection is logged, not sent', async () => {
    const r = await raw('GET', '/lg/wait?w=1');
    expect(r.body.toString()).toBe('waiting');
    await waitFor(() => ngx.errorLog().includes('TSGI-WAIT done ?w=1'));
    expect(ngx.errorLog()).toContain('waitUntil promise rejected');
  });
});

async function waitFor(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 200 && !cond(); i++) await new Promise((r) => setTimeout(r, 25));
  expect(cond()).toBe(true);
}
