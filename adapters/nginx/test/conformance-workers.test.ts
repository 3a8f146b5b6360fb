// The whole conformance suite against `tsgi nginx run --workers 1` (nginx in front of one Node worker).
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CONFORMANCE_MAX_BODY, cases, describeConformance, fixtureHandlerPath, makeContext } from '@tsgi/conformance';
import { startNginx, type Running } from './helpers.js';

let srv: Running;
// The same handler under --location /app: the mount cases (ctx.basePath).
let mounted: Running;
beforeAll(async () => {
  srv = await startNginx(fixtureHandlerPath, ['--workers', '1', '--max-body', String(CONFORMANCE_MAX_BODY)]);
  mounted = await startNginx(fixtureHandlerPath, ['--workers', '1', '--location', '/app']);
});
afterAll(async () => {
  await srv?.stop();
  await mounted?.stop();
});

describeConformance({ name: 'nginx workers', server: 'nginx', mode: 'workers', baseURL: () => srv.url });
describeConformance({ name: 'nginx workers --location /app', server: 'nginx', mode: 'workers', baseURL: () => mounted.url, basePath: '/app' });

// A race, so once is not enough: nginx proxying an upload unbuffered closes the client's connection
// when the worker's answer ends before nginx has read the whole body (the worker holds its end for that).
it('conn.unread-body 40 times in a row (the worker answers before nginx has read the upload)', { timeout: 60_000 }, async () => {
  const unread = cases.find((c) => c.id === 'conn.unread-body')!;
  const t = makeContext(srv.url, { server: 'nginx', mode: 'workers' });
  for (let i = 0; i < 40; i++) await unread.run(t);
});

// The worker reads the client's request line twice (the forwarded line and X-Tsgi-Request): it must not
// refuse a head that nginx accepted (a request line up to one 32 KiB large_client_header_buffers buffer).
it('a 30 KiB request target reaches the handler whole', async () => {
  const q = 'q'.repeat(30 * 1024);
  const r = await fetch(`${srv.url}/echo/url?a=${q}`);
  expect(r.status).toBe(200);
  expect(((await r.json()) as { a: string[] }).a).toEqual([q]);
});
