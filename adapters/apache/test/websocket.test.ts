// WebSocket through mod_tsgi's tunnel, what only Apache has (the behaviour every host shares is in the
// conformance matrix, conformance/src/cases/websocket.ts): the access log's 101, max-inflight counting open
// sockets, the Apache thread freed when a client vanishes, a worker killed with a socket open.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { noise } from '@tsgi/conformance/testing';
import { fixture, startApache, waitFor, workerPids, type RunningApache } from './helpers.js';

let server: RunningApache;
let limited: RunningApache;
let seq = 0;

beforeAll(async () => {
  // Two threads per child: a tunnel that kept its thread would soon leave none (4 children at most: 8 threads).
  [server, limited] = await Promise.all([
    startApache(fixture('websocket.ts'), ['--processes', '1', '--threads', '2']),
    startApache(fixture('websocket.ts'), ['--processes', '1', '--max-inflight', '1']),
  ]);
}, 120_000);

afterAll(async () => {
  await Promise.all([server?.stop(), limited?.stop()]);
});

interface Socket {
  ws: WebSocket;
  key: string;
  next(): Promise<Buffer>;
  closed: Promise<number>;
}

/** Opens an echo socket; rejects with the HTTP status when the upgrade is refused. */
function open(s: RunningApache): Promise<Socket> {
  const key = `k${process.pid}-${++seq}`;
  const ws = new WebSocket(`${s.url.replace(/^http/, 'ws')}ws?k=${key}`, { perMessageDeflate: false, handshakeTimeout: 10_000 });
  const got: Buffer[] = [];
  const waiting: ((b: Buffer) => void)[] = [];
  ws.on('message', (d: Buffer) => (waiting.length ? waiting.shift()!(d) : got.push(d)));
  const closed = new Promise<number>((r) => ws.on('close', (code) => r(code)));
  return new Promise((resolve, reject) => {
    ws.on('error', reject);
    ws.on('unexpected-response', (_req, res) => {
      res.resume();
      ws.terminate();
      reject(new Error(`status ${res.statusCode}`));
    });
    ws.on('open', () =>
      resolve({ ws, key, closed, next: () => (got.length ? Promise.resolve(got.shift()!) : new Promise((r) => waiting.push(r))) }),
    );
  });
}

async function echo(c: Socket, size: number): Promise<void> {
  const msg = Buffer.from(noise(size, size));
  c.ws.send(msg);
  expect((await c.next()).equals(msg)).toBe(true);
}

interface Stats {
  opened: number;
  closed: Record<string, number>;
  pid: number;
}

const stats = async (s: RunningApache): Promise<Stats> => (await fetch(`${s.url}stats`)).json() as Promise<Stats>;

describe('WebSocket through Apache', () => {
  it('Apache logs the upgrade with status 101 once the socket closes', async () => {
    const c = await open(server);
    await echo(c, 100);
    c.ws.close(1000);
    await c.closed;
    await waitFor(() => new RegExp(`"GET /ws\\?k=${c.key} HTTP/1.1" 101 \\d+`).test(server.access()), 10_000, 'the 101 access log line');
  });

  it('an open socket holds its in-flight slot: with max-inflight 1 the next request is refused until it closes', async () => {
    const c = await open(limited);
    await echo(c, 10);
    await expect(open(limited)).rejects.toThrow('status 503');
    expect((await fetch(`${limited.url}stats`)).status).toBe(503);
    c.ws.close(1000);
    await c.closed;
    await waitFor(async () => (await fetch(`${limited.url}stats`)).status === 200, 10_000, 'the slot to be freed');
    const d = await open(limited);
    await echo(d, 70_000);
    d.ws.close(1000);
    await d.closed;
  });

  it('clients that vanish without a close frame: each close hook sees 1006 and the Apache thread is freed', async () => {
    // 12 tunnels that kept their threads would be more than the 8 Apache has.
    for (let i = 0; i < 12; i++) {
      const c = await open(server);
      await echo(c, 1000);
      c.ws.terminate();
      await waitFor(async () => (await stats(server)).closed[c.key] === 1006, 10_000, `close hook of socket ${i}`);
    }
    const both = await Promise.all([open(server), open(server)]);
    await Promise.all(both.map((c) => echo(c, 65_537)));
    for (const c of both) c.ws.close(1000);
    await Promise.all(both.map((c) => c.closed));
  });

  it('a worker killed with a socket open: the client sees the connection end (1006), the next upgrade works', async () => {
    const c = await open(server);
    await echo(c, 10);
    const [pid] = workerPids(server.pid);
    process.kill(pid!, 'SIGKILL');
    expect(await c.closed).toBe(1006);
    await waitFor(() => workerPids(server.pid).some((p) => p !== pid), 30_000, 'a new worker');
    let d: Socket | null = null;
    await waitFor(async () => (d = await open(server).catch(() => null)) !== null, 30_000, 'an upgrade on the new worker');
    d = d!;
    await echo(d, 300_000);
    d.ws.close(1000);
    expect(await d.closed).toBe(1000);
  });
});
