// Slow clients through `tsgi apache run`: mod_reqtimeout is loaded, so connections that send
// their request head slowly are cut and cannot hold every thread (the event MPM reads a request
// head on a worker thread). A bounded slowloris: ATTACKERS connections, each sending a header
// line per second, for at most ATTACK_MS, then a normal request that must be answered while the
// attack still runs. The test shortens the header timeout so it stays quick; the defaults are
// checked in the generated config.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { makeContext } from '@tsgi/conformance';
import { fixture, startApache, type RunningApache } from './helpers.js';

// More than the 256 threads (4 children x 64) of the generated MPM settings.
const ATTACKERS = 300;
const ATTACK_MS = 25_000;
const HEADER_TIMEOUT_S = 3;

let server: RunningApache;
let dir: string;

beforeAll(async () => {
  dir = mkdtempSync('/tmp/tsgi-apache-slow-');
  // Without mod_reqtimeout this block is skipped, and nothing cuts the slow clients.
  writeFileSync(join(dir, 'timeout.conf'), `<IfModule reqtimeout_module>\n  RequestReadTimeout header=${HEADER_TIMEOUT_S},MinRate=500\n</IfModule>\n`);
  server = await startApache(fixture('wire.ts'), ['--processes', '1', '--include', join(dir, 'timeout.conf')]);
});

afterAll(async () => {
  await server?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('slow clients (mod_reqtimeout)', () => {
  it('the generated config loads mod_reqtimeout with its limits', () => {
    const conf = readFileSync(join(server.root, 'httpd.conf'), 'utf8');
    expect(conf).toMatch(/LoadModule reqtimeout_module \S+mod_reqtimeout\.so/);
    expect(conf).toMatch(/^RequestReadTimeout handshake=5 header=20-40,MinRate=500 body=20,MinRate=500$/m);
  });

  it(`${ATTACKERS} slowloris connections do not starve a normal request`, { timeout: ATTACK_MS + 30_000 }, async () => {
    const { port } = server;
    const socks: Socket[] = [];
    const end = Date.now() + ATTACK_MS;
    const cut = new Set<Socket>();
    const ticker = setInterval(() => {
      for (const s of socks) if (!s.destroyed) s.write('X-Slow: 1\r\n');
    }, 1000);
    try {
      await Promise.all(
        Array.from({ length: ATTACKERS }, () =>
          new Promise<void>((res) => {
            const s = connect(port, '127.0.0.1', () => {
              s.write('GET /slow HTTP/1.1\r\nHost: x\r\n');
              res();
            });
            s.on('error', () => res());
            // The server answers 408 and closes: either shows it cut this one.
            const gone = () => cut.add(s);
            s.on('data', gone);
            s.on('close', gone);
            socks.push(s);
          }),
        ),
      );
      // A fresh connection: the event MPM closes a kept-alive one that finds no idle thread.
      const r = await makeContext(server.url, { server: 'apache' }).exchange(`GET /text HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`, { timeoutMs: ATTACK_MS });
      const answeredBeforeAttackEnd = Date.now() < end;
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe('ok');
      expect(answeredBeforeAttackEnd, 'the request waited for the attack to stop').toBe(true);
      // The slow clients were cut by the server, not by us.
      expect(cut.size).toBeGreaterThan(0);
    } finally {
      clearInterval(ticker);
      for (const s of socks) s.destroy();
    }
  });
});
