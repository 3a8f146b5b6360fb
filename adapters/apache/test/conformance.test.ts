// The whole @tsgi/conformance suite through `tsgi apache run` (mod_tsgi + one Node worker).
import { afterAll, beforeAll } from 'vitest';
import { CONFORMANCE_MAX_BODY, describeConformance, fixtureHandlerPath } from '@tsgi/conformance';
import { startApache, type RunningApache } from './helpers.js';

let server: RunningApache;

beforeAll(async () => {
  server = await startApache(fixtureHandlerPath, ['--processes', '1', '--max-body', String(CONFORMANCE_MAX_BODY)]);
});

afterAll(async () => {
  await server?.stop();
});

describeConformance({ name: 'apache', server: 'apache', baseURL: () => server.url });
