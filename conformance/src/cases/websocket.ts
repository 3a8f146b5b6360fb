/**
 * WebSocket (issue 13): the handler's `websocket` hooks, the same on every host
 * that carries them. The fixture's sockets route on the upgrade path
 * (/ws/echo, /ws/close, /ws/flood, /auth/accept...); what its hooks saw is read
 * back through GET /ws/stats?key=K.
 */
import assert from 'node:assert/strict';
import type { CaseContext } from '../client.js';
import { openWs, refusedWs, type WsClient } from '../ws-client.js';
import type { ConformanceCase } from './shared.js';
import { CONFORMANCE_MAX_BODY, EDGE_SIZES, bytesEqual, expectJSON, get, noise, noiseText, stillFine } from './shared.js';

const NJS_NO_WEBSOCKET =
  'njs 0.7.9 has no WebSocket server API, so embedded mode cannot carry the websocket hooks; ' +
  'its build refuses such a handler and points to workers mode (this run serves fixture/http-only.ts)';
const FASTIFY_NOT_COVERED =
  'the Fastify mount serves routes through Fastify, which has no upgrade handling of its own (that is the ' +
  '@fastify/websocket plugin); WebSocket is served by tsgi serve and toNodeListener (listener.upgrade)';

const OPT_OUT = { 'nginx:embedded': NJS_NO_WEBSOCKET, 'node:fastify': FASTIFY_NOT_COVERED };

const SIZES = [1, ...EDGE_SIZES];

interface Stats {
  opened: number;
  messages?: number;
  closed?: { code: number; reason: string };
  errors?: number;
  maxBuffered?: number;
  sent?: number;
  user?: string;
}

const stats = (t: CaseContext, key: string): Promise<Stats> => expectJSON<Stats>(t, `/ws/stats?key=${key}`);

/** Polls /ws/stats until the close hook has run for `key`. */
async function closedStats(t: CaseContext, key: string): Promise<Stats> {
  const s = await t.poll(
    () => stats(t, key),
    (v) => v.closed !== undefined,
    15_000,
  );
  assert.ok(s.closed, `the close hook did not run: ${JSON.stringify(s)}`);
  return s;
}

async function withSocket<T>(t: CaseContext, path: string, fn: (c: WsClient) => Promise<T>, headers?: Record<string, string>): Promise<T> {
  const c = await openWs(t, path, headers);
  try {
    return await fn(c);
  } finally {
    c.ws.terminate();
  }
}

