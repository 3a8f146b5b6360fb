// The workers-mode worker's own HTTP/1.1 reader (connection.ts) at the byte level, as nginx (or a
// local user poking at the socket) talks to it: heads split anywhere, requests back to back, bodies on
// both sides of DIRECT_BODY_MAX, what it hands to node:http, back-pressure, a client that leaves.
// The worker's servers run in this process (workerServers); the behaviour through real nginx is the
// conformance and lifecycle matrices' (conformance-workers.test.ts, lifecycle.test.ts).
import { createHash } from 'node:crypto';
import { connect, createServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Handler } from '@tsgi/core';
import { Operations } from '@tsgi/core/node';
import { noise, sleep, waitFor } from '@tsgi/conformance/testing';
import { DIRECT_BODY_MAX, NginxConnection } from '../src/connection.js';
import { MAX_HEAD, workerServers, type WorkerServers } from '../src/worker.js';

const SECRET = 's'.repeat(64);
const NGINX = `Host: example.test\r\nX-Tsgi-Secret: ${SECRET}\r\nX-Tsgi-Request: GET / HTTP/1.1\r\nX-Real-IP: 192.0.2.7\r\nX-Forwarded-Proto: https\r\n`;

/** What a stream handler did: pulls made and whether it was cancelled. */
const streams = { pulls: 0, cancelled: false };

const handler: Handler = {
  async fetch(req, ctx) {
    const url = new URL(req.url);
    switch (url.pathname) {
      case '/echo': {
        const body = new Uint8Array(await req.arrayBuffer());
        return new Response(body, { headers: { 'x-sha': sha(body) } });
      }
      case '/who':
        return Response.json({ url: req.url, ip: ctx.ip, base: ctx.basePath, headers: [...req.headers.keys()] });
      case '/big-stream': {
        // 16 MiB of noise in 64 KiB + 1 chunks, pulled only as the socket takes it.
        streams.pulls = 0;
        streams.cancelled = false;
        const chunk = noise(DIRECT_BODY_MAX + 1, 7);
        let left = 256;
        return new Response(
          new ReadableStream<Uint8Array>(
            {
              pull(c) {
                streams.pulls++;
                if (left-- === 0) c.close();
                else c.enqueue(chunk.slice());
              },
              cancel() {
                streams.cancelled = true;
              },
            },
            { highWaterMark: 0 },
          ),
        );
      }
      case '/slow':
        await new Promise((r) => setTimeout(r, 400));
        return new Response('slow\n');
      case '/fails-mid-stream':
        return new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode('partial'));
              setTimeout(() => c.error(new Error('boom')), 30);
            },
          }),
        );
      default:
        return new Response('hello\n');
    }
  },
};

const sha = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

let servers: WorkerServers;
let port: number;
/** Connections node:http took over. */
let handedOff = 0;
const logged: string[] = [];

beforeAll(async () => {
  const log = (m: string): void => void logged.push(m);
  servers = await workerServers(handler, { tsgi: 'config', secret: SECRET, authority: '127.0.0.1:8080', maxBody: 1 << 20 }, new Operations({}), log);
  servers.server.on('connection', () => handedOff++);
  await new Promise<void>((r) => servers.direct.listen(0, '127.0.0.1', r));
  port = (servers.direct.address() as { port: number }).port;
});
afterAll(async () => {
  for (const s of servers.sockets) s.destroy();
  await new Promise((r) => servers.direct.close(r));
});

interface Reply {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** A connection and the responses read off it, framing parsed by hand (Content-Length, chunked, or to EOF). */
class Wire {
  readonly socket: Socket;
  private buf = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  ended = false;

  constructor() {
    this.socket = connect(port, '127.0.0.1');
    this.socket.on('data', (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.wake();
    });
    this.socket.on('close', () => {
      this.ended = true;
      this.wake();
    });
    this.socket.on('error', () => {});
  }

  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }

  private more(): Promise<void> {
    if (this.ended) throw new Error('connection closed');
    return new Promise((r) => this.waiters.push(r));
  }

  send(bytes: string | Buffer): void {
    this.socket.write(bytes);
  }

