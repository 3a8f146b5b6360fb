import { once } from 'node:events';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import Fastify from 'fastify';
import { Response as FastResponse, defineHandler } from '@tsgi/core';
import { runCli, startCli, type RunningCli } from '@tsgi/conformance/testing';
import { fastifyTsgi, serve, toNodeListener } from '@tsgi/node-http';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-node-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const file = (name: string, text: string): string => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

async function run(args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const r = await runCli(args, 20_000);
  return { code: r.code, out: r.stdout, err: r.stderr };
}

/** Starts `tsgi serve` and resolves when it prints its URL. */
function start(args: string[]): Promise<RunningCli> {
  return startCli(['serve', ...args, '--port', '0'], /ready on (\S+)/);
}

describe('tsgi serve: start-up errors are one clear line and a non-zero exit', () => {
  it('wrong handler path', async () => {
    const r = await run(['serve', join(dir, 'missing.ts')]);
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/handler not found: .*missing\.ts/);
  });
  it('module without fetch', async () => {
    const r = await run(['serve', file('nofetch.ts', 'export default { hello: 1 };')]);
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/default export must be an object with a fetch/);
  });
  it('module that does not compile', async () => {
    const r = await run(['serve', file('syntax.ts', 'export default { fetch( ')]);
    expect(r.code).not.toBe(0);
    expect(r.err.trim().split('\n')).toHaveLength(1);
    expect(r.err).toMatch(/cannot compile handler .*syntax\.ts/);
  });
  it('failing init, single process and workers', async () => {
    const h = file('badinit.ts', 'export default { fetch: () => new Response("x"), async init() { throw new Error("db down"); } };');
    for (const extra of [[], ['--workers', '2']]) {
      const r = await run(['serve', h, '--port', '0', ...extra]);
      expect(r.code).not.toBe(0);
      expect(r.err.trim().split('\n')).toHaveLength(1);
      expect(r.err).toMatch(/handler init failed: db down/);
    }
  });
  it('bad flags', async () => {
    const r = await run(['serve', file('ok.ts', 'export default { fetch: () => new Response("x") };'), '--workers', 'two']);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--workers must be an integer/);
  });
});

describe('workers: N', () => {
  let srv: RunningCli;
  let url: string;
  beforeAll(async () => {
    const h = file(
      'pid.ts',
      `export default { fetch(req: Request) {
        if (new URL(req.url).pathname === '/crash') setTimeout(() => process.exit(3), 10);
        return new Response(String(process.pid));
      } };`,
    );
    srv = await start([h, '--workers', '2']);
    url = srv.ready;
  });
  afterAll(() => {
    srv.proc.kill('SIGKILL');
  });

  it('serves from several processes and respawns a crashed one', async () => {
    const pids = new Set<string>();
    for (let i = 0; i < 40 && pids.size < 2; i++) {
      pids.add(await (await fetch(url, { headers: { connection: 'close' } })).text());
    }
    expect(pids.size).toBe(2);
    await (await fetch(new URL('/crash', url), { headers: { connection: 'close' } })).text();
    await new Promise((r) => setTimeout(r, 1500));
    const after = new Set<string>();
    for (let i = 0; i < 40 && after.size < 2; i++) {
      after.add(await (await fetch(url, { headers: { connection: 'close' } })).text());
    }
    expect(after.size).toBe(2);
  });

  it('SIGTERM stops gracefully with exit 0', async () => {
    expect(await srv.stop()).toBe(0);
  });
});

describe('graceful shutdown', () => {
  it('drains in-flight requests and waitUntil work, then runs close()', async () => {
    const events: string[] = [];
    const server = await serve(
      defineHandler({
        async fetch(_req, ctx) {
          ctx.waitUntil(new Promise((r) => setTimeout(r, 300)).then(() => events.push('waitUntil done')));
          await new Promise((r) => setTimeout(r, 200));
          events.push('response');
          return new Response('slow');
        },
        close() {
          events.push('close');
        },
      }),
      { port: 0, handleSignals: false },
    );
    const pending = fetch(server.url).then((r) => r.text());
    await new Promise((r) => setTimeout(r, 50));
    await server.close();
    expect(await pending).toBe('slow');
    expect(events).toEqual(['response', 'waitUntil done', 'close']);
  });
});

