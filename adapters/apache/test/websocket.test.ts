// WebSocket through mod_tsgi's tunnel, what only Apache has (the behaviour every host shares is in the
// conformance matrix, conformance/src/cases/websocket.ts): the access log's 101, max-inflight counting open
// sockets, the Apache thread freed when a client vanishes, a worker killed with a socket open; over TLS
// (mod_ssl: the tunnel goes through the connection's filters) with ws-idle-timeout.
import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { noise } from '@tsgi/conformance/testing';
import { buildModule } from '../src/build.js';
import { DEBIAN_MODULES } from '../src/config.js';
import { apacheConf, fixture, freePort, installWorker, startApache, stopPlain, waitFor, workerPids, type RunningApache } from './helpers.js';

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
  return openAt(s.url.replace(/^http/, 'ws'));
}

/** Opens an echo socket under `base` (ws:// or wss://, ending in /). */
function openAt(base: string, tls = false): Promise<Socket> {
  const key = `k${process.pid}-${++seq}`;
  const ws = new WebSocket(`${base}ws?k=${key}`, { perMessageDeflate: false, handshakeTimeout: 10_000, rejectUnauthorized: !tls });
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

describe('WebSocket through Apache over TLS (mod_ssl)', () => {
  let root: string;
  let apache: ChildProcess;
  let port: number;

  beforeAll(async () => {
    const so = (await buildModule()).so;
    root = mkdtempSync(join(tmpdir(), 'tsgi-ws-tls-'));
    chmodSync(root, 0o755);
    copyFileSync(fixture('websocket.ts'), join(root, 'websocket.ts'));
    const worker = installWorker(join(root, 'install'));
    execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=localhost',
      '-keyout', join(root, 'key.pem'), '-out', join(root, 'cert.pem')], { stdio: 'ignore' });
    port = await freePort();
    writeFileSync(join(root, 'httpd.conf'), apacheConf(root, port, so, `
LoadModule ssl_module ${DEBIAN_MODULES}/mod_ssl.so
SSLEngine on
SSLCertificateFile ${root}/cert.pem
SSLCertificateKeyFile ${root}/key.pem
TsgiDaemon ws handler=${root}/websocket.ts worker=${worker} processes=1 ws-idle-timeout=1
<Location />
  SetHandler tsgi
  TsgiDaemonName ws
</Location>
`));
    apache = spawn('apache2', ['-DFOREGROUND', '-f', join(root, 'httpd.conf')], { stdio: 'ignore' });
    await waitFor(() => open().then((c) => (c.ws.terminate(), true), () => false), 60_000, 'Apache with TLS');
  }, 90_000);

  afterAll(() => stopPlain(apache, root));

  // The certificate is self-signed: not verified.
  const open = (): Promise<Socket> => openAt(`wss://127.0.0.1:${port}/`, true);

  it('echoes byte-exact across the 64 KiB chunk size, then ws-idle-timeout closes a quiet socket', async () => {
    const c = await open();
    for (const size of [1, 65_535, 65_536, 65_537, 300_000]) await echo(c, size);
    // Nothing more either way: Apache ends the tunnel after ws-idle-timeout (1 s), the client sees the connection end.
    expect(await c.closed).toBe(1006);
    await waitFor(() => /^101 /m.test(readFileSync(join(root, 'access.log'), 'utf8')), 10_000, 'the 101 access log line');
  });
});