  async reply(isHead = false): Promise<Reply> {
    let end: number;
    while ((end = this.buf.indexOf('\r\n\r\n')) < 0) await this.more();
    const lines = this.buf.toString('latin1', 0, end).split('\r\n');
    this.buf = this.buf.subarray(end + 4);
    const status = Number(lines[0]!.split(' ')[1]);
    if (status < 200) return this.reply(isHead); // 100 Continue: the answer follows
    const headers: Record<string, string> = {};
    for (const l of lines.slice(1)) headers[l.slice(0, l.indexOf(':')).toLowerCase()] = l.slice(l.indexOf(':') + 1).trim();
    if (isHead || status === 204 || status === 304) return { status, headers, body: Buffer.alloc(0) };
    if (headers['content-length'] !== undefined) {
      const n = Number(headers['content-length']);
      while (this.buf.length < n) await this.more();
      const body = this.buf.subarray(0, n);
      this.buf = this.buf.subarray(n);
      return { status, headers, body };
    }
    if (headers['transfer-encoding'] === 'chunked') {
      const parts: Buffer[] = [];
      for (;;) {
        let eol: number;
        while ((eol = this.buf.indexOf('\r\n')) < 0) await this.more();
        const size = parseInt(this.buf.toString('latin1', 0, eol), 16);
        while (this.buf.length < eol + 2 + size + 2) await this.more();
        parts.push(this.buf.subarray(eol + 2, eol + 2 + size));
        this.buf = this.buf.subarray(eol + 2 + size + 2);
        if (size === 0) return { status, headers, body: Buffer.concat(parts) };
      }
    }
    while (!this.ended) await this.more().catch(() => {});
    return { status, headers, body: this.buf };
  }

  close(): void {
    this.socket.destroy();
  }
}

const get = (path: string, extra = ''): string => `GET ${path} HTTP/1.1\r\n${NGINX}${extra}\r\n`;
const post = (path: string, body: Buffer, extra = ''): Buffer =>
  Buffer.concat([Buffer.from(`POST ${path} HTTP/1.1\r\n${NGINX}Content-Length: ${body.length}\r\n${extra}\r\n`), body]);

