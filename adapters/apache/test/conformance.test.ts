// The whole @tsgi/conformance suite through `tsgi apache run` (mod_tsgi + one Node worker).
import { afterAll, beforeAll } from 'vitest';
import { CONFORMANCE_MAX_BODY, describeConformance, fixtureHandlerPath } from '@tsgi/conformance';
import { startApache, type RunningApache } from './helpers.js';

let server: RunningApache;
// The same handler under --location /app (<Location /app>): the mount cases (ctx.basePath).
let mounted: RunningApache;

beforeAll(async () => {
  server = await startApache(fixtureHandlerPath, ['--processes', '1', '--max-body', String(CONFORMANCE_MAX_BODY)]);
  mounted = await startApache(fixtureHandlerPath, ['--processes', '1', '--location', '/app']);
});

afterAll(async () => {
  await server?.stop();
  await mounted?.stop();
});

describeConformance({ name: 'apache', server: 'apache', baseURL: () => server.url });
describeConformance({ name: 'apache --location /app', server: 'apache', baseURL: () => mounted.url, basePath: '/app' });
