/** What every group of conformance cases shares: the case type, limits, and the assertion helpers. */
import assert from 'node:assert/strict';
import type { CaseContext, RawResponse } from '../client.js';

/** The request body limit the server under test must be configured with. */
export const CONFORMANCE_MAX_BODY = 8 * 1024 * 1024;

/** Must never appear in a response body (the fixture throws with it). */
export const SECRET = 'tsgi-secret-7f3a9c';

export interface ConformanceCase {
  id: string;
  title: string;
  /** 'server' or 'server:mode' -> why this case cannot apply there. */
  optOut?: Record<string, string>;
  /**
   * Sub-path mounts (ctx.basePath): 'also' runs at the root and in a registration under a prefix
   * (describeConformance with `basePath`), 'prefix' only there; absent: only at the root.
   */
  mount?: 'also' | 'prefix';
  run(t: CaseContext): Promise<void>;
}

// ---------------------------------------------------------------- helpers

export { adler32, allBytes, noise } from '../data.js';
import { noise } from '../data.js';

export const enc = new TextEncoder();

export async function bytesOf(res: Response): Promise<Uint8Array> {
  return new Uint8Array(await res.arrayBuffer());
}

export async function expectText(t: CaseContext, path: string, status: number, body: string, init?: RequestInit) {
  const res = await t.fetch(path, init);
  const got = await res.text();
  assert.equal(res.status, status, `${init?.method ?? 'GET'} ${path}: status (body ${JSON.stringify(got.slice(0, 200))})`);
  assert.equal(got, body, `${init?.method ?? 'GET'} ${path}: body`);
  return res;
}

export async function expectJSON<T = Record<string, unknown>>(t: CaseContext, path: string, init?: RequestInit): Promise<T> {
  const res = await t.fetch(path, init);
  const body = await res.text();
  assert.equal(res.status, 200, `${path}: status (body ${JSON.stringify(body.slice(0, 200))})`);
  assert.match(res.headers.get('content-type') ?? '', /application\/json/, `${path}: content-type`);
  return JSON.parse(body) as T;
}

/** The server still answers a plain request. */
export async function stillFine(t: CaseContext): Promise<void> {
  await expectText(t, '/text', 200, 'Hello, tsgi!');
}