describe('the worker reads nginx requests itself', () => {
  it('serves a request whose head and body arrive a byte at a time', async () => {
    const w = new Wire();
    const body = noise(300, 11);
    const bytes = post('/echo', body);
    for (let i = 0; i < bytes.length; i++) {
      w.send(bytes.subarray(i, i + 1));
      if (i % 97 === 0) await sleep(1);
    }
    const r = await w.reply();
    expect(r.status).toBe(200);
    expect(r.headers['x-sha']).toBe(sha(body));
    w.close();
  });

  it('answers requests sent back to back in order, on one connection', async () => {
    const w = new Wire();
    const a = noise(1000, 1);
    const b = noise(DIRECT_BODY_MAX, 2);
    w.send(Buffer.concat([post('/echo', a), Buffer.from(get('/hello')), post('/echo', b), Buffer.from(get('/who', 'X-Tsgi-Other: mine\r\n'))]));
    expect((await w.reply()).headers['x-sha']).toBe(sha(a));
    expect((await w.reply()).body.toString()).toBe('hello\n');
    expect((await w.reply()).headers['x-sha']).toBe(sha(b));
    const who = JSON.parse((await w.reply()).body.toString());
    // nginx's lines are the worker's: the scheme and ctx.ip from them, none shown to the handler.
    expect(who).toMatchObject({ url: 'https://example.test/who', ip: '192.0.2.7', base: '' });
    // Another X-Tsgi- name is the client's, as node:http's path (hiddenHeaders) leaves it.
    expect(who.headers.filter((h: string) => h.startsWith('x-tsgi-'))).toEqual(['x-tsgi-other']);
    w.close();
  });

  it('keeps bodies byte-exact on both sides of DIRECT_BODY_MAX, reading the small ones itself', async () => {
    for (const size of [0, 1, DIRECT_BODY_MAX - 1, DIRECT_BODY_MAX, DIRECT_BODY_MAX + 1, 3 * DIRECT_BODY_MAX + 5]) {
      const before = handedOff;
      const w = new Wire();
      const body = noise(size, size + 3);
      w.send(post('/echo', body));
      const r = await w.reply();
      expect(r.status, `${size} bytes`).toBe(200);
      expect(r.headers['x-sha'], `${size} bytes`).toBe(sha(body));
      expect(handedOff - before, `${size} bytes handed to node:http`).toBe(size > DIRECT_BODY_MAX ? 1 : 0);
      // The connection goes on (with node:http once handed over).
      w.send(get('/hello'));
      expect((await w.reply()).body.toString()).toBe('hello\n');
      w.close();
    }
  });

  it('hands what it does not read itself to node:http, with the answers node:http gives', async () => {
    const cases: [string | Buffer, number][] = [
      // A chunked upload: streamed by node:http.
      [`POST /echo HTTP/1.1\r\n${NGINX}Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n`, 200],
      [`POST /echo HTTP/1.1\r\n${NGINX}Content-Length: 3\r\nExpect: 100-continue\r\n\r\nabc`, 200],
      // Not HTTP, a lower-case method, an HTTP/1.0 request without Host, a folded line: node:http judges them.
      ['HELLO\r\n\r\n', 400],
      [`get /hello HTTP/1.1\r\n${NGINX}\r\n`, 400],
      [`GET /hello HTTP/1.1\r\nX-Tsgi-Secret: ${SECRET}\r\n\r\n`, 200],
      [`GET /hello HTTP/1.1\r\n${NGINX}X-Folded: a\r\n b\r\n\r\n`, 400],
      // Two Content-Lengths, two Hosts.
      [`POST /echo HTTP/1.1\r\n${NGINX}Content-Length: 1\r\nContent-Length: 2\r\n\r\nab`, 400],
      [`GET /hello HTTP/1.1\r\n${NGINX}Host: other.test\r\n\r\n`, 400],
      // A head larger than node:http reads.
      [`GET /hello HTTP/1.1\r\n${NGINX}X-Big: ${'b'.repeat(MAX_HEAD)}\r\n\r\n`, 431],
    ];
    for (const [bytes, status] of cases) {
      const before = handedOff;
      const w = new Wire();
      w.send(bytes);
      const r = await w.reply();
      expect(r.status, String(bytes).slice(0, 60)).toBe(status);
      expect(handedOff - before).toBe(1);
      w.close();
    }
  });

  it('refuses a request without the secret with 403 and nothing from it used, and keeps the connection', async () => {
    const w = new Wire();
    w.send(`POST /echo HTTP/1.1\r\nHost: x\r\nX-Tsgi-Secret: ${'t'.repeat(64)}\r\nContent-Length: 4\r\n\r\nabcd`);
    const r = await w.reply();
    expect(r.status).toBe(403);
    expect(r.body.toString()).toBe('Forbidden\n');
    w.send(get('/hello'));
    expect((await w.reply()).status).toBe(200);
    expect(logged.some((l) => l.includes('did not come through nginx'))).toBe(true);
    w.close();
  });

  it('reads no further ahead than one request while one is in flight', async () => {
    const w = new Wire();
    const ahead = Buffer.concat(Array.from({ length: 100 }, (_, i) => post('/echo', noise(32 * 1024, i))));
    w.send(Buffer.concat([Buffer.from(get('/slow')), ahead]));
    await sleep(200);
    const mine = [...servers.sockets].find((s) => s.remotePort === w.socket.localPort)!;
    expect(mine.bytesRead).toBeLessThan(MAX_HEAD + DIRECT_BODY_MAX + 4 * 65536);
    expect((await w.reply()).body.toString()).toBe('slow\n');
    // Then every request sent ahead is answered, in order.
    for (let i = 0; i < 100; i++) expect((await w.reply()).headers['x-sha']).toBe(sha(noise(32 * 1024, i)));
    w.close();
  });

  it('closes after a request that says Connection: close', async () => {
    const w = new Wire();
    w.send(get('/hello', 'Connection: close\r\n'));
    const r = await w.reply();
    expect(r.headers.connection).toBe('close');
    await waitFor(() => w.ended, 5_000, 'the worker to close');
  });

  it('writes a stream only as fast as nginx reads it, byte-exact, chunked', async () => {
    const w = new Wire();
    w.socket.pause();
    w.send(get('/big-stream'));
    await sleep(500);
    // 16 MiB not read: the stream was pulled about as far as the socket buffers hold, not to its end.
    expect(streams.pulls).toBeLessThan(100);
    w.socket.resume();
    const r = await w.reply();
    expect(r.headers['transfer-encoding']).toBe('chunked');
    expect(r.body.length).toBe(256 * (DIRECT_BODY_MAX + 1));
    const chunk = noise(DIRECT_BODY_MAX + 1, 7);
    for (const at of [0, 100, 255]) expect(sha(r.body.subarray(at * chunk.length, (at + 1) * chunk.length))).toBe(sha(chunk));
    w.send(get('/hello'));
    expect((await w.reply()).body.toString()).toBe('hello\n');
    w.close();
  });

  it('cancels the stream when nginx leaves mid-way, and aborts nothing else', async () => {
    streams.pulls = 0;
    const w = new Wire();
    w.socket.pause();
    w.send(get('/big-stream'));
    await waitFor(() => streams.pulls > 0, 5_000, 'the stream to start');
    w.close();
    await waitFor(() => streams.cancelled, 5_000, 'the stream to be cancelled');
    const again = new Wire();
    again.send(get('/hello'));
    expect((await again.reply()).status).toBe(200);
    again.close();
  });

  it('cuts the connection when a stream fails after its head, so the body never looks complete', async () => {
    const w = new Wire();
    w.send(get('/fails-mid-stream'));
    await expect(w.reply()).rejects.toThrow('connection closed');
    expect(w.ended).toBe(true);
  });

  it('sends a HEAD answer without a body, and the connection goes on', async () => {
    const w = new Wire();
    w.send(`HEAD /big-stream HTTP/1.1\r\n${NGINX}\r\n`);
    const r = await w.reply(true);
    expect(r.status).toBe(200);
    expect(r.headers['transfer-encoding']).toBeUndefined();
    w.send(get('/hello'));
    expect((await w.reply()).body.toString()).toBe('hello\n');
    w.close();
  });

  it('tells when a response has left also for bytes pending below the high-water mark (the counts and the log hook wait for it)', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const accepted = new Promise<Socket>((r) => srv.once('connection', r));
    const peer = connect((srv.address() as { port: number }).port, '127.0.0.1');
    peer.pause();
    const socket = await accepted;
    const conn = new NginxConnection(socket, { host: servers.host, fromNginx: () => true, maxHead: MAX_HEAD, maxBody: 1 << 20, handOff: () => {} });
    // Fill the kernel's buffers a KiB at a time, so what is left pending stays below the high-water
    // mark: write() keeps returning true and 'drain' never comes.
    const kib = Buffer.alloc(1024, 120);
    for (let i = 0; i < 64 * 1024 && socket.writableLength === 0; i++) {
      socket.write(kib);
      if (i % 256 === 0) await sleep(1);
    }
    expect(socket.writableLength).toBeGreaterThan(0);
    expect(socket.writableNeedDrain).toBe(false);
    let flushed = false;
    conn.whenFlushed(() => (flushed = true));
    await sleep(100);
    expect(flushed).toBe(false);
    peer.resume();
    await waitFor(() => flushed, 5_000, 'whenFlushed after the peer read');
    peer.destroy();
    await new Promise((r) => srv.close(r));
  });

  it('survives mangled requests on its socket: each gets an HTTP answer or a closed connection, and the worker serves on', async () => {
    const rand = noise(4096, 99);
    let r = 0;
    const next = (n: number): number => rand[r++ % rand.length]! % n;
    const valid = post('/echo', noise(200, 5));
    const mangle = (): Buffer => {
      const b = Buffer.from(valid);
      const edits = 1 + next(4);
      for (let e = 0; e < edits; e++) {
        const at = next(b.length);
        switch (next(5)) {
          case 0:
            b[at] = rand[r++ % rand.length]!;
            break;
          case 1:
            b[at] = [13, 10, 58, 32, 0, 9][next(6)]!;
            break;
          case 2:
            return Buffer.concat([b.subarray(0, at), Buffer.from('\r\n'), b.subarray(at)]);
          case 3:
            return b.subarray(0, at);
          default:
            return Buffer.concat([b.subarray(0, at), b.subarray(at, at + next(40)), b.subarray(at)]);
        }
      }
      return b;
    };
    const one = (bytes: Buffer): Promise<string> =>
      new Promise((resolve) => {
        const s = connect(port, '127.0.0.1');
        let got = '';
        s.on('data', (d: Buffer) => (got += d.toString('latin1')));
        s.on('error', () => {});
        s.write(bytes);
        setTimeout(() => {
          s.destroy();
          resolve(got);
        }, 300);
      });
    for (let batch = 0; batch < 10; batch++) {
      const answers = await Promise.all(Array.from({ length: 20 }, () => one(mangle())));
      for (const a of answers) if (a !== '') expect(a.slice(0, 9)).toBe('HTTP/1.1 ');
    }
    expect(logged.filter((l) => l.includes('could not be read'))).toEqual([]);
    const w = new Wire();
    w.send(get('/hello'));
    expect((await w.reply()).body.toString()).toBe('hello\n');
    w.close();
  });
});
