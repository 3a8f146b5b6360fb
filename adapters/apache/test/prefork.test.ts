// mod_tsgi under the prefork MPM (Debian's MPM beside mod_php; every other Apache test runs event): requests,
// a WebSocket tunnel byte-exact across 64 KiB, and the reload gate of a graceful restart with requests running.
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { noise } from '@tsgi/conformance/testing';
import { buildModule } from '../src/build.js';
import { apacheConf, childrenOf, cmdline, fixture, freePort, installWorker, stopPlain, waitFor } from './helpers.js';

let root: string;
let apache: ChildProcess;
let url: string;
let worker: string;

/** The Node workers below the Apache parent. */
const workerPids = (): number[] => childrenOf(apache.pid!).filter((p) => cmdline(p).includes(worker));

beforeAll(async () => {
  const so = (await buildModule()).so;
  root = mkdtempSync(join(tmpdir(), 'tsgi-prefork-'));
  chmodSync(root, 0o755);
  copyFileSync(fixture('websocket.ts'), join(root, 'app.ts'));
  worker = installWorker(join(root, 'install'));
  const port = await freePort();
  url = `http://127.0.0.1:${port}/`;
  writeFileSync(join(root, 'httpd.conf'), apacheConf(root, port, so, `
TsgiDaemon app handler=${root}/app.ts worker=${worker} processes=1
<Location />
  SetHandler tsgi
  TsgiDaemonName app
</Location>
`, 'prefork'));
  // Its own process group: prefork's parent stops with a SIGTERM to its whole group (killpg), which would take the test runner too.
  apache = spawn('apache2', ['-DFOREGROUND', '-f', join(root, 'httpd.conf')], { stdio: 'ignore', detached: true });
  await waitFor(async () => (await fetch(url, { signal: AbortSignal.timeout(5_000) }).catch(() => null))?.status === 200, 60_000, 'Apache (prefork) to answer');
}, 90_000);

afterAll(() => stopPlain(apache, root));

const errorLog = (): string => readFileSync(join(root, 'error.log'), 'utf8');
/** A request that gives up after 10 s: a prefork process is held by each keep-alive connection, so none may wait forever. */
const get = (path: string): Promise<Response> => fetch(url + path, { signal: AbortSignal.timeout(10_000) });
const workerPid = async (): Promise<number> => ((await (await get('stats')).json()) as { pid: number }).pid;

describe('mod_tsgi under the prefork MPM', () => {
  it('is the prefork MPM, and answers from the handler', async () => {
    expect(errorLog()).toMatch(/\[mpm_prefork:notice\]/);
    expect(await workerPid()).toBe(workerPids()[0]);
  });

  it('tunnels a WebSocket byte for byte on both sides of 64 KiB', async () => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}ws?k=prefork`, { perMessageDeflate: false, handshakeTimeout: 10_000 });
    await new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject));
    for (const size of [1, 65_535, 65_536, 65_537, 300_000]) {
      const msg = Buffer.from(noise(size, size));
      const got = new Promise<Buffer>((r) => ws.once('message', (d: Buffer) => r(d)));
      ws.send(msg);
      expect((await got).equals(msg), `${size} bytes`).toBe(true);
    }
    ws.close(1000);
    await new Promise((r) => ws.once('close', r));
  });

  it('a graceful restart with requests running: none fails, the new worker takes over once ready', async () => {
    const [before] = workerPids();
    let done = false;
    const failures: string[] = [];
    let served = 0;
    // Four clients, one request at a time each, until the new worker serves.
    const clients = Array.from({ length: 4 }, async () => {
      while (!done) {
        const r = await get('stats').catch((e: Error) => e);
        if (r instanceof Error || r.status !== 200) failures.push(r instanceof Error ? r.message : String(r.status));
        else {
          await r.arrayBuffer();
          served++;
        }
      }
    });
    await waitFor(() => served > 20, 10_000, 'requests to run');
    process.kill(apache.pid!, 'SIGUSR1');
    await waitFor(() => /reloaded: 1 new worker ready; the previous 1 drain/.test(errorLog()), 30_000, 'the reload notice');
    await waitFor(async () => (await workerPid()) !== before, 30_000, 'the new worker to serve');
    done = true;
    await Promise.all(clients);
    expect(failures).toEqual([]);
    await waitFor(() => !workerPids().includes(before!), 30_000, 'the previous worker to drain and exit');
  });
});
