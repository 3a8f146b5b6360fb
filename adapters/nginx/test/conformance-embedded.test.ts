// The whole conformance suite against `tsgi nginx run` in embedded mode (njs 0.7.9 inside nginx).
// Embedded-only opt-outs, each with its reason, live in the suite's case table (@tsgi/conformance).
// It serves the fixture without its WebSocket members (fixture/http-only.ts): the embedded build refuses those.
import { afterAll, beforeAll } from 'vitest';
import { CONFORMANCE_MAX_BODY, describeConformance, httpOnlyFixturePath } from '@tsgi/conformance';
import { startNginx, type Running } from './helpers.js';

let srv: Running;
// The same handler under --location /app: the mount cases (ctx.basePath).
let mounted: Running;
beforeAll(async () => {
  srv = await startNginx(httpOnlyFixturePath, ['--max-body', String(CONFORMANCE_MAX_BODY)]);
  mounted = await startNginx(httpOnlyFixturePath, ['--location', '/app']);
});
afterAll(async () => {
  await srv?.stop();
  await mounted?.stop();
});

describeConformance({ name: 'nginx embedded', server: 'nginx', mode: 'embedded', baseURL: () => srv.url });
describeConformance({ name: 'nginx embedded --location /app', server: 'nginx', mode: 'embedded', baseURL: () => mounted.url, basePath: '/app' });
