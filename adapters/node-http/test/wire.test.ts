/**
 * The wire rules of core/src/wire.ts on the two in-process Node entry points
 * (toNodeListener on http.Server and the Fastify mount; `tsgi serve` runs the
 * same listener): the bare 500 and its reason phrase, latin1 header bytes,
 * Content-Length, hop-by-hop names, the 400 for a bad request URL, and the
 * in-flight slot of a client that left before the first chunk.
 */
import { createHash } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify, { type FastifyInstance } from 'fastify';
import { Response as FastResponse, type Handler } from '@tsgi/core';
import { makeContext, type CaseContext } from '@tsgi/conformance';
import { noise, waitFor } from '@tsgi/conformance/testing';
import { fastifyTsgi, toNodeListener, type NodeListener } from '@tsgi/node-http';

const enc = new TextEncoder();

/** A stream of the given chunks, then the end. */
function chunks(...parts: string[]): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < parts.length) c.enqueue(enc.encode(parts[i++]));
      else c.close();
    },
  });
}

const silent = { open: 0 };
/** What a body read on /read?key= ended as: 'reading', then ok:<length> or the error's name. */
const reads = new Map<string, string>();
const sha1 = (b: Uint8Array | string): string => createHash('sha1').update(b).digest('hex');

/** /read?as=json|text|bytes|arrayBuffer: the body read one way; the read's promise is used as is (a sync throw would be a 500). */
function readBody(req: Request, url: URL): Promise<Response> {
  const as = url.searchParams.get('as')!;
  const key = url.searchParams.get('key') ?? '';
  reads.set(key, 'reading');
  const read: Promise<unknown> =
    as === 'json' ? req.json() : as === 'text' ? req.text() : as === 'bytes' ? req.bytes() : req.arrayBuffer();
  return read.then(
    (v) => {
      const bytes = typeof v === 'string' ? Buffer.from(v) : v instanceof ArrayBuffer ? new Uint8Array(v) : v instanceof Uint8Array ? v : Buffer.from(JSON.stringify(v));
      reads.set(key, `ok:${bytes.byteLength}`);
      return Response.json({ kind: v instanceof ArrayBuffer ? 'ArrayBuffer' : v instanceof Uint8Array ? 'Uint8Array' : typeof v, length: bytes.byteLength, sha1: sha1(bytes), used: req.bodyUsed });
    },
    (err: Error) => {
      reads.set(key, err.name);
      return Response.json({ error: err.name });
    },
  );
}

/** One fast Response answered every time: the writers share its header list (toRawResponse) and must add to a copy. */
const reused = new FastResponse('same', { headers: { 'x-once': '1' } });

const handler: Handler = {
  fetch(req) {
    const url = new URL(req.url);
    const kind = url.searchParams.get('kind') ?? 'string';
    const body = (s: string): BodyInit | null =>
      kind === 'bytes' ? enc.encode(s) : kind === 'stream' ? chunks(s) : kind === 'none' ? null : s;
    const R = kind === 'fast' ? (FastResponse as typeof Response) : Response;
    switch (url.pathname) {
      case '/read':
        return readBody(req, url);
      case '/bad-value':
        // undici's Headers takes U+0100; no host can send it: the bare 500.
        return new Response(body('x'), { status: 200, statusText: 'Fine', headers: { 'x-bad': 'a\u0100' } });
      case '/latin1':
        return new R(kind === 'none' ? null : kind === 'fast' ? 'h\u00e9' : body('h\u00e9'), {
          statusText: 'Caf\u00e9',
          headers: { 'x-latin1': 'caf\u00e9', 'content-type': 'text/plain;charset=UTF-8' },
        });
      case '/cl':
        return new R(kind === 'fast' ? 'hello' : body('hello'), { headers: { 'content-length': '99' } });
      case '/cl/stream':
        return new Response(chunks(...(url.searchParams.get('parts') ?? '').split(',')), {
          headers: { 'content-length': url.searchParams.get('declared')! },
        });
      case '/cl/204':
        return new Response(null, { status: 204, headers: { 'content-length': '5' } });
      case '/cl/304':
        return new Response(null, { status: 304, headers: { 'content-length': '1234', etag: '"e"' } });
      case '/hop':
        return new R('hop', {
          headers: [
            ['Connection', 'x-private'],
            ['Transfer-Encoding', 'chunked'],
            ['Content-Length', '99'],
            ['keep-alive', 'timeout=99'],
            ['proxy-connection', 'keep-alive'],
            ['te', 'trailers'],
            ['trailer', 'x-sum'],
            ['upgrade', 'h2c'],
            ['x-private', 'kept'],
          ],
        });
      case '/reused':
        return reused;
      case '/silent':
        silent.open++;
        return new Response(
          new ReadableStream({
            cancel() {
              silent.open--;
            },
          }),
        );
      default:
        return new Response('ok');
    }
  },
};

