// libFuzzer (clang -fsanitize=fuzzer,address,undefined) against the C decoder
// that mod_tsgi runs on every byte a worker sends. Brief run: 20 s.
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildFuzzer } from '../src/build.js';
import * as P from '../src/protocol.js';

let dir: string;
let fuzzer: string;

beforeAll(async () => {
  fuzzer = await buildFuzzer();
  dir = mkdtempSync(join(tmpdir(), 'tsgi-fuzz-'));
  // Seed corpus: one valid frame of each type and a whole exchange, so the
  // fuzzer starts deep inside the decoder instead of at the version byte.
  const corpus = join(dir, 'corpus');
  mkdirSync(corpus);
  const request = P.encodeRequest({
    phase: P.Phase.LOG, hasBody: true, clientPort: 1, serverPort: 80, contentLength: -1, startUs: 1, method: 'GET',
    uri: '/?q=1', protocol: 'HTTP/1.1', scheme: 'http', host: 'h', clientIp: '::1', serverIp: '::1', user: 'u', id: 'i', basePath: '/b',
    headers: ['a', 'b', 'Set-Cookie', 'c=d'], log: { status: 200, bytes: 5, durationUs: 9 },
  });
  const seeds = [
    P.encodeHello(1, Buffer.alloc(32, 1)),
    request,
    P.encodeBody('hello', true),
    P.encodeEnd(),
    P.encodeAbort(2),
    P.encodeWelcome(7),
    P.encodeResponseHead(200, ['Content-Type', 'text/plain', 'Set-Cookie', 'a=1']),
    // What the worker writes for a whole response, and the empty flushed BODY that sends a stream's head.
    P.encodeResponse(203, 'Fine', ['content-type', 'text/plain', 'content-length', '5'], 'hello'),
    P.encodeFlush(),
    P.encodeDecision('alice'),
    P.encodeDecision(),
    P.encodeError(503, 1, 'queue full'),
    P.encodeGoAway(),
    // A WebSocket upgrade accepted: REQUEST with the UPGRADE flag, then TUNNEL.
    P.encodeRequest({
      phase: P.Phase.FULL, upgrade: true, clientPort: 1, serverPort: 80, contentLength: 0, startUs: 1, method: 'GET',
      uri: '/ws', protocol: 'HTTP/1.1', scheme: 'http', host: 'h', clientIp: '::1', serverIp: '::1', user: '', id: 'i', basePath: '',
      headers: ['Upgrade', 'websocket', 'Connection', 'Upgrade', 'Sec-WebSocket-Key', 'dGhlIHNhbXBsZSBub25jZQ==', 'Sec-WebSocket-Version', '13'],
    }),
    P.encodeTunnel(),
  ];
  seeds.forEach((s, i) => writeFileSync(join(corpus, `seed${i}`), s));
  writeFileSync(join(corpus, 'exchange'), Buffer.concat(seeds));
});

afterAll(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('C decoder under libFuzzer', () => {
  it('runs 20 s without a crash, leak or sanitizer report', () => {
    const res = spawnSync(
      fuzzer,
      ['-max_total_time=20', '-timeout=10', '-rss_limit_mb=2048', '-max_len=4096', '-print_final_stats=1',
        `-artifact_prefix=${dir}/`, join(dir, 'corpus')],
      { encoding: 'utf8', timeout: 55_000, maxBuffer: 64 << 20 },
    );
    const tail = `${res.stderr ?? ''}`.split('\n').slice(-30).join('\n');
    expect(res.error, tail).toBeUndefined();
    expect(res.status, tail).toBe(0);
    expect(res.stderr).toMatch(/Done \d+ runs/);
    expect(res.stderr).not.toMatch(/ERROR: (AddressSanitizer|libFuzzer)|runtime error:/);
    const runs = Number(/stat::number_of_executed_units:\s*(\d+)/.exec(res.stderr)?.[1] ?? 0);
    expect(runs).toBeGreaterThan(1000);
  });

  it('replays a truncated frame without reading past its end', () => {
    // The header announces one byte more than the file holds: the target
    // must stop at the header check, and ASan would flag any overread.
    const input = join(dir, 'short');
    const frame = Buffer.from(P.encodeResponseHead(200, ['a', 'b']));
    writeFileSync(input, frame.subarray(0, frame.length - 1));
    const res = spawnSync(fuzzer, [input], { encoding: 'utf8', timeout: 30_000 });
    expect(res.status, res.stderr).toBe(0);
    expect(res.stderr).toMatch(/Executed .* in \d+ ms/);
  });
});
