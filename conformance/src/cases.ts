/**
 * The conformance cases: each one an HTTP exchange with a server that serves
 * fixture/handler.ts at the root of its base URL (one process, request body
 * limit CONFORMANCE_MAX_BODY).
 *
 * Opt-outs: a case that cannot apply to a server says so here, keyed by
 * 'server' or 'server:mode', with the reason. Nothing is ever skipped
 * silently; node and apache need no opt-out.
 */
import assert from 'node:assert/strict';
import type { CaseContext, RawResponse } from './client.js';

/** The request body limit the server under test must be configured with. */
export const CONFORMANCE_MAX_BODY = 8 * 1024 * 1024;

/** Must never appear in a response body (the fixture throws with it). */
export const SECRET = 'tsgi-secret-7f3a9c';

export interface ConformanceCase {
  id: string;
  title: string;
  /** 'server' or 'server:mode' -> why this case cannot apply there. */
  optOut?: Record<string, string>;
  run(t: CaseContext): Promise<void>;
}

// ---------------------------------------------------------------- helpers

/** Adler-32, as the fixture computes it. */
export function adler32(bytes: Uint8Array): number {
  let a = 1;
  let b = 0;
  for (let i = 0; i < bytes.length; ) {
    const end = Math.min(i + 3800, bytes.length);
    for (; i < end; i++) {
      a += bytes[i]!;
      b += a;
    }
    a %= 65521;
    b %= 65521;
  }
  return b * 65536 + a;
}

function pattern(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let i = 0; i < size; i++) out[i] = (i * 31 + 7) & 255;
  return out;
}

/** Deterministic pseudo-random bytes (xorshift32). */
function noise(size: number, seed = 0x9e3779b9): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(size);
  let x = seed | 0;
  for (let i = 0; i < size; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 255;
  }
  return out;
}

function allBytes(): Uint8Array {
  const out = new Uint8Array(256);
  for (let i = 0; i < 256; i++) out[i] = i;
  return out;
}

const enc = new TextEncoder();

