/**
 * The suite's own machinery: the raw HTTP reader, opt-out lookup, the runner
 * and the tsgi-conformance bin (exit codes, bad arguments), against tiny
 * node:http / node:net servers written here.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { createServer as createHttpServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { existsSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cases, fixtureHandlerPath, makeContext, optOutFor, runConformance, adler32 } from '../src/index.js';

const bin = fileURLToPath(new URL('../bin/tsgi-conformance.js', import.meta.url));

function run(args: string[]): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    p.on('exit', (code) => resolve({ code, out }));
  });
}

// A server that answers /text like the fixture, and /bad-text wrongly.
let good: Server;
let goodURL = '';
// A raw server that writes canned bytes, to exercise the response reader.
let raw: NetServer;
let rawPort = 0;
let canned = '';

beforeAll(async () => {
  good = createHttpServer((req, res) => {
    if (req.url === '/text') {
      res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8' });
      res.end('Hello, tsgi!');
    } else {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('something else');
    }
  });
  good.listen(0, '127.0.0.1');
  await once(good, 'listening');
  goodURL = `http://127.0.0.1:${(good.address() as AddressInfo).port}`;

  raw = createNetServer((s) => {
    s.once('data', () => {
      s.end(canned);
    });
  });
  raw.listen(0, '127.0.0.1');
  await once(raw, 'listening');
  rawPort = (raw.address() as AddressInfo).port;
});

afterAll(async () => {
  good.closeAllConnections();
  await new Promise((r) => good.close(r));
  await new Promise((r) => raw.close(r));
});

describe('the case table', () => {
  it('has unique ids, at least 40 cases, and reasons for every opt-out', () => {
    const ids = cases.map((c) => c.id);
    expect(new Set(ids).size).toBe(ids.length);
    expect(cases.length).toBeGreaterThanOrEqual(40);
    for (const c of cases) {
      for (const [k, reason] of Object.entries(c.optOut ?? {})) {
        expect(k).toMatch(/^(node|apache|nginx)(:(embedded|workers|fastify))?$/);
        expect(reason.length).toBeGreaterThan(20);
      }
    }
  });

  it('node and apache have no opt-out (but WebSocket on the Fastify mount, and on Apache until mod_tsgi tunnels upgrades)', () => {
    for (const server of ['node', 'apache'] as const) {
      for (const mode of [undefined, 'embedded', 'workers'] as const) {
        const out = cases.filter((c) => optOutFor(c, { server, mode })).map((c) => c.id);
        expect(out.filter((id) => !(server === 'apache' && id.startsWith('ws.')))).toEqual([]);
      }
    }
    const fastify = cases.filter((c) => optOutFor(c, { server: 'node', mode: 'fastify' })).map((c) => c.id);
    expect(fastify.length).toBeGreaterThan(0);
    expect(fastify.every((id) => id.startsWith('ws.'))).toBe(true);
  });

  it("opt-outs match 'server:mode' exactly, and 'server' for every mode", () => {
    const c = { id: 'x', title: 'x', optOut: { 'nginx:embedded': 'a reason long enough' }, run: async () => {} };
    expect(optOutFor(c, { server: 'nginx', mode: 'embedded' })).toEqual(['nginx:embedded', 'a reason long enough']);
    expect(optOutFor(c, { server: 'nginx', mode: 'workers' })).toBeUndefined();
    expect(optOutFor(c, { server: 'nginx' })).toBeUndefined();
    const all = { ...c, optOut: { nginx: 'every nginx mode, reason' } };
    expect(optOutFor(all, { server: 'nginx', mode: 'workers' })).toEqual(['nginx', 'every nginx mode, reason']);
  });

  it('fixtureHandlerPath points at the fixture', () => {
    expect(fixtureHandlerPath).toMatch(/conformance\/fixture\/handler\.ts$/);
    expect(existsSync(fixtureHandlerPath)).toBe(true);
  });

  it("the README's case table is the cases' own (node conformance/scripts/readme-table.mjs rewrites it)", () => {
    const r = spawnSync(process.execPath, [fileURLToPath(new URL('../scripts/readme-table.mjs', import.meta.url)), '--check'], { encoding: 'utf8' });
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('adler32 matches the known value', () => {
    expect(adler32(new TextEncoder().encode('Wikipedia'))).toBe(0x11e60398);
  });
});

describe('the raw response reader', () => {
  const read = async (bytes: string, method = 'GET') => {
    canned = bytes;
    const t = makeContext(`http://127.0.0.1:${rawPort}`, { server: 'node' });
    return t.exchange(`${method} / HTTP/1.1\r\nHost: x\r\n\r\n`, { method });
  };

  it('reads chunked bodies with extensions and trailers', async () => {
    const r = await read(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a=1\r\nset-cookie: b=2\r\n\r\n' +
        '3;ext=1\r\nabc\r\n2\r\nde\r\n0\r\nX-Trailer: t\r\n\r\n',
    );
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('abcde');
    expect(r.all('Set-Cookie')).toEqual(['a=1', 'b=2']);
  });

  it('skips 100 Continue, honours Content-Length and reads to close without framing', async () => {
    const r = await read('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 3\r\n\r\nabcEXTRA');
    expect(r.status).toBe(201);
    expect(r.reason).toBe('Created');
    expect(r.body.toString()).toBe('abc');
    const c = await read('HTTP/1.0 200 OK\r\n\r\nuntil close');
    expect(c.body.toString()).toBe('until close');
  });

  it('gives HEAD and 204 no body', async () => {
    const h = await read('HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n', 'HEAD');
    expect(h.body.length).toBe(0);
    expect(h.get('content-length')).toBe('12');
  });

  it('rejects a truncated body and a non-HTTP answer', async () => {
    await expect(read('HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc')).rejects.toThrow(/closed before a complete/);
    await expect(read('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab')).rejects.toThrow(
      /closed before a complete/,
    );
    await expect(read('SSH-2.0-OpenSSH\r\n\r\n')).rejects.toThrow(/not an HTTP\/1.x status line/);
  });
});

describe('runConformance and the bin', () => {
  it('runConformance reports pass and fail per case', async () => {
    const results = await runConformance(goodURL, { server: 'node', only: ['body.string', 'body.utf8'] });
    expect(results.map((r) => [r.id, r.outcome])).toEqual([
      ['body.string', 'pass'],
      ['body.utf8', 'fail'],
    ]);
    expect(results[1]!.detail).toBeTruthy();
  });

  it('reports opt-outs without running them', async () => {
    const results = await runConformance('http://127.0.0.1:1', {
      server: 'nginx',
      mode: 'embedded',
      only: ['stream.incremental'],
    });
    expect(results).toHaveLength(1);
    expect(results[0]!.outcome).toBe('opt-out');
    expect(results[0]!.detail).toMatch(/^nginx:embedded: njs 0\.7\.9/);
  });

  it('exits 0 when the selected cases pass', async () => {
    const { code, out } = await run([goodURL, '--only', 'body.string']);
    expect(out).toMatch(/^ok +body\.string$/m);
    expect(out).toMatch(/1 passed, 0 failed/);
    expect(code).toBe(0);
  });

  it('exits 1 and names the case when one fails', async () => {
    const { code, out } = await run([goodURL, '--server', 'node', '--only', 'body.utf8']);
    expect(out).toMatch(/^FAIL +body\.utf8/m);
    expect(code).toBe(1);
  });

  it('exits 1 when nothing listens at the URL', async () => {
    const { code, out } = await run(['http://127.0.0.1:1', '--only', 'body.string']);
    expect(out).toMatch(/FAIL +body\.string/);
    expect(code).toBe(1);
  });

  it('exits 2 with one line on bad arguments', async () => {
    for (const args of [[], ['not a url'], [goodURL, '--server', 'iis'], [goodURL, '--mode'], [goodURL, '--bogus']]) {
      const { code, out } = await run(args);
      expect(code, args.join(' ')).toBe(2);
      expect(out).toMatch(/^tsgi-conformance: /);
      expect(out).not.toMatch(/\n\s+at /);
    }
  });
});