describe('no global patching; the lazy request is a real Request', () => {
  let server: Server;
  let base: string;
  const seen: Record<string, unknown> = {};
  beforeAll(async () => {
    const before = { Request: globalThis.Request, Response: globalThis.Response, Headers: globalThis.Headers };
    server = createServer(
      toNodeListener({
        async fetch(req) {
          seen.instanceof = req instanceof Request;
          const copy = new Request(req);
          seen.copyUrl = copy.url;
          seen.copyMethod = copy.method;
          seen.copyHeader = copy.headers.get('x-test');
          seen.cache = req.cache;
          seen.body = await copy.text();
          const r = new FastResponse('fast', { status: 201 });
          seen.fastInstanceof = r instanceof Response;
          seen.fastStatus = r.status;
          return r;
        },
      }),
    );
    server.listen(0, '127.0.0.1');
    await once(server, 'listening');
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    expect(globalThis.Request).toBe(before.Request);
    expect(globalThis.Response).toBe(before.Response);
    expect(globalThis.Headers).toBe(before.Headers);
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('instanceof, new Request(request) and native-only fields work', async () => {
    const res = await fetch(`${base}/x?y=1`, { method: 'POST', body: 'payload', headers: { 'x-test': 'yes' } });
    expect(res.status).toBe(201);
    expect(await res.text()).toBe('fast');
    expect(seen).toEqual({
      instanceof: true,
      copyUrl: `${base}/x?y=1`,
      copyMethod: 'POST',
      copyHeader: 'yes',
      cache: 'default',
      body: 'payload',
      fastInstanceof: true,
      fastStatus: 201,
    });
  });

  it('a request line Node cannot parse gets 400 and the server stays up', async () => {
    const net = await import('node:net');
    const sock = net.connect((server.address() as AddressInfo).port, '127.0.0.1');
    sock.write('GARBAGE\r\n\r\n');
    const [data] = await once(sock, 'data');
    expect(String(data)).toMatch(/^HTTP\/1\.1 400/);
    sock.destroy();
    expect((await fetch(base, { method: 'POST', body: 'x' })).status).toBe(201);
  });
});

describe('Fastify mount', () => {
  it("runs Fastify's hooks around the handler, under a prefix (ctx.basePath)", async () => {
    const app = Fastify();
    const hooks: string[] = [];
    app.addHook('onRequest', async () => void hooks.push('onRequest'));
    app.addHook('onSend', async (_req, reply) => {
      hooks.push('onSend');
      reply.header('x-fastify', 'yes');
    });
    app.addHook('onResponse', async () => void hooks.push('onResponse'));
    app.get('/other', async () => 'fastify route');
    await app.register(fastifyTsgi, {
      prefix: '/api',
      handler: { fetch: (req: Request, ctx: { basePath: string }) => new Response(`tsgi ${new URL(req.url).pathname} at ${ctx.basePath}`) },
    });
    await app.listen({ port: 0, host: '127.0.0.1' });
    const base = `http://127.0.0.1:${(app.server.address() as AddressInfo).port}`;
    try {
      const res = await fetch(`${base}/api/items`);
      // ctx.basePath is the plugin's prefix; request.url keeps it.
      expect(await res.text()).toBe('tsgi /api/items at /api');
      expect(res.headers.get('x-fastify')).toBe('yes');
      expect(await (await fetch(`${base}/other`)).text()).toBe('fastify route');
      await new Promise((r) => setTimeout(r, 50));
      expect(hooks.slice(0, 3)).toEqual(['onRequest', 'onSend', 'onResponse']);
    } finally {
      await app.close();
    }
  });
});

describe('unix socket', () => {
  it('serves on a Unix domain socket', async () => {
    const sock = join(dir, 'tsgi.sock');
    const server = await serve({ fetch: () => new Response('over unix') }, { unixSocket: sock, handleSignals: false });
    try {
      expect(server.url).toBe(`unix:${sock}`);
      const body = await new Promise<string>((resolve, reject) => {
        httpRequest({ socketPath: sock, path: '/' }, (res) => {
          let b = '';
          res.on('data', (d) => (b += d));
          res.on('end', () => resolve(b));
        })
          .on('error', reject)
          .end();
      });
      expect(body).toBe('over unix');
    } finally {
      await server.close();
    }
  });
});