async function bytesOf(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

async function expectText(t: CaseContext, path: string, status: number, body: string, init?: RequestInit) {
  const res = await t.fetch(path, init);
  const got = await res.text();
  assert.equal(res.status, status, `${init?.method ?? 'GET'} ${path}: status (body ${JSON.stringify(got.slice(0, 200))})`);
  assert.equal(got, body, `${init?.method ?? 'GET'} ${path}: body`);
  return res;
}

async function expectJSON<T = Record<string, unknown>>(t: CaseContext, path: string, init?: RequestInit): Promise<T> {
  const res = await t.fetch(path, init);
  const body = await res.text();
  assert.equal(res.status, 200, `${path}: status (body ${JSON.stringify(body.slice(0, 200))})`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, `${path}: content-type`);
  return JSON.parse(body) as T;
}

/** The server still answers a plain request. */
async function stillFine(t: CaseContext): Promise<void> {
  await expectText(t, '/text', 200, 'Hello, tsgi!');
}

/** A bare 500: no message, no stack, nothing from the error. */
async function expectBare500(t: CaseContext, path: string, init?: RequestInit): Promise<void> {
  const res = await t.fetch(path, init);
  const body = await res.text();
  assert.equal(res.status, 500, `${path}: status (body ${JSON.stringify(body.slice(0, 200))})`);
  assert.ok(!body.includes(SECRET), `${path}: the 500 body leaks the error message: ${JSON.stringify(body)}`);
  assert.ok(!/handler\.[jt]s|\bat\s+\S+\s+\(/.test(body), `${path}: the 500 body leaks a stack: ${JSON.stringify(body)}`);
  for (const [k, v] of res.headers) {
    assert.ok(!v.includes(SECRET), `${path}: header ${k} leaks the error message`);
  }
}

function bytesEqual(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: byte ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

function get(t: CaseContext, path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${extra}\r\n`;
}

function noInjectedHeader(r: RawResponse, what: string): void {
  assert.ok(!/\r\nx-injected\s*:/i.test('\r\n' + r.head), `${what}: X-Injected reached the wire:\n${r.head}`);
  assert.ok(!r.headers.some(([k]) => k.toLowerCase() === 'x-injected'), `${what}: X-Injected header present`);
}

/** Sends a request head and up to `bodyBytes` of body, stopping once the server answers. */
async function sendOverLimit(t: CaseContext, head: string, chunked: boolean, bodyBytes: number): Promise<RawResponse> {
  const c = await t.connect();
  try {
    await c.write(head);
    const piece = new Uint8Array(64 * 1024).fill(0x61);
    let sent = 0;
    while (sent < bodyBytes && !c.pending && !c.ended) {
      const n = Math.min(piece.length, bodyBytes - sent);
      const data = piece.subarray(0, n);
      if (chunked) await c.write(Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), data, Buffer.from('\r\n')]));
      else await c.write(data);
      sent += n;
    }
    if (chunked && !c.pending && !c.ended) await c.write('0\r\n\r\n');
    return await c.readResponse({ timeoutMs: 30_000 });
  } finally {
    c.close();
  }
}

// Cases that watch the fixture's state through a later request cannot run where
// every request gets a fresh JavaScript VM with no shared memory.
const NJS_NO_SHARED_STATE =
  'njs 0.7.9 builds a fresh VM per request and has no shared dictionary (js_shared_dict_zone came in 0.8.0), ' +
  'so what one request records cannot be read by a later one';

// ---------------------------------------------------------------- the table

export const cases: ConformanceCase[] = [
  // ---- response body types ---------------------------------------------
  {
    id: 'body.string',
    title: 'string body arrives exact, with text/plain and a Content-Length',
    async run(t) {
      const res = await expectText(t, '/text', 200, 'Hello, tsgi!');
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    },
  },
  {
    id: 'body.fast-string',
    title: "the fast Response (@tsgi/core) with a string body and plain-object headers",
    async run(t) {
      const res = await expectText(t, '/fast/text', 200, 'Hello, fast!');
      assert.equal(res.headers.get('x-fast'), '1');
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    },
  },
  {
    id: 'body.uint8array',
    title: 'Uint8Array body holding all 256 byte values arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/bytes/u8');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/octet-stream');
      bytesEqual(await bytesOf(res), allBytes(), '/bytes/u8');
    },
  },
  {
    id: 'body.fast-uint8array',
    title: 'the fast Response with a Uint8Array body arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/fast/bytes');
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), allBytes(), '/fast/bytes');
    },
  },
  {
    id: 'body.arraybuffer',
    title: 'ArrayBuffer body arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/bytes/ab');
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), allBytes(), '/bytes/ab');
    },
  },
  {
    id: 'body.readablestream',
    title: 'ReadableStream body arrives whole, with a UTF-8 character split across chunks intact',
    async run(t) {
      await expectText(t, '/stream/basic', 200, 'chunk-1;caf\u00e9;chunk-3');
    },
  },
  {
    id: 'body.null',
    title: 'null body: 200 with an empty body and the handler headers',
    async run(t) {
      const r = await t.exchange(get(t, '/null', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.equal(r.get('x-body'), 'null');
      assert.equal(r.body.length, 0);
      const cl = r.get('content-length');
      assert.ok(cl === null || cl === '0', `content-length ${cl}`);
    },
  },
  {
    id: 'body.empty-string',
    title: "empty string body: 200, Content-Length 0 (or empty chunked)",
    async run(t) {
      const r = await t.exchange(get(t, '/empty', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.equal(r.get('x-body'), 'empty');
      assert.equal(r.body.length, 0);
    },
  },
  {
    id: 'body.utf8',
    title: 'UTF-8 text (2-, 3- and 4-byte characters) is byte-exact and Content-Length counts bytes',
    async run(t) {
      const want = 'h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \ud83c\udf89';
      const r = await t.exchange(get(t, '/utf8', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      bytesEqual(r.body, enc.encode(want), '/utf8');
      const cl = r.get('content-length');
      if (cl !== null) assert.equal(Number(cl), enc.encode(want).length);
    },
  },
  {
    id: 'body.json',
    title: 'Response.json gives application/json and the exact JSON',
    async run(t) {
      const body = await expectJSON(t, '/json');
      assert.deepEqual(body, { ok: true, n: 42, s: 'h\u00e9' });
    },
  },
  {
    id: 'body.large-response',
    title: 'a 3 MiB Uint8Array response arrives complete and exact',
    async run(t) {
      const size = 3 * 1024 * 1024 + 17;
      const res = await t.fetch(`/large?size=${size}`);
      assert.equal(res.status, 200);
      const got = await bytesOf(res);
      assert.equal(got.length, size);
      assert.equal(adler32(got), adler32(pattern(size)));
    },
  },
  {
    id: 'body.large-stream',
    title: 'a 3 MiB streamed response (64 KiB chunks) arrives complete and exact',
    async run(t) {
      const size = 3 * 1024 * 1024 + 5;
      const res = await t.fetch(`/large/stream?size=${size}`);
      assert.equal(res.status, 200);
      const got = await bytesOf(res);
      assert.equal(got.length, size);
      assert.equal(adler32(got), adler32(pattern(size)));
    },
  },

  // ---- request URL -----------------------------------------------------
  {
    id: 'url.absolute',
    title: 'request.url is absolute with the scheme, host, path and query as sent',
    async run(t) {
      const body = await expectJSON<{ url: string; host: string; pathname: string; search: string }>(
        t,
        '/echo/url?x=1&y=two',
      );
      assert.equal(body.url, `${t.baseURL}/echo/url?x=1&y=two`);
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?x=1&y=two');
      assert.equal(body.host, t.host);
    },
  },
  {
    id: 'url.repeated-query',
    title: 'repeated query keys all reach searchParams.getAll, percent-decoded',
    async run(t) {
      const body = await expectJSON<{ a: string[]; b: string }>(t, '/echo/url?a=1&a=2&b=x%20y&a=%C3%A9%26');
      assert.deepEqual(body.a, ['1', '2', '\u00e9&']);
      assert.equal(body.b, 'x y');
    },
  },
  {
    id: 'url.percent-path',
    title: 'a percent-encoded path reaches the handler still encoded',
    async run(t) {
      const body = await expectJSON<{ pathname: string; url: string }>(t, '/echo/url/caf%C3%A9/a%20b');
      assert.equal(body.pathname, '/echo/url/caf%C3%A9/a%20b');
    },
  },
  {
    id: 'url.encoded-slash',
    title: 'an encoded slash (%2F) is neither decoded nor refused',
    async run(t) {
      const body = await expectJSON<{ pathname: string }>(t, '/echo/url/a%2Fb');
      assert.equal(body.pathname, '/echo/url/a%2Fb');
    },
  },
  {
    id: 'url.dot-segments',
    title: 'a dot-segment path on the wire is seen normalized (/x/../echo/url)',
    async run(t) {
      const r = await t.exchange(get(t, '/x/../echo/url?q=1', 'Connection: close\r\n'));
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { pathname: string; search: string };
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?q=1');
    },
  },

  {
    id: 'url.absolute-form',
    title: 'an absolute-form request target (GET http://host/path) is understood',
    async run(t) {
      const r = await t.exchange(
        `GET http://${t.host}/echo/url?form=absolute HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { pathname: string; search: string; url: string };
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?form=absolute');
      assert.equal(body.url, `${t.baseURL}/echo/url?form=absolute`);
    },
  },

  // ---- request headers and bodies --------------------------------------
  {
    id: 'req.headers',
    title: 'request headers: case-insensitive, repeated ones joined with ", ", absent ones null',
    async run(t) {
      const r = await t.exchange(
        get(t, '/echo/headers', 'X-Custom: hello\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n'),
      );
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body.toString()), {
        custom: 'hello',
        customUpper: 'hello',
        hasCustom: true,
        multi: 'one, two',
        absent: null,
        isHeaders: true,
        isRequest: true,
      });
    },
  },
  {
    id: 'req.json',
    title: 'a JSON request body is parsed by request.json()',
    async run(t) {
      const payload = { name: 'tsgi', list: [1, 2, 3], nested: { ok: true }, text: 'h\u00e9 \ud83c\udf89' };
      const body = await expectJSON(t, '/echo/json', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });
      assert.deepEqual(body, { received: payload, type: 'application/json' });
    },
  },
  {
    id: 'req.formdata',
    title: 'request.formData() reads a multipart body (text, UTF-8 and a binary file) and an urlencoded one',
    async run(t) {
      const form = new FormData();
      form.append('a', '1');
      form.append('name', 'h\u00e9 \ud83c\udf89');
      const bin = new Uint8Array(256 * 3);
      for (let i = 0; i < bin.length; i++) bin[i] = i & 255;
      form.append('upload', new Blob([bin], { type: 'application/octet-stream' }), 'bytes.bin');
      form.append('a', '2');
      const body = await expectJSON(t, '/echo/form', { method: 'POST', body: form });
      assert.deepEqual(body, {
        entries: [
          ['a', '1'],
          ['name', 'h\u00e9 \ud83c\udf89'],
          ['upload', { file: 'bytes.bin', type: 'application/octet-stream', size: bin.length }],
          ['a', '2'],
        ],
        sums: [{ length: bin.length, adler32: adler32(bin), first: 0, last: 255 }],
        isFormData: true,
      });
      const url = await expectJSON(t, '/echo/form', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'x=1&y=%C3%A9+z&x=2',
      });
      assert.deepEqual(url, { entries: [['x', '1'], ['y', '\u00e9 z'], ['x', '2']], sums: [], isFormData: true });
      // Anything else rejects with a TypeError: a bare 500.
      await expectBare500(t, '/echo/form', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x=1' });
    },
  },
  {
    id: 'body.formdata',
    title: 'a FormData response body goes out as multipart/form-data the client can parse',
    async run(t) {
      const res = await t.fetch('/form/response');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^multipart\/form-data; ?boundary=/);
      const form = await res.formData();
      assert.equal(form.get('greeting'), 'h\u00e9llo');
      const file = form.get('data') as File;
      assert.equal(file.name, 'all.bin');
      assert.deepEqual(new Uint8Array(await file.arrayBuffer()), allBytes());
    },
  },
  {
    id: 'req.binary',
    title: 'a binary request body (all 256 byte values, repeated) round-trips byte-exact',
    async run(t) {
      const data = new Uint8Array(256 * 40);
      for (let i = 0; i < data.length; i++) data[i] = i & 255;
      const res = await t.fetch('/echo/body', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: data,
      });
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), data, 'echo');
    },
  },
  {
    id: 'req.chunked',
    title: 'a chunked upload without Content-Length arrives whole',
    async run(t) {
      const parts = [enc.encode('part-one;'), noise(100_000, 7), enc.encode(';part-three')];
      const all = Buffer.concat(parts);
      let i = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(c) {
          if (i < parts.length) c.enqueue(parts[i++]);
          else c.close();
        },
      });
      const body = await expectJSON<{ length: number; adler32: number }>(t, '/echo/sum', {
        method: 'POST',
        body: stream,
        duplex: 'half',
      } as RequestInit);
      assert.equal(body.length, all.length);
      assert.equal(body.adler32, adler32(all));
    },
  },
  {
    id: 'req.chunked-raw',
    title: 'a raw Transfer-Encoding: chunked upload (several chunks) is de-chunked',
    async run(t) {
      const r = await t.exchange(
        `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
          '5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n',
      );
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body.toString()), { text: 'hello world!', length: 12, method: 'POST' });
    },
  },
  {
    id: 'req.empty',
    title: 'an empty POST body reads as "" (Content-Length: 0)',
    async run(t) {
      const body = await expectJSON(t, '/echo/text', { method: 'POST', body: '' });
      assert.deepEqual(body, { text: '', length: 0, method: 'POST' });
      const sum = await expectJSON(t, '/echo/sum', { method: 'POST' });
      assert.equal(sum.length, 0);
    },
  },
  {
    id: 'req.large',
    title: 'a 3 MiB request body arrives complete (checksum)',
    async run(t) {
      const data = noise(3 * 1024 * 1024 + 3);
      const body = await expectJSON<{ length: number; adler32: number; first: number; last: number }>(t, '/echo/sum', {
        method: 'POST',
        body: data,
      });
      assert.deepEqual(body, {
        length: data.length,
        adler32: adler32(data),
        first: data[0],
        last: data[data.length - 1],
      });
    },
  },
  {
    id: 'req.body-once',
    title: 'a request body reads once: a second read rejects with TypeError',
    async run(t) {
      const body = await expectJSON(t, '/echo/twice', { method: 'POST', body: '{"a":1}' });
      assert.deepEqual(body, { first: '{"a":1}', second: 'TypeError', bodyUsed: true });
    },
  },
  {
    id: 'req.clone',
    title: 'request.clone() and new Request(request) work on the incoming request',
    async run(t) {
      const body = await expectJSON(t, '/echo/clone', { method: 'POST', body: 'clone me' });
      assert.deepEqual(body, {
        clone: 'clone me',
        rebuilt: 'clone me',
        sameURL: true,
        method: 'POST',
        cloneIsRequest: true,
        originalUsed: true,
      });
    },
  },
  {
    id: 'req.expect-continue',
    title: 'Expect: 100-continue gets a 100 before the body is sent, then the final response',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n`,
        );
        await c.waitForData();
        assert.match(c.received(), /^HTTP\/1\.1 100/, 'expected 100 Continue before sending the body');
        await c.write('continue');
        const r = await c.readResponse();
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.body.toString()).text, 'continue');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'req.truncated-body-rejects',
    title: 'a body cut short by a client disconnect makes the body read reject, never resolve truncated',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('trunc');
      const c = await t.connect();
      await c.write(`POST /echo/record?key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 100000\r\n\r\n`);
      await c.write(Buffer.alloc(1000, 0x63));
      // Give the server the chance to start the handler; servers that buffer the
      // whole body first never start it, which is fine too.
      const started = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'unknown',
        3000,
      );
      c.close();
      if (started === 'unknown') return;
      const outcome = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'reading',
        12_000,
      );
      assert.equal(outcome, 'rejected');
      await stillFine(t);
    },
  },
  {
    id: 'req.methods',
    title: 'PUT, PATCH, DELETE and OPTIONS reach the handler with their method',
    async run(t) {
      for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
        const res = await expectText(t, '/method', 200, method, { method });
        assert.equal(res.headers.get('x-method'), method);
      }
    },
  },

  // ---- response headers ------------------------------------------------
  {
    id: 'hdr.set-cookie',
    title: 'two Set-Cookie headers (Headers.append) stay two separate header lines',
    async run(t) {
      const r = await t.exchange(get(t, '/cookies', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.deepEqual(r.all('set-cookie'), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    },
  },
  {
    id: 'hdr.set-cookie-fast',
    title: 'two Set-Cookie headers from the fast Response array init stay separate',
    async run(t) {
      const res = await t.fetch('/cookies?fast=1');
      assert.equal(await res.text(), 'cookies');
      assert.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    },
  },
  {
    id: 'hdr.late-mutation',
    title: 'headers set on response.headers after construction reach the wire',
    async run(t) {
      const res = await expectText(t, '/headers/late', 200, 'late');
      assert.equal(res.headers.get('x-late'), 'yes');
    },
  },

  // ---- HEAD ----------------------------------------------------------
  {
    id: 'head.no-body',
    title: 'HEAD gives the GET status and headers and no body bytes (next request on the connection is clean)',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(`HEAD /text HTTP/1.1\r\nHost: ${t.host}\r\n\r\n` + get(t, '/echo/url?after=head'));
        const head = await c.readResponse({ method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.match(head.get('content-type') ?? '', /^text\/plain/);
        const cl = head.get('content-length');
        if (cl !== null) assert.equal(cl, '12');
        const next = await c.readResponse();
        assert.equal(next.status, 200, 'the response after HEAD (body bytes after a HEAD would corrupt it)');
        assert.equal(JSON.parse(next.body.toString()).search, '?after=head');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'head.endless-stream',
    title: 'HEAD on an endless stream answers and the connection stays usable',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(`HEAD /stream/endless HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
        const head = await c.readResponse({ method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.match(head.get('content-type') ?? '', /text\/event-stream/);
        // If the server pumped the endless body, this response would never come.
        await c.write(get(t, '/text'));
        const next = await c.readResponse({ timeoutMs: 10_000 });
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },

  // ---- statuses and redirects ------------------------------------------
  {
    id: 'status.204',
    title: '204 goes out with no body, and the next pipelined response is intact',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/status/204') + get(t, '/text'));
        const r = await c.readResponse();
        assert.equal(r.status, 204);
        assert.equal(r.get('x-status'), '204');
        assert.equal(r.get('transfer-encoding'), null);
        const next = await c.readResponse();
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'status.304',
    title: '304 goes out with no body and keeps its ETag; the next pipelined response is intact',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/status/304') + get(t, '/text'));
        const r = await c.readResponse();
        assert.equal(r.status, 304);
        assert.equal(r.get('etag'), '"v1"');
        const next = await c.readResponse();
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'status.201',
    title: 'a non-200 status with a body and a Location header',
    async run(t) {
      const res = await expectText(t, '/status/201', 201, 'created');
      assert.equal(res.headers.get('location'), '/text');
    },
  },
  {
    id: 'redirect.302',
    title: '302 with a relative Location is passed through unchanged',
    async run(t) {
      const res = await t.fetch('/redirect/302');
      await res.arrayBuffer();
      assert.equal(res.status, 302);
      assert.equal(res.headers.get('location'), '/text');
    },
  },
  {
    id: 'redirect.follow',
    title: 'Response.redirect (301, absolute) is followed to the target',
    async run(t) {
      const res = await t.fetch('/redirect/absolute', { redirect: 'follow' });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'Hello, tsgi!');
      assert.equal(res.url, `${t.baseURL}/text?from=redirect`);
    },
  },
  {
    id: 'redirect.303-post',
    title: 'a 303 after a POST is followed with a GET',
    async run(t) {
      const res = await t.fetch('/redirect/303', { method: 'POST', body: 'x', redirect: 'follow' });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'GET');
    },
  },

  // ---- streaming -----------------------------------------------------
  {
    id: 'stream.incremental',
    title: 'the first chunk of a stream arrives while the handler still holds the stream open',
    optOut: { 'nginx:embedded': `${NJS_NO_SHARED_STATE} (the stream is released by a second request)` },
    async run(t) {
      const key = t.key('hold');
      const res = await t.fetch(`/stream/hold?key=${key}`);
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let got = '';
      while (!got.includes('\n')) {
        const { value, done } = await reader.read();
        assert.ok(!done, `the stream ended before its first chunk was complete (got ${JSON.stringify(got)})`);
        got += dec.decode(value, { stream: true });
      }
      // The server has not finished the stream: it waits for this release.
      assert.equal(got, 'first\n', 'only the first chunk before the release');
      await expectText(t, `/stream/release?key=${key}`, 200, 'released');
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        got += dec.decode(value, { stream: true });
      }
      assert.equal(got, 'first\nreleased\n');
    },
  },

  {
    id: 'stream.cancel-on-disconnect',
    title: "a client that leaves mid-stream makes the server cancel the handler's stream",
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('cancel');
      const c = await t.connect();
      await c.write(get(t, `/stream/endless?key=${key}`));
      await c.waitForData();
      assert.match(c.received(), /^HTTP\/1\.1 200/);
      c.close();
      const outcome = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'streaming',
        12_000,
      );
      assert.equal(outcome, 'cancelled');
      await stillFine(t);
    },
  },
  {
    id: 'stream.error-before-first-byte',
    title: 'a stream that errors before its first chunk gives a bare 500',
    async run(t) {
      await expectBare500(t, '/stream/error-early');
      await stillFine(t);
    },
  },
  {
    id: 'stream.error-midway',
    title: 'a stream that errors after some chunks never looks like a complete 200 (cut connection, or a bare 500 if nothing was sent)',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/stream/error-midway'));
        let complete: RawResponse | undefined;
        try {
          complete = await c.readResponse();
        } catch {
          // The connection closed before the body was complete: the client can tell.
        }
        if (complete) {
          // Only a server that held the body back may still answer, and then with a bare 500.
          assert.equal(
            complete.status,
            500,
            `a failed stream must not look like a complete body (got ${complete.status} ${JSON.stringify(complete.body.toString())})`,
          );
          assert.ok(!complete.body.toString().includes(SECRET), 'the stream error leaked');
        } else {
          assert.match(c.received(), /^HTTP\/1\.1 200/);
          assert.ok(!c.received().includes(SECRET), 'the stream error leaked');
        }
      } finally {
        c.close();
      }
      await stillFine(t);
    },
  },

  // ---- errors --------------------------------------------------------
  {
    id: 'error.sync-throw',
    title: 'a synchronous throw in fetch gives a bare 500 with no message; the next request is fine',
    async run(t) {
      await expectBare500(t, '/throw/sync');
      await stillFine(t);
    },
  },
  {
    id: 'error.async-throw',
    title: 'a rejected fetch promise gives a bare 500 with no message; the next request is fine',
    async run(t) {
      await expectBare500(t, '/throw/async');
      await stillFine(t);
    },
  },
  {
    id: 'error.not-a-response',
    title: 'fetch resolving to something other than a Response gives a bare 500',
    async run(t) {
      await expectBare500(t, '/throw/not-response');
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-fast',
    title: 'CR/LF in a fast-Response plain-object header value never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/plain', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/plain');
      assert.equal(r.status, 500);
      assert.ok(!r.body.toString().includes(SECRET));
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-native',
    title: 'CR/LF in a standard Response init header never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/native', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/native');
      assert.equal(r.status, 500);
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-headers',
    title: 'CR/LF through new Headers().set never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/headers', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/headers');
      assert.equal(r.status, 500);
      await stillFine(t);
    },
  },

  // ---- phase hooks: authenticate ---------------------------------------
  {
    id: 'hook.authn-accept',
    title: 'authenticate returning { user } continues, and fetch sees ctx.user',
    async run(t) {
      const body = await expectJSON(t, '/auth/accept', { headers: { authorization: 'Bearer good' } });
      assert.deepEqual(body, { path: '/auth/accept', user: 'alice' });
    },
  },
  {
    id: 'hook.authn-reject',
    title: 'authenticate returning a Response rejects with it (401 + WWW-Authenticate); fetch does not run',
    async run(t) {
      const res = await expectText(t, '/auth/accept', 401, 'who are you?\n');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tsgi"');
      const bad = await t.fetch('/auth/accept', { headers: { authorization: 'Bearer bad' } });
      await bad.text();
      assert.equal(bad.status, 401);
    },
  },
  {
    id: 'hook.authn-no-opinion',
    title: 'authenticate returning undefined or null continues with ctx.user undefined',
    async run(t) {
      assert.deepEqual(await expectJSON(t, '/auth/none'), { path: '/auth/none', user: '(undefined)' });
      assert.deepEqual(await expectJSON(t, '/auth/null'), { path: '/auth/null', user: '(undefined)' });
    },
  },
  {
    id: 'hook.authn-throw',
    title: 'authenticate throwing (sync or async) gives a bare 500; the next request is fine',
    async run(t) {
      await expectBare500(t, '/auth/throw');
      await expectBare500(t, '/auth/throw-async');
      await stillFine(t);
    },
  },
  // ---- phase hooks: authorize ------------------------------------------
  {
    id: 'hook.authz-allow',
    title: 'authorize returning true or undefined lets the request through',
    async run(t) {
      assert.deepEqual(await expectJSON(t, '/authz/true'), { path: '/authz/true', user: '(undefined)' });
      assert.deepEqual(await expectJSON(t, '/authz/undefined'), { path: '/authz/undefined', user: '(undefined)' });
    },
  },
  {
    id: 'hook.authz-false',
    title: 'authorize returning false (sync or async) gives 403',
    async run(t) {
      for (const path of ['/authz/false', '/authz/async-false']) {
        const res = await t.fetch(path);
        const body = await res.text();
        assert.equal(res.status, 403, path);
        assert.ok(!body.includes('"path"'), `${path}: fetch must not have run`);
      }
    },
  },
  {
    id: 'hook.authz-response',
    title: 'authorize returning a Response rejects with it (418 body and headers, a 302)',
    async run(t) {
      const res = await expectText(t, '/authz/response', 418, 'teapot\n');
      assert.equal(res.headers.get('x-authz'), 'teapot');
      const redirect = await t.fetch('/authz/redirect');
      await redirect.arrayBuffer();
      assert.equal(redirect.status, 302);
      assert.equal(redirect.headers.get('location'), '/text');
    },
  },
  {
    id: 'hook.authz-throw',
    title: 'authorize throwing gives a bare 500; the next request is fine',
    async run(t) {
      await expectBare500(t, '/authz/throw');
      await stillFine(t);
    },
  },
  {
    id: 'hook.authz-sees-user',
    title: 'authorize runs after authenticate and sees ctx.user',
    async run(t) {
      const body = await expectJSON(t, '/auth/authz-user', { headers: { authorization: 'Bearer good' } });
      assert.deepEqual(body, { path: '/auth/authz-user', user: 'alice' });
    },
  },
  {
    id: 'hook.invalid-returns',
    title: 'authenticate or authorize returning a value outside the contract gives a bare 500',
    async run(t) {
      await expectBare500(t, '/auth/invalid');
      await expectBare500(t, '/authz/invalid');
      await stillFine(t);
    },
  },
  // ---- phase hooks: log ------------------------------------------------
  {
    id: 'hook.log-entry',
    title: 'log receives { method, url, status, bytes, durationMs, user } after the response',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const tag = t.key('log');
      await expectText(t, `/log/probe?logtag=${tag}`, 200, 'logged body');
      const res = await t.poll(
        () => t.fetch(`/log/last?tag=${tag}`).then(async (r) => ({ status: r.status, body: await r.text() })),
        (r) => r.status === 200,
      );
      assert.equal(res.status, 200, 'no log entry was recorded for the request');
      const entry = JSON.parse(res.body) as Record<string, unknown>;
      assert.equal(entry.method, 'GET');
      assert.equal(entry.url, `${t.baseURL}/log/probe?logtag=${tag}`);
      assert.equal(entry.status, 200);
      assert.equal(entry.bytes, 'logged body'.length);
      assert.equal(typeof entry.durationMs, 'number');
      assert.ok((entry.durationMs as number) >= 0);
      assert.equal(entry.user, '(undefined)');
    },
  },
  {
    id: 'hook.log-outcomes',
    title: 'log sees the rejecting status (401), the accepted user, a POST, a 500 from a throw, and 0 bytes for 204 and HEAD',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const last = async (tag: string) => {
        const r = await t.poll(
          () => t.fetch(`/log/last?tag=${tag}`).then(async (r) => ({ status: r.status, body: await r.text() })),
          (r) => r.status === 200,
        );
        assert.equal(r.status, 200, `no log entry for ${tag}`);
        return JSON.parse(r.body) as Record<string, unknown>;
      };
      const rejected = t.key('log');
      await (await t.fetch(`/auth/accept?logtag=${rejected}`)).text();
      const e1 = await last(rejected);
      assert.equal(e1.status, 401);
      assert.equal(e1.user, '(undefined)');
      assert.equal(e1.bytes, 'who are you?\n'.length);

      const accepted = t.key('log');
      await (await t.fetch(`/auth/accept?logtag=${accepted}`, { headers: { authorization: 'Bearer good' } })).text();
      const e2 = await last(accepted);
      assert.equal(e2.status, 200);
      assert.equal(e2.user, 'alice');

      const post = t.key('log');
      await (await t.fetch(`/echo/text?logtag=${post}`, { method: 'POST', body: 'abc' })).text();
      const e3 = await last(post);
      assert.equal(e3.method, 'POST');

      const failed = t.key('log');
      const f = await t.fetch(`/throw/sync?logtag=${failed}`);
      await f.arrayBuffer();
      assert.equal(f.status, 500);
      const e500 = await last(failed);
      assert.equal(e500.status, 500);

      const nobody = t.key('log');
      const n = await t.fetch(`/status/204?logtag=${nobody}`);
      await n.arrayBuffer();
      assert.equal(n.status, 204);
      const e204 = await last(nobody);
      assert.equal(e204.status, 204);
      assert.equal(e204.bytes, 0);

      const head = t.key('log');
      const h = await t.exchange(`HEAD /log/probe?logtag=${head} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`, {
        method: 'HEAD',
      });
      assert.equal(h.status, 200);
      const e4 = await last(head);
      assert.equal(e4.method, 'HEAD');
      assert.equal(e4.bytes, 0);
    },
  },
  {
    id: 'hook.log-throws',
    title: 'a log hook that throws changes nothing for the client; the next request is fine',
    async run(t) {
      const tag = t.key('log');
      const res = await expectText(t, `/log/throws?logtag=${tag}`, 200, 'logged body');
      assert.ok(![...res.headers.values()].some((v) => v.includes(SECRET)));
      await stillFine(t);
    },
  },

  // ---- ctx ---------------------------------------------------------------
  {
    id: 'ctx.fields',
    title: 'ctx: server, a loopback ip, a unique string id, user undefined, waitUntil, env',
    async run(t) {
      const a = await expectJSON<Record<string, unknown>>(t, '/ctx');
      const b = await expectJSON<Record<string, unknown>>(t, '/ctx');
      assert.equal(a.server, t.target.server);
      assert.ok(['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(a.ip as string), `ctx.ip is ${String(a.ip)}`);
      assert.equal(a.idType, 'string');
      assert.ok((a.id as string).length > 0);
      assert.notEqual(a.id, b.id, 'ctx.id must differ between requests');
      assert.equal(a.user, '(undefined)');
      assert.equal(a.waitUntilType, 'function');
      assert.equal(a.envIsObject, true);
    },
  },

  {
    id: 'ctx.init',
    title: 'init ran before the first request, with the server kind and env',
    async run(t) {
      const body = await expectJSON<{ count: number; server: string; envIsObject: boolean }>(t, '/init');
      // At least once: a process may host the same handler module under several listeners.
      assert.ok(body.count >= 1, `init ran ${body.count} times`);
      assert.equal(body.server, t.target.server);
      assert.equal(body.envIsObject, true);
    },
  },
  {
    id: 'ctx.ip-not-spoofable',
    title: 'ctx.ip ignores X-Forwarded-For and X-Real-IP sent by the client',
    async run(t) {
      const r = await t.exchange(
        get(t, '/ctx', 'X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.8\r\nForwarded: for=203.0.113.9\r\nConnection: close\r\n'),
      );
      assert.equal(r.status, 200);
      const ip = JSON.parse(r.body.toString()).ip as string;
      assert.ok(['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(ip), `ctx.ip is ${ip}`);
    },
  },

  // ---- waitUntil -----------------------------------------------------------
  {
    id: 'wait.after-response',
    title: 'waitUntil work keeps running after the response was sent, and finishes',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('wait');
      // The response comes while the waitUntil promise is still pending.
      await expectText(t, `/wait/start?key=${key}`, 200, 'started');
      await expectText(t, `/wait/result?key=${key}`, 200, 'pending');
      await expectText(t, `/wait/release?key=${key}`, 200, 'released');
      const r = await t.poll(
        () => t.fetch(`/wait/result?key=${key}`).then((r) => r.text()),
        (v) => v !== 'pending',
      );
      assert.equal(r, 'done');
    },
  },
  {
    id: 'wait.bad-values',
    title: 'waitUntil never throws: a rejection, a number and null are accepted, the response is normal',
    async run(t) {
      const res = await expectText(t, '/wait/bad', 200, 'still fine');
      assert.ok(![...res.headers.values()].some((v) => v.includes(SECRET)));
      await stillFine(t);
    },
  },

  // ---- request.signal ----------------------------------------------------
  {
    id: 'signal.abort-on-disconnect',
    title: 'request.signal aborts when the client disconnects before the response',
    optOut: {
      'nginx:embedded':
        `${NJS_NO_SHARED_STATE}; also, njs tears the request VM down on client abort (njs #955) ` +
        'without running JS, so no abort event can be delivered',
    },
    async run(t) {
      const key = t.key('sig');
      const c = await t.connect();
      await c.write(get(t, `/signal/wait?key=${key}`));
      // Wait until the handler is inside fetch, then hang up.
      const started = await t.poll(
        () => t.fetch(`/signal/state?key=${key}`).then((r) => r.text()),
        (v) => v !== 'unknown',
      );
      assert.equal(started, 'waiting');
      c.close();
      const after = await t.poll(
        () => t.fetch(`/signal/state?key=${key}`).then((r) => r.text()),
        (v) => v !== 'waiting',
        12_000,
      );
      assert.equal(after, 'aborted');
      await stillFine(t);
    },
  },
  {
    id: 'signal.not-aborted-get',
    title: 'request.signal does not abort when a GET completes normally (connection closed after)',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('sig');
      const c = await t.connect();
      try {
        await c.write(get(t, `/signal/check?key=${key}`, 'Connection: close\r\n'));
        const r = await c.readResponse();
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.body.toString()).aborted, false);
        await c.readToEnd();
      } finally {
        c.close();
      }
      // A later request on another connection: any abort from the close has fired by now.
      await stillFine(t);
      await expectText(t, `/signal/state?key=${key}`, 200, 'ok');
    },
  },
  {
    id: 'signal.not-aborted-post',
    title: 'request.signal does not abort when a POST completes normally (signal read after the body)',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('sig');
      const body = await expectJSON(t, `/signal/check?key=${key}`, { method: 'POST', body: 'x'.repeat(10_000) });
      assert.deepEqual(body, { aborted: false, length: 10_000 });
      await stillFine(t);
      await expectText(t, `/signal/state?key=${key}`, 200, 'ok');
    },
  },

  // ---- connections ---------------------------------------------------------
  {
    id: 'conn.keepalive-pipelining',
    title: 'keep-alive with three pipelined requests: three responses in order on one connection',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          get(t, '/text') +
            `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 5\r\n\r\nhello` +
            get(t, '/echo/url?n=3'),
        );
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'Hello, tsgi!');
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).text, 'hello');
        const r3 = await c.readResponse();
        assert.equal(r3.status, 200);
        assert.equal(JSON.parse(r3.body.toString()).search, '?n=3');
        // Still open for a fourth.
        await c.write(get(t, '/text'));
        assert.equal((await c.readResponse()).status, 200);
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.http10',
    title: 'HTTP/1.0 clients get whole bodies without chunked framing, and the connection closes',
    async run(t) {
      for (const [path, want] of [
        ['/text', 'Hello, tsgi!'],
        ['/stream/basic', 'chunk-1;caf\u00e9;chunk-3'],
      ] as const) {
        const c = await t.connect();
        try {
          await c.write(`GET ${path} HTTP/1.0\r\nHost: ${t.host}\r\n\r\n`);
          const r = await c.readResponse();
          assert.equal(r.status, 200, path);
          assert.ok(!/chunked/i.test(r.get('transfer-encoding') ?? ''), `${path}: chunked framing sent to an HTTP/1.0 client`);
          assert.equal(r.body.toString(), want, path);
          await c.readToEnd();
        } finally {
          c.close();
        }
      }
    },
  },
  {
    id: 'conn.concurrent',
    title: '24 concurrent requests with different bodies each get their own answer',
    async run(t) {
      const results = await Promise.all(
        Array.from({ length: 24 }, async (_, i) => {
          const data = noise(1000 + i * 977, i + 1);
          const path = i % 2 ? `/echo/sum?n=${i}` : `/echo/url?a=${i}`;
          const res = await t.fetch(path, i % 2 ? { method: 'POST', body: data } : undefined);
          const body = JSON.parse(await res.text()) as { length?: number; adler32?: number; a?: string[] };
          return { i, data, status: res.status, body };
        }),
      );
      for (const { i, data, status, body } of results) {
        assert.equal(status, 200, `request ${i}`);
        if (i % 2) assert.deepEqual([body.length, body.adler32], [data.length, adler32(data)], `request ${i}`);
        else assert.deepEqual(body.a, [String(i)], `request ${i}`);
      }
    },
  },
  {
    id: 'conn.unread-body',
    title: 'a request body the handler never reads does not break the next request on the connection',
    async run(t) {
      const c = await t.connect();
      try {
        const body = Buffer.alloc(100_000, 0x62);
        await c.write(`POST /ignore-body HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: ${body.length}\r\n\r\n`);
        await c.write(body);
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'ignored');
        if (/close/i.test(r1.get('connection') ?? '')) {
          assert.fail('the server closed the connection instead of discarding the unread body');
        }
        await c.write(get(t, '/echo/url?after=unread'));
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).search, '?after=unread');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.unread-body-chunked',
    title: 'an unread chunked request body does not break the next pipelined request',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          `POST /ignore-body HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\n\r\n` +
            'a\r\n0123456789\r\n5\r\nGET /\r\n0\r\n\r\n' +
            get(t, '/echo/url?after=chunked'),
        );
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'ignored');
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).search, '?after=chunked');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.oversized-header',
    title: 'a 64 KiB request header gets a 4xx (or the connection closed with one); the server stays up',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/text', `X-Big: ${'a'.repeat(64 * 1024)}\r\n`));
        const r = await c.readResponse();
        assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
      } finally {
        c.close();
      }
      await stillFine(t);
    },
  },
  {
    id: 'conn.malformed-request-line',
    title: 'a malformed request line gets 400; the server stays up',
    async run(t) {
      for (const line of ['THIS IS NOT HTTP\r\n\r\n', `GET /text HTTP/1.1 extra\r\nHost: ${t.host}\r\n\r\n`]) {
        const r = await t.exchange(line);
        assert.equal(r.status, 400, JSON.stringify(line));
      }
      await stillFine(t);
    },
  },

  {
    id: 'conn.missing-host',
    title: 'an HTTP/1.1 request without Host gets 400; the server stays up',
    async run(t) {
      const r = await t.exchange('GET /text HTTP/1.1\r\nConnection: close\r\n\r\n');
      assert.equal(r.status, 400);
      await stillFine(t);
    },
  },

  // ---- body limit ----------------------------------------------------------
  {
    id: 'limit.content-length',
    title: 'a Content-Length over the limit gets 413; the server stays up',
    async run(t) {
      const over = CONFORMANCE_MAX_BODY + 1;
      const r = await sendOverLimit(
        t,
        `POST /echo/sum HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: ${over}\r\nContent-Type: application/octet-stream\r\n\r\n`,
        false,
        over,
      );
      assert.equal(r.status, 413);
      await stillFine(t);
    },
  },
  {
    id: 'limit.chunked',
    title: 'a chunked body growing over the limit gets 413; the server stays up',
    async run(t) {
      const r = await sendOverLimit(
        t,
        `POST /echo/sum HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n`,
        true,
        CONFORMANCE_MAX_BODY + 128 * 1024,
      );
      assert.equal(r.status, 413);
      await stillFine(t);
    },
  },
  {
    id: 'limit.exact',
    title: 'a body of exactly the limit is accepted whole',
    async run(t) {
      const data = noise(CONFORMANCE_MAX_BODY, 12345);
      const body = await expectJSON<{ length: number; adler32: number }>(t, '/echo/sum', { method: 'POST', body: data });
      assert.equal(body.length, CONFORMANCE_MAX_BODY);
      assert.equal(body.adler32, adler32(data));
    },
  },
];

/** 'server:mode' first, then 'server'. */
export function optOutFor(c: ConformanceCase, target: { server: string; mode?: string }): [string, string] | undefined {
  if (!c.optOut) return undefined;
  if (target.mode) {
    const k = `${target.server}:${target.mode}`;
    if (c.optOut[k]) return [k, c.optOut[k]];
  }
  if (c.optOut[target.server]) return [target.server, c.optOut[target.server]];
  return undefined;
}
