// The worker's writer and the request line through `tsgi apache run` (one worker,
// max-inflight 2): the shared wire rules of @tsgi/core applied on Apache.
import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContext, type CaseContext } from '@tsgi/conformance';
import { childrenOf, cmdline } from '@tsgi/conformance/testing';
import { fixture, startApache, type RunningApache } from './helpers.js';

let server: RunningApache;
let t: CaseContext;

beforeAll(async () => {
  server = await startApache(fixture('wire.ts'), ['--processes', '1', '--max-inflight', '2']);
  t = makeContext(server.url, { server: 'apache' });
});

afterAll(async () => {
  await server?.stop();
});

const get = (path: string, extra = '') => `GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${extra}\r\n`;
const state = async (key: string) => (await t.fetch(`/sse/state?key=${key}`)).text();

describe('streams: the first-chunk wait and cancellation before the first chunk', () => {
  it('a stream that has sent nothing gets its head after the first-chunk wait (decision 4)', async () => {
    const key = t.key('head');
    const c = await t.connect();
    try {
      await c.write(get(`/sse/silent?key=${key}`));
      await c.waitForData(10_000);
      expect(c.received()).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
      expect(c.received()).toMatch(/content-type: text\/event-stream/i);
      // The head came on its own: the stream still holds its only chunk back.
      expect(await state(key)).toBe('waiting');
      await t.fetch(`/sse/release?key=${key}`);
      const r = await c.readResponse();
      expect(r.body.toString()).toBe('data: released\n\n');
    } finally {
      c.close();
    }
  });

  it('max-inflight 2: two SSE requests abandoned before their first chunk are cancelled and free their slots', async () => {
    const keys = [t.key('sse'), t.key('sse')];
    const conns = await Promise.all(keys.map(() => t.connect()));
    for (const [i, c] of conns.entries()) {
      await c.write(get(`/sse/silent?key=${keys[i]}`));
      // The head (decision 4) says the handler has returned its stream.
      await c.waitForData(10_000);
      expect(c.received()).toMatch(/^HTTP\/1\.1 200/);
    }
    // Both slots are taken: a third request is refused.
    expect((await t.fetch('/')).status).toBe(503);
    for (const c of conns) c.close();
    const after = await t.poll(() => t.fetch('/').then((r) => r.status), (st) => st === 200, 10_000);
    expect(after).toBe(200);
    // request.signal aborted, then the stream was cancelled.
    for (const key of keys) expect(await state(key)).toBe('aborted+cancelled');
  });
});

describe('Content-Length (decision 3)', () => {
  it.each([
    ['/cl/string', 'hello'],
    ['/cl/bytes', 'hello bytes'],
    ['/cl/fast', 'fast'],
    ['/cl/none', ''],
  ])('%s: a wrong handler Content-Length on a fixed body is corrected, never a 502', async (path, body) => {
    const c = await t.connect();
    try {
      // Two on one connection: a wrong count would spill into (or swallow) the second.
      await c.write(get(path) + get('/'));
      const r = await c.readResponse();
      expect(r.status).toBe(200);
      expect(r.all('content-length')).toEqual([String(Buffer.byteLength(body))]);
      expect(r.body.toString()).toBe(body);
      const next = await c.readResponse();
      expect(next.body.toString()).toBe('ok');
    } finally {
      c.close();
    }
  });

  it('a stream that delivers fewer bytes than its declared length never looks complete', async () => {
    const c = await t.connect();
    try {
      await c.write(get('/cl/stream-short'));
      await expect(c.readResponse()).rejects.toThrow(/closed before a complete response/);
      expect(c.received()).toMatch(/^HTTP\/1\.1 200/);
    } finally {
      c.close();
    }
  });
});

describe('response headers', () => {
  it('hop-by-hop headers from the handler are dropped by the worker; the connection stays reusable', async () => {
    const c = await t.connect();
    try {
      await c.write(get('/hop') + get('/'));
      const r = await c.readResponse();
      expect(r.body.toString()).toBe('hop');
      expect(r.get('x-kept')).toBe('yes');
      for (const h of ['keep-alive', 'upgrade', 'trailer', 'proxy-connection']) expect(r.get(h), h).toBeNull();
      expect(r.get('connection')).toBeNull();
      expect((await c.readResponse()).body.toString()).toBe('ok');
    } finally {
      c.close();
    }
  });

  it('U+00E9 in a header value goes on the wire as the single byte E9 (decision 5)', async () => {
    const c = await t.connect();
    try {
      await c.write(get('/latin1', 'Connection: close\r\n'));
      const raw = await c.readToEnd();
      const at = raw.indexOf('x-latin1: caf');
      expect(at).toBeGreaterThan(0);
      expect([...raw.subarray(at + 13, at + 15)]).toEqual([0xe9, 0x0d]);
    } finally {
      c.close();
    }
  });
});

describe('the request line (decisions 7 and 8)', () => {
  it('an absolute-form https:// target on plain HTTP gives the handler an http:// URL', async () => {
    const r = await t.exchange(`GET https://${t.host}/echo/url?x=1 HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString()).url).toBe(`http://${t.host}/echo/url?x=1`);
  });

  it('an absolute-form target names the authority, whatever the Host header says', async () => {
    const r = await t.exchange(`GET http://other.example:8080/echo/url HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString()).url).toBe('http://other.example:8080/echo/url');
  });

  it.each([
    ['userinfo in the target', `GET http://user@${'127.0.0.1'}/echo/url HTTP/1.1\r\nHost: 127.0.0.1\r\n`],
    ['two Host headers', 'GET /echo/url HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n'],
    ['a malformed Host', 'GET /echo/url HTTP/1.1\r\nHost: a.example/x\r\n'],
  ])('%s: 400 before the handler runs', async (_what, head) => {
    const r = await t.exchange(`${head}Connection: close\r\n\r\n`);
    expect(r.status).toBe(400);
  });

  it('a method with lower-case letters gets 400 and never reaches the handler', async () => {
    const r = await t.exchange(`get /method HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
    expect(r.status).toBe(400);
    expect(await (await t.fetch('/ran?method=get')).text()).toBe('no');
    // An upper-case extension method still does.
    const ok = await t.exchange(`PURGE /method HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
    expect(ok.body.toString()).toBe('PURGE');
  });
});

describe('the worker process', () => {
  it("a handler's stack trace names the handler's own source file and line (source maps)", async () => {
    expect((await t.fetch('/throw')).status).toBe(500);
    const line = readFileSync(fixture('wire.ts'), 'utf8').split('\n').findIndex((l) => l.includes("throw new Error('wire fixture")) + 1;
    await t.poll(async () => server.errors(), (e) => e.includes('wire fixture throws here'));
    const stack = server.errors().slice(server.errors().indexOf('wire fixture throws here'));
    expect(stack).toMatch(new RegExp(`fixtures/wire\\.ts:${line}:\\d+`));
  });

  it('no esbuild process is left once the server runs', () => {
    const all: number[] = [];
    const walk = (pid: number) => {
      for (const c of childrenOf(pid)) {
        all.push(c);
        walk(c);
      }
    };
    walk(server.proc.pid!);
    expect(all.length).toBeGreaterThan(2);
    expect(all.map(cmdline).filter((c) => /esbuild/.test(c))).toEqual([]);
  });
});
