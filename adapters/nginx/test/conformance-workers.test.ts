// The whole conformance suite against `tsgi nginx run --workers 1` (nginx in front of one Node worker).
import { afterAll, beforeAll } from 'vitest';
import { CONFORMANCE_MAX_BODY, describeConformance, fixtureHandlerPath } from '@tsgi/conformance';
import { startNginx, type Running } from './helpers.js';

let srv: Running;
beforeAll(async () => {
  srv = await startNginx(fixtureHandlerPath, ['--workers', '1', '--max-body', String(CONFORMANCE_MAX_BODY)]);
});
afterAll(async () => {
  await srv?.stop();
});

describeConformance({ name: 'nginx workers', server: 'nginx', mode: 'workers', baseURL: () => srv.url });
