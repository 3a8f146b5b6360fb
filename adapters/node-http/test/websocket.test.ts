// node-http's websocket.ts beyond the conformance cases: the host's own answers to a bad handshake, a
// handler without websocket, the log hook at close, the buffer limit option, and no in-flight slot left over.
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { afterAll, afterEach, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { Handler, LogEntry } from '@tsgi/core';
import { waitFor } from '@tsgi/conformance/testing';
import { toNodeListener, type NodeListener } from '@tsgi/node-http';

const servers: Server[] = [];
afterAll(async () => {
  for (const s of servers) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

async function listen(handler: Handler, opts: Parameters<typeof toNodeListener>[1] = {}): Promise<{ l: NodeListener; port: number; errors: string[] }> {
  const errors: string[] = [];
  const l = toNodeListener(handler, { onError: (m) => void errors.push(m), ...opts });
  await l.ready;
  const s = createServer(l);
  s.on('upgrade', l.upgrade);
  s.listen(0, '127.0.0.1');
  await once(s, 'listening');
  servers.push(s);
  return { l, port: (s.address() as AddressInfo).port, errors };
}

/** A raw request on a fresh connection, read to the server's close. */
function raw(port: number, head: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = connect(port, '127.0.0.1', () => c.write(head));
    let got = '';
    c.on('data', (d) => (got += d.toString('latin1')));
    c.on('end', () => resolve(got));
    c.on('error', reject);
    c.setTimeout(10_000, () => {
      c.destroy();
      reject(new Error(`no close; got ${JSON.stringify(got)}`));
    });
  });
}

const KEY = 'dGhlIHNhbXBsZSBub25jZQ==';
const upgradeHead = (path: string, extra = `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 13\r\n`, method = 'GET'): string =>
  `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n${extra}\r\n`;

const echo: Handler = { fetch: () => new Response('plain'), websocket: { message: (p, m) => void p.send(m) } };

let current: NodeListener | undefined;
afterEach(async () => {
  // Every socket of the test closed: no in-flight slot is left (shutdown would wait for it).
  if (current) await waitFor(() => current!.lifecycle.inflight === 0, 10_000, 'the in-flight slots to be freed');
  current = undefined;
});

describe('websocket.ts: the handshake', () => {
  it('a handler without websocket answers an upgrade through fetch, then closes the connection', async () => {
    const { l, port } = await listen({ fetch: (r) => new Response(`fetch saw ${new URL(r.url).pathname}`) });
    current = l;
    const got = await raw(port, upgradeHead('/chat'));
    expect(got).toMatch(/^HTTP\/1\.1 200 OK\r\n/);
    expect(got).toMatch(/\r\nconnection: close\r\n/i);
    expect(got.endsWith('\r\n\r\nfetch saw /chat')).toBe(true);
  });

  it('a malformed key or a non-GET is 400, another version 426 naming 13; no hook runs', async () => {
    const ran: string[] = [];
    const { l, port } = await listen({
      fetch: () => new Response('no'),
      authenticate: () => void ran.push('authenticate'),
      websocket: { open: () => void ran.push('open') },
    });
    current = l;
    expect(await raw(port, upgradeHead('/', 'Sec-WebSocket-Key: short\r\nSec-WebSocket-Version: 13\r\n'))).toMatch(/^HTTP\/1\.1 400 Bad Request\r\n/);
    expect(await raw(port, upgradeHead('/', 'Sec-WebSocket-Version: 13\r\n'))).toMatch(/^HTTP\/1\.1 400 /);
    expect(await raw(port, upgradeHead('/', undefined, 'POST'))).toMatch(/^HTTP\/1\.1 400 /);
    const v8 = await raw(port, upgradeHead('/', `Sec-WebSocket-Key: ${KEY}\r\nSec-WebSocket-Version: 8\r\n`));
    expect(v8).toMatch(/^HTTP\/1\.1 426 Upgrade Required\r\n/);
    expect(v8).toMatch(/\r\nsec-websocket-version: 13\r\n/i);
    expect(ran).toEqual([]);
  });

  it('a refusal from upgrade is written whole and the connection closes; log runs with its status', async () => {
    const logs: LogEntry[] = [];
    const { l, port } = await listen({
      fetch: () => new Response('no'),
      upgrade: () => new Response('go away\n', { status: 403, headers: { 'x-why': 'test' } }),
      log: (e) => void logs.push(e),
      websocket: {},
    });
    current = l;
    const got = await raw(port, upgradeHead('/r'));
    expect(got).toMatch(/^HTTP\/1\.1 403 Forbidden\r\n/);
    expect(got).toMatch(/\r\nx-why: test\r\n/i);
    expect(got.endsWith('\r\n\r\ngo away\n')).toBe(true);
    await waitFor(() => logs.length === 1, 5_000, 'the log hook');
    expect(logs[0]).toMatchObject({ method: 'GET', url: 'http://x/r', status: 403 });
  });

  it('draining: an upgrade gets 503 and opens nothing', async () => {
    const { l, port } = await listen(echo);
    current = l;
    l.draining = true;
    try {
      expect(await raw(port, upgradeHead('/'))).toMatch(/^HTTP\/1\.1 503 /);
    } finally {
      l.draining = false;
    }
  });
});

describe('websocket.ts: an open socket', () => {
  it('log runs once the socket has closed: status 101, the payload bytes sent, the user; request.signal aborts then', async () => {
    const logs: LogEntry[] = [];
    let signal: AbortSignal | undefined;
    const { l, port } = await listen({
      fetch: () => new Response(''),
      authenticate: () => ({ user: 'ann' }),
      log: (e) => void logs.push(e),
      websocket: {
        open: (p) => void (signal = p.request.signal),
        message: (p, m) => void p.send(m),
      },
    });
    current = l;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/log?x=1`);
    await once(ws, 'open');
    ws.send('héllo');
    await once(ws, 'message');
    ws.send(new Uint8Array(10));
    await once(ws, 'message');
    expect(logs).toEqual([]);
    ws.close(1000);
    await waitFor(() => logs.length === 1, 5_000, 'the log hook');
    expect(logs[0]).toMatchObject({ method: 'GET', url: `http://127.0.0.1:${port}/log?x=1`, status: 101, bytes: 16, user: 'ann' });
    // The upgrade request's signal lives as long as the socket.
    expect(signal?.aborted).toBe(true);
  });

  it('maxWebSocketBuffered: once that much is unsent, send closes with 1008 and returns false', async () => {
    const results: boolean[] = [];
    const { l, port } = await listen(
      {
        fetch: () => new Response(''),
        websocket: {
          message(p) {
            // 200 x 64 KiB in one go to a client that does not read: the kernel's buffers fill, then ours.
            for (let i = 0; i < 200; i++) results.push(p.send(new Uint8Array(64 * 1024)));
          },
        },
      },
      { maxWebSocketBuffered: 100 * 1024 },
    );
    current = l;
    const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
    await once(ws, 'open');
    const sock = (ws as unknown as { _socket: import('node:net').Socket })._socket;
    sock.pause();
    ws.send('go');
    await waitFor(() => results.length === 200, 5_000, 'the sends');
    const first = results.indexOf(false);
    expect(first).toBeGreaterThan(0);
    expect(results.slice(first).every((r) => !r)).toBe(true);
    sock.resume();
    const [code] = (await once(ws, 'close')) as [number];
    expect(code).toBe(1008);
  });

  it('closeSockets sends 1001 to every open socket and resolves when they are gone', async () => {
    const { l, port } = await listen(echo);
    current = l;
    const clients = await Promise.all(
      [1, 2, 3].map(async () => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/`);
        await once(ws, 'open');
        return ws;
      }),
    );
    const codes = clients.map((ws) => once(ws, 'close').then(([c]) => c as number));
    await l.closeSockets();
    expect(await Promise.all(codes)).toEqual([1001, 1001, 1001]);
    expect(l.lifecycle.inflight).toBe(0);
  });

  it('a client gone before the upgrade hook answered: nothing opens, the slot is freed', async () => {
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const opened: string[] = [];
    const { l, port } = await listen({ fetch: () => new Response(''), upgrade: () => held, websocket: { open: () => void opened.push('open') } });
    current = l;
    const c = connect(port, '127.0.0.1', () => c.write(upgradeHead('/')));
    await waitFor(() => l.lifecycle.inflight === 1, 5_000, 'the upgrade to be in the pipeline');
    c.destroy();
    await new Promise((r) => setTimeout(r, 50));
    release();
    await waitFor(() => l.lifecycle.inflight === 0, 5_000, 'the slot to be freed');
    expect(opened).toEqual([]);
  });
});