const errors: string[] = [];
const onError = (message: string, err?: unknown): void => {
  errors.push(`${message} ${err instanceof Error ? err.stack : String(err ?? '')}`);
};

let plain: Server;
let listener: NodeListener;
let app: FastifyInstance;
const targets: Record<string, string> = {};

beforeAll(async () => {
  listener = toNodeListener(handler, { onError });
  // Long keep-alive: a connection that closes was cut by the adapter, not by an idle timer.
  plain = createServer({ keepAliveTimeout: 60_000 }, listener);
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  targets['toNodeListener'] = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;
  app = Fastify({ keepAliveTimeout: 60_000 });
  await app.register(fastifyTsgi, { handler, onError });
  targets['Fastify'] = (await app.listen({ port: 0, host: '127.0.0.1' })).replace(/\/$/, '');
});

afterAll(async () => {
  plain.closeAllConnections();
  await new Promise((r) => plain.close(r));
  await app.close();
});

const get = (t: CaseContext, path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${extra}\r\n`;

for (const name of ['toNodeListener', 'Fastify']) {
  const ctx = (): CaseContext => makeContext(targets[name]!, { server: 'node' });

  describe(`${name}: wire rules`, () => {
    it('a header value no host can send gives the bare 500 with its own reason phrase', async () => {
      const t = ctx();
      for (const kind of ['string', 'bytes', 'stream', 'none']) {
        const r = await t.exchange(get(t, `/bad-value?kind=${kind}`, 'Connection: close\r\n'));
        expect(r.head.split('\r\n')[0], kind).toBe('HTTP/1.1 500 Internal Server Error');
        expect(r.body.toString(), kind).toBe('Internal Server Error\n');
        expect(r.get('content-type'), kind).toBe('text/plain;charset=UTF-8');
        expect(r.get('x-bad'), kind).toBeNull();
      }
    });

    it('U+00E9 in a header value and in the reason phrase is the one byte E9; the body stays UTF-8', async () => {
      const t = ctx();
      for (const kind of ['string', 'fast', 'bytes', 'stream', 'none']) {
        const r = await t.exchange(get(t, `/latin1?kind=${kind}`, 'Connection: close\r\n'));
        expect(r.status, kind).toBe(200);
        // RawResponse.head is the wire decoded as latin1: E9 reads as U+00E9, C3 A9 as two characters.
        expect(r.get('x-latin1'), kind).toBe('caf\u00e9');
        expect(r.reason, kind).toBe('Caf\u00e9');
        expect([...r.body], kind).toEqual(kind === 'none' ? [] : [...Buffer.from('h\u00e9', 'utf8')]);
      }
    });

    it("a fixed body carries the server's Content-Length whatever the handler said; the connection stays usable", async () => {
      const t = ctx();
      for (const kind of ['string', 'fast', 'bytes']) {
        const c = await t.connect();
        try {
          await c.write(get(t, `/cl?kind=${kind}`) + get(t, '/next'));
          const r = await c.readResponse();
          expect(r.all('content-length'), kind).toEqual(['5']);
          expect(r.body.toString(), kind).toBe('hello');
          const next = await c.readResponse();
          expect(next.body.toString(), kind).toBe('ok');
        } finally {
          c.close();
        }
      }
    });

    it("a writer adds Content-Length (and Connection: close) to a copy, never to the Response's own header list", async () => {
      const t = ctx();
      for (let i = 0; i < 3; i++) {
        const r = await t.exchange(get(t, '/reused', 'Connection: close\r\n'));
        expect(r.all('content-length'), `answer ${i + 1}`).toEqual(['4']);
        expect(r.all('x-once'), `answer ${i + 1}`).toEqual(['1']);
        expect(r.all('connection'), `answer ${i + 1}`).toEqual(['close']);
        expect(r.body.toString()).toBe('same');
      }
      expect([...reused.headers]).toEqual([['content-type', 'text/plain;charset=UTF-8'], ['x-once', '1']]);
    });

    it('a stream keeps a declared Content-Length it matches', async () => {
      const t = ctx();
      const r = await t.exchange(get(t, '/cl/stream?declared=6&parts=abc,def', 'Connection: close\r\n'));
      expect(r.all('content-length')).toEqual(['6']);
      expect(r.get('transfer-encoding')).toBeNull();
      expect(r.body.toString()).toBe('abcdef');
    });

    it('a stream that delivers fewer bytes than it declared: the connection is cut, the body never looks complete', async () => {
      const t = ctx();
      const c = await t.connect();
      try {
        await c.write(get(t, '/cl/stream?declared=10&parts=abc,de'));
        await expect(c.readResponse()).rejects.toThrow(/closed before a complete response/);
      } finally {
        c.close();
      }
    });

    it('a stream that delivers more than it declared: no byte past the declared length, then the connection is cut', async () => {
      const t = ctx();
      const c = await t.connect();
      try {
        await c.write(get(t, '/cl/stream?declared=3&parts=abc,defgh') + get(t, '/next'));
        const r = await c.readResponse();
        // The excess can be seen before the head left (then the bare 500 still can go out) or after.
        if (r.status === 500) {
          expect(r.body.toString()).toBe('Internal Server Error\n');
          expect((await c.readResponse()).body.toString()).toBe('ok');
        } else {
          expect(r.body.toString()).toBe('abc');
          // Nothing after it: neither the excess bytes nor an answer to the pipelined request.
          expect((await c.readToEnd()).length).toBe(0);
        }
      } finally {
        c.close();
      }
    });

    it('204 carries no Content-Length; 304 keeps the handler\'s', async () => {
      const t = ctx();
      const r204 = await t.exchange(get(t, '/cl/204', 'Connection: close\r\n'));
      expect(r204.status).toBe(204);
      expect(r204.get('content-length')).toBeNull();
      const r304 = await t.exchange(get(t, '/cl/304', 'Connection: close\r\n'));
      expect(r304.status).toBe(304);
      expect(r304.get('content-length')).toBe('1234');
    });

    it("hop-by-hop names from the handler never reach the wire, in any case spelling; a fixed body carries the server's length", async () => {
      const t = ctx();
      for (const kind of ['string', 'fast']) {
        const r = await t.exchange(get(t, `/hop?kind=${kind}`, 'Connection: close\r\n'));
        expect(r.body.toString(), kind).toBe('hop');
        expect(r.get('x-private'), kind).toBe('kept');
        for (const h of ['keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade', 'transfer-encoding']) expect(r.get(h), `${kind} ${h}`).toBeNull();
        expect(r.all('connection').join(','), kind).not.toMatch(/x-private/);
        expect(r.all('content-length'), kind).toEqual(['3']);
      }
    });

    it('a bad request URL gets "400 Bad Request\\n" and nothing of it reaches the log', async () => {
      const t = ctx();
      const before = errors.length;
      for (const req of [
        `GET http://user:s3cret@${t.host}/ HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: ${t.host}\r\nHost: s3cret.example\r\nConnection: close\r\n\r\n`,
        `GET / HTTP/1.1\r\nHost: s3cret/x@y\r\nConnection: close\r\n\r\n`,
      ]) {
        const r = await t.exchange(req);
        expect(r.head.split('\r\n')[0]).toBe('HTTP/1.1 400 Bad Request');
        expect(r.body.toString()).toBe('Bad Request\n');
      }
      expect(errors.slice(before).join('\n')).not.toMatch(/s3cret/);
    });
  });
}

