/**
 * The whole @tsgi/conformance suite against the three Node entry points:
 * `tsgi serve` as users run it (a separate process through the CLI),
 * toNodeListener on a plain http.Server, and the Fastify mount.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll } from 'vitest';
import Fastify, { type FastifyInstance } from 'fastify';
import { describeConformance, fixtureHandlerPath, CONFORMANCE_MAX_BODY } from '@tsgi/conformance';
import { loadHandler } from '@tsgi/core/node';
import { fastifyTsgi, toNodeListener } from '@tsgi/node-http';

const tsgiBin = fileURLToPath(new URL('../../../cli/bin/tsgi.js', import.meta.url));

// The fixture's error routes are expected to throw; keep their logs out of the
// test output but at hand for a failure message.
const adapterErrors: string[] = [];
const onError = (message: string): void => {
  adapterErrors.push(message);
};

// ---- 1. tsgi serve, a separate process ------------------------------------
let child: ChildProcess | undefined;
let childOutput = '';
let serveURL = '';

// ---- 2. toNodeListener on http.Server -------------------------------------
let plain: Server | undefined;
let plainURL = '';

// ---- 3. Fastify mount -------------------------------------------------------
let app: FastifyInstance | undefined;
let fastifyURL = '';

function startServe(): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(
      process.execPath,
      [tsgiBin, 'serve', fixtureHandlerPath, '--port', '0', '--host', '127.0.0.1', '--max-body', String(CONFORMANCE_MAX_BODY)],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child = p;
    const onData = (d: Buffer) => {
      childOutput += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(childOutput);
      if (m) resolve(m[1]!.replace(/\/$/, ''));
    };
    p.stdout!.on('data', onData);
    p.stderr!.on('data', (d: Buffer) => {
      childOutput += d.toString();
    });
    p.once('exit', (code) => reject(new Error(`tsgi serve exited with ${code} before listening:\n${childOutput}`)));
    p.once('error', reject);
  });
}

beforeAll(async () => {
  serveURL = await startServe();

  const handler = await loadHandler(fixtureHandlerPath);
  const listener = toNodeListener(handler, { maxBodySize: CONFORMANCE_MAX_BODY, onError });
  await listener.ready;
  plain = createServer(listener);
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  plainURL = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;

  app = Fastify();
  await app.register(fastifyTsgi, { handler, maxBodySize: CONFORMANCE_MAX_BODY, onError });
  fastifyURL = (await app.listen({ port: 0, host: '127.0.0.1' })).replace(/\/$/, '');
});

afterAll(async () => {
  if (child && child.exitCode === null) {
    const exited = once(child, 'exit');
    child.kill('SIGTERM');
    // The fixture holds nothing past its bounded timers; SIGKILL only if shutdown hangs.
    const t = setTimeout(() => child?.kill('SIGKILL'), 20_000);
    await exited;
    clearTimeout(t);
  }
  if (plain) {
    plain.closeAllConnections();
    await new Promise((r) => plain!.close(r));
  }
  if (app) await app.close();
});

describeConformance({ name: 'tsgi serve (CLI process)', server: 'node', baseURL: () => serveURL });
describeConformance({ name: 'toNodeListener on http.Server', server: 'node', baseURL: () => plainURL });
describeConformance({ name: 'Fastify mount (fastifyTsgi)', server: 'node', baseURL: () => fastifyURL });