/** A bare 500: no message, no stack, nothing from the error. */
export async function expectBare500(t: CaseContext, path: string, init?: RequestInit): Promise<void> {
  const res = await t.fetch(path, init);
  const body = await res.text();
  assert.equal(res.status, 500, `${path}: status (body ${JSON.stringify(body.slice(0, 200))})`);
  assert.ok(!body.includes(SECRET), `${path}: the 500 body leaks the error message: ${JSON.stringify(body)}`);
  assert.ok(!/handler\.[jt]s|\bat\s+\S+\s+\(/.test(body), `${path}: the 500 body leaks a stack: ${JSON.stringify(body)}`);
  for (const [k, v] of res.headers) {
    assert.ok(!v.includes(SECRET), `${path}: header ${k} leaks the error message`);
  }
}

/**
 * The bare 500 read off the wire: status line `500 Internal Server Error`, body
 * `Internal Server Error\n` as text/plain;charset=UTF-8, nothing of the failed response.
 */
export async function expectWire500(t: CaseContext, path: string, leaked = 'x-value'): Promise<void> {
  const r = await t.exchange(get(t, path, 'Connection: close\r\n'));
  assert.equal(`${r.status} ${r.reason}`, '500 Internal Server Error', `${path}: status line (body ${JSON.stringify(r.body.toString().slice(0, 200))})`);
  assert.equal(r.body.toString(), 'Internal Server Error\n', `${path}: body`);
  assert.equal(r.get('content-type'), 'text/plain;charset=UTF-8', `${path}: content-type`);
  assert.equal(r.get(leaked), null, `${path}: the failed response's ${leaked} header reached the wire`);
}

export function bytesEqual(got: Uint8Array, want: Uint8Array, what: string): void {
  assert.equal(got.length, want.length, `${what}: length`);
  for (let i = 0; i < want.length; i++) {
    if (got[i] !== want[i]) assert.fail(`${what}: byte ${i} is ${got[i]}, expected ${want[i]}`);
  }
}

export function get(t: CaseContext, path: string, extra = ''): string {
  return `GET ${path} HTTP/1.1\r\nHost: ${t.host}\r\n${extra}\r\n`;
}

export function noInjectedHeader(r: RawResponse, what: string): void {
  assert.ok(!/\r\nx-injected\s*:/i.test('\r\n' + r.head), `${what}: X-Injected reached the wire:\n${r.head}`);
  assert.ok(!r.headers.some(([k]) => k.toLowerCase() === 'x-injected'), `${what}: X-Injected header present`);
}

/** Sends a request head and up to `bodyBytes` of body, stopping once the server answers. */
export async function sendOverLimit(t: CaseContext, head: string, chunked: boolean, bodyBytes: number): Promise<RawResponse> {
  const c = await t.connect();
  try {
    await c.write(head);
    const piece = new Uint8Array(64 * 1024).fill(0x61);
    let sent = 0;
    while (sent < bodyBytes && !c.pending && !c.ended) {
      const n = Math.min(piece.length, bodyBytes - sent);
      const data = piece.subarray(0, n);
      if (chunked) await c.write(Buffer.concat([Buffer.from(`${n.toString(16)}\r\n`), data, Buffer.from('\r\n')]));
      else await c.write(data);
      sent += n;
    }
    if (chunked && !c.pending && !c.ended) await c.write('0\r\n\r\n');
    return await c.readResponse({ timeoutMs: 30_000 });
  } finally {
    c.close();
  }
}

// Cases that watch the fixture's state through a later request cannot run where
// every request gets a fresh JavaScript VM with no shared memory.
export const NJS_NO_SHARED_STATE =
  'njs 0.7.9 builds a fresh VM per request and has no shared dictionary (js_shared_dict_zone came in 0.8.0), ' +
  'so what one request records cannot be read by a later one';

// ---------------------------------------------------------------- large bodies

/**
 * Body sizes on both sides of the 64 KiB buffer size most servers (and njs's
 * send path) work in, and one of a few hundred KB that spans several buffers.
 */
export const EDGE_SIZES = [65535, 65536, 65537, 300_007];

/**
 * Text whose UTF-8 form is exactly `bytes` long, with 1- to 4-byte characters
 * chosen by noise(), and a 4-byte character straddling every 64 KiB boundary
 * inside it (a decoder or a writer that splits there must keep it whole).
 */
export function noiseText(bytes: number, seed = 0x2545f491): string {
  const r = noise(bytes, seed);
  let out = '';
  let len = 0;
  for (let i = 0; len < bytes; i++) {
    const b = r[i]!;
    const toNext = (Math.floor(len / 65536) + 1) * 65536 - len;
    let size = (b & 3) + 1;
    if (toNext < bytes - len) {
      // Close to a boundary inside the text: take a character that crosses it, never one that ends on it.
      if (toNext <= 3) size = Math.min(4, bytes - len);
      else if (size === toNext) size = 2;
    }
    if (size > bytes - len) size = 1;
    if (size === 1) out += String.fromCharCode(0x20 + (b % 95));
    else if (size === 2) out += String.fromCharCode(0x100 + b);
    else if (size === 3) out += String.fromCharCode(0x4e00 + b);
    else out += String.fromCodePoint(0x1f300 + b);
    len += size;
  }
  return out;
}

// statusText on the status line: njs 0.7.9 cannot set it.
export const NJS_NO_REASON_PHRASE =
  'njs 0.7.9 cannot set the reason phrase: r.status takes only a number and nothing in ngx_http_js_module sets ' +
  "headers_out.status_line, so nginx writes its standard phrase for the status";