describe('toNodeListener: client gone before the first chunk', () => {
  it('the stream is cancelled and the in-flight slot is freed', async () => {
    const t = makeContext(targets['toNodeListener']!, { server: 'node' });
    const open = silent.open;
    for (let i = 0; i < 5; i++) {
      const c = await t.connect();
      await c.write(get(t, '/silent'));
      c.close();
    }
    await waitFor(() => silent.open === open && listener.lifecycle.inflight === 0, 10_000, 'the silent streams to be cancelled');
    expect(listener.lifecycle.busy).toBe(false);
  });
});

describe('toNodeListener: the request URL', () => {
  const echo: Handler = { fetch: (req) => new Response(req.url) };
  let server: Server;
  let base = '';
  let proxied: Server;
  let proxiedBase = '';
  beforeAll(async () => {
    server = createServer(toNodeListener(echo));
    // The embedder (nginx workers mode) decides the authority from what its proxy saw.
    const seen = (req: IncomingMessage): string | undefined => {
      const v = req.headers['x-seen-authority'];
      return typeof v === 'string' ? v : undefined;
    };
    proxied = createServer(toNodeListener(echo, { trustProxy: true, authority: seen }));
    for (const s of [server, proxied]) {
      s.listen(0, '127.0.0.1');
      await once(s, 'listening');
    }
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    proxiedBase = `http://127.0.0.1:${(proxied.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const s of [server, proxied]) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
  });

  it("an HTTP/1.0 request without Host is served, with the server's own address", async () => {
    const t = makeContext(base, { server: 'node' });
    const r = await t.exchange('GET /x?y=1 HTTP/1.0\r\n\r\n');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe(`${base}/x?y=1`);
  });

  it("behind a trusted proxy, the embedder's authority() names the authority; without it, Host does", async () => {
    const p = makeContext(proxiedBase, { server: 'node' });
    const r = await p.exchange(get(p, '/a', 'X-Seen-Authority: seen.example:8443\r\nX-Forwarded-Proto: https\r\nConnection: close\r\n'));
    expect(r.body.toString()).toBe('https://seen.example:8443/a');
    const plain = await p.exchange(get(p, '/a', 'Connection: close\r\n'));
    expect(plain.body.toString()).toBe(`http://${p.host}/a`);
    const t = makeContext(base, { server: 'node' });
    const ignored = await t.exchange(get(t, '/a', 'X-Seen-Authority: seen.example\r\nConnection: close\r\n'));
    expect(ignored.body.toString()).toBe(`${base}/a`);
  });
});