export const websocketCases: ConformanceCase[] = [
  {
    id: 'ws.echo-text',
    title: 'text messages echo byte-exact (1 B, 64 KiB-1, 64 KiB, 64 KiB+1, 300 KB of mixed UTF-8)',
    optOut: OPT_OUT,
    async run(t) {
      await withSocket(t, `/ws/echo?key=${t.key('wst')}`, async (c) => {
        for (const size of SIZES) {
          const msg = noiseText(size, size);
          c.ws.send(msg);
          const got = await c.next();
          assert.equal(got.binary, false, `${size}: came back as binary`);
          assert.equal(got.data.length, size, `${size}: length`);
          assert.ok(got.data.toString('utf8') === msg, `${size}: the text differs`);
        }
      });
    },
  },
  {
    id: 'ws.echo-binary',
    title: 'binary messages echo byte-exact (noise at 1 B, 64 KiB-1, 64 KiB, 64 KiB+1, 300 KB)',
    optOut: OPT_OUT,
    async run(t) {
      await withSocket(t, `/ws/echo?key=${t.key('wsb')}`, async (c) => {
        for (const size of SIZES) {
          const msg = noise(size, size + 7);
          c.ws.send(msg);
          const got = await c.next();
          assert.equal(got.binary, true, `${size}: came back as text`);
          bytesEqual(got.data, msg, `${size} bytes`);
        }
      });
    },
  },
  {
    id: 'ws.fragmented',
    title: 'a message sent in many frames reaches the hook whole (binary in 100 frames, text split inside characters)',
    optOut: OPT_OUT,
    async run(t) {
      await withSocket(t, `/ws/echo?key=${t.key('wsf')}`, async (c) => {
        const bin = noise(300_007, 99);
        const n = 100;
        const step = Math.ceil(bin.length / n);
        for (let i = 0; i < bin.length; i += step) {
          c.ws.send(bin.subarray(i, Math.min(bin.length, i + step)), { binary: true, fin: i + step >= bin.length });
        }
        const got = await c.next();
        assert.equal(got.binary, true);
        bytesEqual(got.data, bin, 'the fragmented binary message');
        // Text frames cut at odd byte offsets: most fragments end inside a multi-byte character.
        const text = noiseText(70_001, 5);
        const bytes = Buffer.from(text);
        let at = 0;
        for (const cut of [1, 7, 4093, 65_537, bytes.length]) {
          c.ws.send(bytes.subarray(at, cut), { binary: false, fin: cut === bytes.length });
          at = cut;
        }
        const back = await c.next();
        assert.equal(back.binary, false);
        assert.ok(back.data.toString('utf8') === text, 'the fragmented text message differs');
      });
    },
  },
  {
    id: 'ws.ping-pong',
    title: 'a ping is answered with a pong carrying the same payload',
    optOut: OPT_OUT,
    async run(t) {
      await withSocket(t, `/ws/echo?key=${t.key('wsp')}`, async (c) => {
        for (const payload of [Buffer.alloc(0), Buffer.from(noise(125, 3))]) {
          const pong = new Promise<Buffer>((r) => c.ws.once('pong', r));
          c.ws.ping(payload);
          bytesEqual(await pong, payload, 'pong payload');
        }
        // The socket still carries messages afterwards.
        c.ws.send('after');
        assert.equal((await c.next()).data.toString(), 'after');
      });
    },
  },
  {
    id: 'ws.close-by-server',
    title: 'peer.close(code, reason) reaches the client with both, and the close hook sees the handshake',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wscs');
      const c = await openWs(t, `/ws/close?key=${key}&code=4001&reason=${encodeURIComponent('server says bye é')}`);
      const got = await c.closed;
      assert.deepEqual(got, { code: 4001, reason: 'server says bye é' });
      const s = await closedStats(t, key);
      assert.equal(s.closed!.code, 4001);
    },
  },
  {
    id: 'ws.close-by-client',
    title: 'a client close with code and reason reaches the close hook with both',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wscc');
      const c = await openWs(t, `/ws/echo?key=${key}`);
      c.ws.send('x');
      await c.next();
      c.ws.close(4002, 'client says bye ü');
      const echoed = await c.closed;
      assert.equal(echoed.code, 4002, 'the server answers the close with the same code');
      const s = await closedStats(t, key);
      assert.deepEqual(s.closed, { code: 4002, reason: 'client says bye ü' });
      assert.equal(s.messages, 1);
    },
  },
  {
    id: 'ws.abrupt-disconnect',
    title: 'a client that drops the connection without a close frame: the close hook runs with 1006',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsx');
      const c = await openWs(t, `/ws/echo?key=${key}`);
      c.ws.send('x');
      await c.next();
      c.ws.terminate();
      const s = await closedStats(t, key);
      assert.equal(s.closed!.code, 1006, JSON.stringify(s));
      await stillFine(t);
    },
  },
  {
    id: 'ws.auth',
    title: 'authenticate refuses the upgrade with its 401 (no socket opens); with credentials the socket sees ctx.user',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsa');
      const r = await refusedWs(t, `/auth/accept?key=${key}`);
      assert.equal(r.status, 401);
      assert.equal(r.headers['www-authenticate'], 'Bearer realm="tsgi"');
      assert.equal(r.body, 'who are you?\n');
      assert.equal((await stats(t, key)).opened, 0, 'a socket opened for the refused upgrade');
      await withSocket(t, `/auth/accept?key=${key}`, async (c) => {
        c.ws.send('hello');
        // The handler's open hook greets with the user before echoing.
        const first = await c.next();
        assert.equal(first.data.toString(), 'user alice');
        assert.equal((await c.next()).data.toString(), 'hello');
      }, { authorization: 'Bearer good' });
      assert.equal((await stats(t, key)).user, 'alice');
    },
  },
  {
    id: 'ws.upgrade-refused',
    title: "the handler's upgrade hook refuses with its Response; a non-WebSocket upgrade is served by fetch",
    optOut: OPT_OUT,
    async run(t) {
      const r = await refusedWs(t, '/text');
      assert.equal(r.status, 404);
      assert.equal(r.body, 'no WebSocket here\n');
      const plain = await t.exchange(get(t, '/text', 'Connection: Upgrade\r\nUpgrade: h2c\r\n'));
      assert.equal(plain.status, 200, plain.head);
      assert.equal(plain.body.toString(), 'Hello, tsgi!');
      await stillFine(t);
    },
  },
  {
    id: 'ws.handshake-refused',
    title: 'a malformed handshake is refused before any hook: another method or a body 400, a bad key 400, version 12 426 naming 13',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsh');
      const up = (extra: string): string =>
        `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n${extra}`;
      const good = 'Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n';
      const path = `/ws/echo?key=${key}`;
      const post = await t.exchange(`POST ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${up(good)}Content-Length: 0\r\n\r\n`);
      assert.equal(post.status, 400, post.head);
      const body = await t.exchange(`GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${up(good)}Content-Length: 5\r\n\r\nhello`);
      assert.equal(body.status, 400, body.head);
      const badKey = await t.exchange(get(t, path, up('Sec-WebSocket-Key: short\r\n')));
      assert.equal(badKey.status, 400, badKey.head);
      const v12 = await t.exchange(get(t, path, `Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 12\r\n${good}`));
      assert.equal(v12.status, 426, v12.head);
      assert.equal(v12.get('sec-websocket-version'), '13', v12.head);
      assert.equal((await stats(t, key)).opened, 0, 'a socket opened for a refused handshake');
      await stillFine(t);
    },
  },
  {
    id: 'ws.garbage',
    title: 'bytes that are not WebSocket frames after the upgrade: the server closes with 1002 and keeps serving',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsg');
      const c = await openWs(t, `/ws/echo?key=${key}`);
      c.ws.send('x');
      await c.next();
      // An unmasked frame with a reserved opcode (0x3): a protocol error from a client.
      const sock = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
      sock.write(Buffer.from([0x83, 0x05, 0x68, 0x65, 0x6c, 0x6c, 0x6f]));
      const got = await c.closed;
      assert.equal(got.code, 1002, JSON.stringify(got));
      // The server stops reading at the bad frame, so its close hook sees the connection end, not the client's reply.
      await closedStats(t, key);
      await stillFine(t);
    },
  },
  {
    id: 'ws.hook-throws',
    title: 'a throw in the message hook goes to the error hook and closes the socket with 1011',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wse');
      const c = await openWs(t, `/ws/message-throws?key=${key}`);
      c.ws.send('boom');
      const got = await c.closed;
      assert.equal(got.code, 1011);
      const s = await closedStats(t, key);
      assert.equal(s.errors, 1);
    },
  },
  {
    id: 'ws.too-large',
    title: 'a message over the body limit closes the socket with 1009 (message too big)',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsl');
      const c = await openWs(t, `/ws/echo?key=${key}`);
      c.ws.send(new Uint8Array(CONFORMANCE_MAX_BODY + 1));
      const got = await c.closed;
      assert.equal(got.code, 1009);
      await closedStats(t, key);
      // Exactly the limit is a message like any other.
      await withSocket(t, `/ws/echo?key=${key}-ok`, async (ok) => {
        const msg = noise(CONFORMANCE_MAX_BODY, 11);
        ok.ws.send(msg);
        bytesEqual((await ok.next(60_000)).data, msg, 'a message of exactly the limit');
      });
    },
  },
  {
    id: 'ws.concurrent-200',
    title: '200 sockets open at once, each echoing its own messages',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('ws200');
      const clients: WsClient[] = [];
      try {
        for (let i = 0; i < 200; i += 20) {
          clients.push(...(await Promise.all(Array.from({ length: 20 }, (_, j) => openWs(t, `/ws/echo?key=${key}-${i + j}`)))));
        }
        await Promise.all(
          clients.map(async (c, i) => {
            const msg = noise(1000 + i, i + 1);
            c.ws.send(msg);
            c.ws.send(`socket ${i}`);
            bytesEqual((await c.next()).data, msg, `socket ${i}`);
            assert.equal((await c.next()).data.toString(), `socket ${i}`);
          }),
        );
        for (const c of clients) c.ws.close(1000, 'done');
        await Promise.all(clients.map((c) => c.closed));
      } finally {
        for (const c of clients) c.ws.terminate();
      }
      const last = await closedStats(t, `${key}-199`);
      assert.equal(last.closed!.code, 1000);
    },
  },
  {
    id: 'ws.mounted',
    title: 'under a mount prefix: the upgrade reaches the handler with ctx.basePath, and echoes (at the root too)',
    optOut: OPT_OUT,
    mount: 'also',
    async run(t) {
      const key = t.key('wsm');
      await withSocket(t, `${t.basePath}/ws/echo?key=${key}`, async (c) => {
        c.ws.send('mounted');
        assert.equal((await c.next()).data.toString(), 'mounted');
      });
      const s = await t.poll(
        () => expectJSON<Stats>(t, `${t.basePath}/ws/stats?key=${key}`),
        (v) => v.closed !== undefined,
        15_000,
      );
      assert.equal(s.messages, 1);
      // Outside the WebSocket routes (inside the mount), the handler's upgrade hook refuses.
      assert.equal((await refusedWs(t, `${t.basePath}/text`)).status, 404);
    },
  },
  {
    id: 'ws.backpressure',
    title: 'a client that does not read: the server holds a bounded amount unsent, then closes the socket with 1008',
    optOut: OPT_OUT,
    async run(t) {
      const key = t.key('wsbp');
      const c = await openWs(t, `/ws/flood?key=${key}`);
      // Stop reading: what the server sends piles up in the kernel, the proxy if any, then the server.
      const sock = (c.ws as unknown as { _socket: import('node:net').Socket })._socket;
      sock.pause();
      c.ws.send('go');
      const s = await t.poll(
        () => stats(t, key),
        (v) => (v.sent ?? 0) >= 1000 || (v.maxBuffered ?? 0) > 4 * 1024 * 1024,
        30_000,
      );
      // The fixture sends 64 KiB per tick up to 1000 (64 MiB); the server's limit is 4 MiB unsent per peer.
      assert.ok((s.maxBuffered ?? 0) <= 4 * 1024 * 1024 + 65536 + 1024, `the server buffered ${s.maxBuffered} bytes`);
      assert.ok((s.sent ?? 0) < 1000, `the server sent all 64 MiB to a client that does not read: ${JSON.stringify(s)}`);
      // Reading again, the client gets what was queued, then the server's close.
      sock.resume();
      let n = 0;
      c.ws.on('message', () => n++);
      const closed = await c.closed;
      assert.equal(closed.code, 1008, `close ${closed.code} ${closed.reason} after ${n} messages`);
      const end = await closedStats(t, key);
      assert.equal(end.closed!.code, 1008);
      await stillFine(t);
    },
  },
];
