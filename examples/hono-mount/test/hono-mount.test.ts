// The README's Hono snippet (examples/hono-mount) under `tsgi serve --location /app` and at the root.
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTsgi, type RunningTsgi } from '@tsgi/conformance/testing';

const handler = fileURLToPath(new URL('../handler.ts', import.meta.url));

describe('examples/hono-mount', () => {
  let app: RunningTsgi;
  let root: RunningTsgi;
  beforeAll(async () => {
    app = await startTsgi(['serve', handler, '--port', '0', '--location', '/app', '--no-access-log']);
    root = await startTsgi(['serve', handler, '--port', '0', '--no-access-log']);
  });
  afterAll(async () => {
    await app?.stop();
    await root?.stop();
  });

  it('under /app: the routes answer below the prefix, request.url keeps it', async () => {
    expect(await (await fetch(`${app.url}/app/hello/ann`)).text()).toBe('Hello, ann!\n');
    expect(await (await fetch(`${app.url}/app`)).text()).toBe('home\n');
    expect(await (await fetch(`${app.url}/app/where?x=1`)).json()).toEqual({ url: `${app.url}/app/where?x=1`, path: '/app/where' });
    // Outside the prefix: the server's 404, the app never sees it.
    const out = await fetch(`${app.url}/hello/ann`);
    expect(out.status).toBe(404);
    expect(await out.text()).toBe('Not Found\n');
  });

  it('at the root: the same app, unchanged', async () => {
    expect(await (await fetch(`${root.url}/hello/bo`)).text()).toBe('Hello, bo!\n');
    expect(await (await fetch(`${root.url}/`)).text()).toBe('home\n');
  });
});
