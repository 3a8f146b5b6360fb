/**
 * The whole @tsgi/conformance suite against the three Node entry points:
 * `tsgi serve` as users run it (a separate process through the CLI),
 * toNodeListener on a plain http.Server, and the Fastify mount.
 */
import { once } from 'node:events';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll } from 'vitest';
import Fastify, { type FastifyInstance } from 'fastify';
import { describeConformance, fixtureHandlerPath, CONFORMANCE_MAX_BODY } from '@tsgi/conformance';
import { startCli, type RunningCli } from '@tsgi/conformance/testing';
import { loadHandler } from '@tsgi/core/node';
import { fastifyTsgi, toNodeListener } from '@tsgi/node-http';

// The fixture's error routes are expected to throw; keep their logs out of the
// test output but at hand for a failure message.
const adapterErrors: string[] = [];
const onError = (message: string): void => {
  adapterErrors.push(message);
};

// ---- 1. tsgi serve, a separate process ------------------------------------
let child: RunningCli | undefined;
let serveURL = '';

// ---- 1b. tsgi serve --location /app (ctx.basePath: the mount cases) -------
let mounted: RunningCli | undefined;
let mountedURL = '';

// ---- 2. toNodeListener on http.Server -------------------------------------
let plain: Server | undefined;
let plainURL = '';

// ---- 3. Fastify mount -------------------------------------------------------
let app: FastifyInstance | undefined;
let fastifyURL = '';

beforeAll(async () => {
  child = await startCli(
    ['serve', fixtureHandlerPath, '--port', '0', '--host', '127.0.0.1', '--max-body', String(CONFORMANCE_MAX_BODY)],
    /ready on (http:\/\/\S+?)\/?\s/,
  );
  serveURL = child.ready;
  mounted = await startCli(['serve', fixtureHandlerPath, '--port', '0', '--location', '/app'], /ready on (http:\/\/[^/\s]+)/);
  mountedURL = mounted.ready;

  const handler = await loadHandler(fixtureHandlerPath);
  const listener = toNodeListener(handler, { maxBodySize: CONFORMANCE_MAX_BODY, onError });
  await listener.ready;
  plain = createServer(listener);
  plain.on('upgrade', listener.upgrade);
  plain.listen(0, '127.0.0.1');
  await once(plain, 'listening');
  plainURL = `http://127.0.0.1:${(plain.address() as AddressInfo).port}`;

  app = Fastify();
  await app.register(fastifyTsgi, { handler, maxBodySize: CONFORMANCE_MAX_BODY, onError });
  fastifyURL = (await app.listen({ port: 0, host: '127.0.0.1' })).replace(/\/$/, '');
});

afterAll(async () => {
  // The fixture holds nothing past its bounded timers; SIGKILL only if shutdown hangs.
  await child?.stop(20_000);
  await mounted?.stop(20_000);
  if (plain) {
    plain.closeAllConnections();
    await new Promise((r) => plain!.close(r));
  }
  if (app) await app.close();
});

describeConformance({ name: 'tsgi serve (CLI process)', server: 'node', baseURL: () => serveURL });
describeConformance({ name: 'tsgi serve --location /app', server: 'node', baseURL: () => mountedURL, basePath: '/app' });
describeConformance({ name: 'toNodeListener on http.Server', server: 'node', baseURL: () => plainURL });
describeConformance({ name: 'Fastify mount (fastifyTsgi)', server: 'node', mode: 'fastify', baseURL: () => fastifyURL });