describe('toNodeListener: absolute-form without Host', () => {
  it('HTTP/1.0 with an absolute-form target: request.url and the Host header the handler sees are its authority', async () => {
    const server = createServer(toNodeListener({ fetch: (req) => Response.json({ url: req.url, host: req.headers.get('host') }) }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const t = makeContext(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { server: 'node' });
      const r = await t.exchange('GET http://a.example:81/x?y=1 HTTP/1.0\r\n\r\n');
      expect(JSON.parse(r.body.toString())).toEqual({ url: 'http://a.example:81/x?y=1', host: 'a.example:81' });
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});

describe('phases: the access run answers as nginx auth_request expects (core accessReply, as embedded nginx)', () => {
  const guarded: Handler = {
    authenticate(req) {
      const who = req.headers.get('x-who');
      if (who === 'forged') return new Response('no', { status: 401, headers: { 'www-authenticate': 'Bearer realm="t"' } });
      if (who === 'teapot') return new Response('no', { status: 418 });
      if (who === 'boom') throw new Error('authenticate failed on purpose');
      return who ? { user: who } : undefined;
    },
    authorize: (_req, ctx) => ctx.user !== 'mallory',
    fetch: () => new Response('the handler itself'),
  };
  let server: Server;
  let t: ReturnType<typeof makeContext>;
  const logged: string[] = [];
  beforeAll(async () => {
    server = createServer(toNodeListener(guarded, { phases: true, onError: (m) => void logged.push(m) }));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    t = makeContext(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { server: 'node' });
  });
  afterAll(async () => {
    server.closeAllConnections();
    await new Promise((r) => server.close(r));
  });
  const access = (who?: string) =>
    t.exchange(get(t, '/files/x', `X-Tsgi-Phase: access\r\n${who ? `X-Who: ${who}\r\n` : ''}Connection: close\r\n`));

  it('allowed: 204 with x-tsgi-user when authenticate named one, no body', async () => {
    const r = await access('alice');
    expect([r.status, r.get('x-tsgi-user'), r.body.length]).toEqual([204, 'alice', 0]);
    const anon = await access();
    expect([anon.status, anon.get('x-tsgi-user')]).toEqual([204, null]);
  });

  it("refused with 401: 401 with the handler's WWW-Authenticate; any other refusal: 403 with x-tsgi-status", async () => {
    const r = await access('forged');
    expect([r.status, r.get('www-authenticate')]).toEqual([401, 'Bearer realm="t"']);
    const teapot = await access('teapot');
    expect([teapot.status, teapot.get('x-tsgi-status')]).toEqual([403, '418']);
    const denied = await access('mallory');
    expect([denied.status, denied.get('x-tsgi-status')]).toEqual([403, '403']);
  });

  it('a throwing hook: the bare 500, logged', async () => {
    const r = await access('boom');
    expect([r.status, r.body.toString()]).toEqual([500, 'Internal Server Error\n']);
    expect(logged.some((m) => m.includes('authenticate/authorize threw'))).toBe(true);
  });

  it('without the phase header, the whole pipeline', async () => {
    const r = await t.exchange(get(t, '/x', 'X-Who: alice\r\nConnection: close\r\n'));
    expect([r.status, r.body.toString()]).toEqual([200, 'the handler itself']);
  });
});

/** Sizes on both sides of 64 KiB (node's read buffer: small bodies arrive with the head, large ones as 'data'). */
const SIZES = [0, 1, 1000, 65_535, 65_536, 65_537, 200_000];

for (const name of ['toNodeListener', 'Fastify']) {
  describe(`${name}: request body reads`, () => {
    const post = async (as: string, body: Uint8Array | string, key = ''): Promise<Record<string, unknown>> => {
      const r = await fetch(`${targets[name]}/read?as=${as}&key=${key}`, { method: 'POST', body });
      expect(r.status).toBe(200);
      return (await r.json()) as Record<string, unknown>;
    };

    it('bytes, arrayBuffer and text get the whole body, at every size', async () => {
      for (const size of SIZES) {
        const body = noise(size, size + 7);
        for (const as of ['bytes', 'arrayBuffer']) {
          const kind = as === 'bytes' ? 'Uint8Array' : 'ArrayBuffer';
          expect(await post(as, body), `${as} ${size}`).toEqual({ kind, length: size, sha1: sha1(body), used: true });
        }
        const text = Buffer.from(body).toString('hex');
        expect(await post('text', text), `text ${size}`).toEqual({ kind: 'string', length: text.length, sha1: sha1(text), used: true });
      }
    });

    it('json parses the whole body, at every size', async () => {
      for (const size of SIZES) {
        const text = JSON.stringify({ d: Buffer.from(noise(size, size + 3)).toString('hex').slice(0, Math.max(0, size - 8)) });
        expect(await post('json', text), `json ${text.length}`).toEqual({ kind: 'object', length: text.length, sha1: sha1(text), used: true });
      }
    });

    it('a body that is not JSON (also an empty one) rejects json() with SyntaxError; the server goes on', async () => {
      for (const body of ['', '{"a":', 'x'.repeat(70_000)]) {
        expect(await post('json', body), `${body.length} bytes`).toEqual({ error: 'SyntaxError' });
      }
      expect(await post('json', '{"a":1}')).toMatchObject({ kind: 'object', length: 7 });
    });

    it('a client that leaves mid-body: the read rejects with AbortError', async () => {
      const t = makeContext(targets[name]!, { server: 'node' });
      const key = `gone-${name}`;
      const c = await t.connect();
      await c.write(`POST /read?as=text&key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 100000\r\n\r\n`);
      await c.write(Buffer.alloc(1000, 0x61));
      await waitFor(() => reads.get(key) === 'reading', 10_000, 'the handler to start reading');
      c.close();
      await waitFor(() => reads.get(key) !== 'reading', 10_000, 'the read to settle');
      expect(reads.get(key)).toBe('AbortError');
    });
  });
}

describe('toNodeListener: ctx.ip', () => {
  it('is the client address, also in a log hook that runs after the client left', async () => {
    const seen: string[] = [];
    const logged: string[] = [];
    const h: Handler = {
      fetch(req, ctx) {
        if (new URL(req.url).pathname === '/ip') return new Response(ctx.ip);
        // Never ends: the exchange ends (and the log hook runs) when the client leaves.
        return new Response(new ReadableStream({ pull: () => new Promise(() => {}) }));
      },
      log(_entry, ctx) {
        logged.push(ctx.ip);
      },
    };
    const server = createServer(toNodeListener(h));
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    try {
      const t = makeContext(`http://127.0.0.1:${(server.address() as AddressInfo).port}`, { server: 'node' });
      seen.push((await t.exchange(get(t, '/ip', 'Connection: close\r\n'))).body.toString());
      const c = await t.connect();
      await c.write(get(t, '/endless'));
      await waitFor(() => logged.length === 1, 5000, 'the first log entry');
      c.close();
      await waitFor(() => logged.length === 2, 10_000, 'the log hook of the request whose client left');
      expect([...seen, ...logged]).toEqual(['127.0.0.1', '127.0.0.1', '127.0.0.1']);
    } finally {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    }
  });
});
