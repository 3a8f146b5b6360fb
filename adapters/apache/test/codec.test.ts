// The TypeScript codec (src/protocol.ts), the one the worker, the tests and the
// fake worker use, and the C codec that mod_tsgi uses (mod_tsgi/tsgi_proto.c,
// loaded here through koffi) must agree byte for byte: every TypeScript encoding
// decodes in C to what was meant and re-encodes to the same bytes, every C
// encoding decodes in TypeScript, both refuse the same bad input, and what the
// worker's response writer puts on a real connection reads in C, frame by frame,
// as mod_tsgi reads it.
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import koffi from 'koffi';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Response as CoreResponse, toRawResponse } from '@tsgi/core';
import { Lifecycle, RequestContext } from '@tsgi/core/node';
import { noise } from '@tsgi/conformance/testing';
import { buildCodecLib } from '../src/build.js';
import { Connection, type ConnectionHost } from '../src/connection.js';
import * as P from '../src/protocol.js';
import { ApacheRequest, requestTarget, type RequestTarget } from '../src/request.js';
import { respond } from '../src/respond.js';

type CFn = (...args: unknown[]) => number;
let reencodeC: (frame: Buffer) => Buffer | number;
let describeC: (frame: Buffer) => Record<string, unknown> | number;
/** The frames of a byte stream as mod_tsgi reads them (tsgi_frame_parse + tsgi_decode), described. */
let describeStreamC: (bytes: Buffer) => Record<string, unknown>[] | number;

beforeAll(async () => {
  const lib = koffi.load(await buildCodecLib());
  const re = lib.func('int tsgi_test_reencode(const void *in, size_t inlen, void *out, size_t outcap)') as CFn;
  const de = lib.func('int tsgi_test_describe(const void *in, size_t inlen, void *out, size_t outcap)') as CFn;
  const ds = lib.func('int tsgi_test_describe_stream(const void *in, size_t inlen, void *out, size_t outcap)') as CFn;
  describeStreamC = (bytes) => {
    const out = Buffer.alloc(bytes.length * 3 + 4096);
    const rc = ds(bytes, bytes.length, out, out.length);
    if (rc < 0) return rc;
    return JSON.parse(out.toString('latin1', 0, out.indexOf(0))) as Record<string, unknown>[];
  };
  reencodeC = (frame) => {
    const out = Buffer.alloc(frame.length + 64);
    const n = re(frame, frame.length, out, out.length);
    return n < 0 ? n : out.subarray(0, n);
  };
  describeC = (frame) => {
    const out = Buffer.alloc(frame.length * 3 + 4096);
    const rc = de(frame, frame.length, out, out.length);
    if (rc !== 0) return rc;
    return JSON.parse(out.toString('latin1', 0, out.indexOf(0))) as Record<string, unknown>;
  };
});

// ------------------------------------------------------------ seeded randomness

function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

class Gen {
  constructor(readonly rnd: () => number) {}
  int(max: number): number {
    return Math.floor(this.rnd() * (max + 1));
  }
  pick<T>(xs: readonly T[]): T {
    return xs[this.int(xs.length - 1)];
  }
  /** Up to 2^53-1, biased towards edges. */
  u53(): number {
    const r = this.int(3);
    if (r === 0) return 0;
    if (r === 1) return Number.MAX_SAFE_INTEGER - this.int(3);
    if (r === 2) return this.int(0xffffffff);
    return Math.floor(this.rnd() * Number.MAX_SAFE_INTEGER);
  }
  /** Raw bytes as a latin1 string. */
  bytes(maxLen: number): string {
    const n = this.int(maxLen);
    let s = '';
    for (let i = 0; i < n; i++) s += String.fromCharCode(this.int(255));
    return s;
  }
  /** Valid Unicode (no lone surrogates), including multi-byte and astral. */
  unicode(maxLen: number): string {
    const n = this.int(maxLen);
    let s = '';
    for (let i = 0; i < n; i++) {
      const kind = this.int(3);
      if (kind === 0) s += String.fromCharCode(32 + this.int(94));
      else if (kind === 1) s += String.fromCharCode(0xa0 + this.int(0x700));
      else if (kind === 2) s += String.fromCharCode(0xe000 + this.int(0x1000));
      else s += String.fromCodePoint(0x10000 + this.int(0xfffff));
    }
    return s;
  }
  headers(maxCount: number): string[] {
    const h: string[] = [];
    const n = this.int(maxCount);
    for (let i = 0; i < n; i++) h.push(this.pick(['Set-Cookie', 'X-A', 'content-type', this.bytes(20)]), this.bytes(60));
    return h;
  }
}

function randomMessage(g: Gen): P.Message {
  switch (g.int(9)) {
    case 0:
      return { type: 'hello', pid: g.int(0xffffffff), secret: Buffer.from(g.bytes(64), 'latin1') };
    case 1: {
      const phase = g.int(3) as P.PhaseCode;
      const flags = g.int(31);
      const m: P.RequestMsg = {
        type: 'request',
        phase,
        flags,
        tls: (flags & 1) !== 0,
        hasBody: (flags & 2) !== 0,
        authnDone: (flags & 4) !== 0,
        authzDone: (flags & 8) !== 0,
        upgrade: (flags & 16) !== 0,
        clientPort: g.int(0xffff),
        serverPort: g.int(0xffff),
        contentLength: g.int(3) === 0 ? -1 : g.u53(),
        startUs: g.u53(),
        method: g.pick(['GET', 'POST', 'HEAD', g.bytes(12)]),
        uri: g.bytes(300),
        protocol: g.pick(['HTTP/1.1', 'HTTP/1.0', 'HTTP/2.0', '']),
        scheme: g.pick(['http', 'https']),
        host: g.bytes(40),
        clientIp: g.pick(['127.0.0.1', '::1', g.bytes(45)]),
        serverIp: g.bytes(45),
        user: g.unicode(20),
        id: g.unicode(30),
        basePath: g.pick(['', '/app', g.bytes(60)]),
        headers: g.headers(40),
      };
      if (phase === P.Phase.LOG) m.log = { status: g.int(0xffff), bytes: g.u53(), durationUs: g.u53() };
      return m;
    }
    case 2: {
      const n = g.pick([0, 1, 100, 4096, 70000]);
      return { type: 'body', flush: g.int(1) === 1, data: Buffer.from(g.bytes(n), 'latin1') };
    }
    case 3:
      return g.pick([{ type: 'end' }, { type: 'goaway' }, { type: 'tunnel' }] as const);
    case 4:
      return { type: 'abort', reason: g.int(255) };
    case 5:
      return { type: 'welcome', pid: g.int(0xffffffff) };
    case 6:
      return { type: 'response', status: g.int(0xffff), reason: g.pick(['', 'OK', g.bytes(80)]), headers: g.headers(60) };
    case 7:
      return { type: 'decision', user: g.int(2) === 0 ? undefined : g.unicode(40) };
    default:
      return { type: 'error', status: g.pick([500, 503, 504, g.int(0xffff)]), retryAfter: g.int(0xffff), message: g.unicode(80) };
  }
}

function encode(m: P.Message): Buffer {
  switch (m.type) {
    case 'hello':
      return P.encodeHello(m.pid, m.secret);
    case 'request':
      return P.encodeRequest(m);
    case 'body':
      return P.encodeBody(m.data, m.flush);
    case 'end':
      return P.encodeEnd();
    case 'goaway':
      return P.encodeGoAway();
    case 'tunnel':
      return P.encodeTunnel();
    case 'abort':
      return P.encodeAbort(m.reason);
    case 'welcome':
      return P.encodeWelcome(m.pid);
    case 'response':
      return P.encodeResponseHead(m.status, m.headers, m.reason);
    case 'decision':
      return P.encodeDecision(m.user);
    case 'error':
      return P.encodeError(m.status, m.retryAfter, m.message);
  }
}

const hexL = (s: string) => Buffer.from(s, 'latin1').toString('hex');
const hexU = (s: string) => Buffer.from(s, 'utf8').toString('hex');

/** What the C describe() JSON should say about a message. */
function expectedDescription(m: P.Message): Record<string, unknown> {
  const typeCode: Record<P.Message['type'], number> = {
    hello: 1, request: 2, body: 3, end: 4, abort: 5, welcome: 0x81, response: 0x82, decision: 0x83, error: 0x84,
    goaway: 0x85, tunnel: 0x86,
  };
  const d: Record<string, unknown> = { type: typeCode[m.type], flags: m.type === 'body' && m.flush ? 1 : 0, end: true };
  switch (m.type) {
    case 'hello':
      return { ...d, pid: m.pid, secret: m.secret.toString('hex') };
    case 'request':
      return {
        ...d,
        phase: m.phase,
        rflags: m.flags,
        clientPort: m.clientPort,
        serverPort: m.serverPort,
        contentLength: String(m.contentLength),
        startUs: String(m.startUs),
        method: hexL(m.method),
        uri: hexL(m.uri),
        protocol: hexL(m.protocol),
        scheme: hexL(m.scheme),
        host: hexL(m.host),
        clientIp: hexL(m.clientIp),
        serverIp: hexL(m.serverIp),
        user: hexU(m.user),
        id: hexU(m.id),
        basePath: hexL(m.basePath),
        headers: m.headers.map(hexL),
        ...(m.log ? { log: { status: m.log.status, bytes: String(m.log.bytes), durationUs: String(m.log.durationUs) } } : {}),
      };
    case 'body':
      return { ...d, data: m.data.toString('hex') };
    case 'abort':
      return { ...d, reason: m.reason };
    case 'welcome':
      return { ...d, pid: m.pid };
    case 'response':
      return { ...d, status: m.status, reason: hexL(m.reason), headers: m.headers.map(hexL) };
    case 'decision':
      return { ...d, kind: m.user === undefined ? 0 : 1, user: hexU(m.user ?? '') };
    case 'error':
      return { ...d, status: m.status, retryAfter: m.retryAfter, message: hexU(m.message) };
    default:
      return d;
  }
}

/** TS decode output compared field by field (Buffers as hex). */
function normalize(m: P.Message): unknown {
  return JSON.parse(JSON.stringify(m, (_k, v: unknown) => (v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v)));
}

const COUNT = 3000;

describe('C and TypeScript codecs agree', () => {
  it(`re-encode ${COUNT} random TS-encoded messages to the same bytes in C, and describe them identically`, () => {
    const g = new Gen(mulberry32(0x7e51));
    for (let i = 0; i < COUNT; i++) {
      const m = randomMessage(g);
      const ts = encode(m);
      const c = reencodeC(ts);
      if (typeof c === 'number') throw new Error(`C rejected message #${i} (${m.type}): ${c}`);
      expect(c.equals(ts), `message #${i} (${m.type}) differs`).toBe(true);
      expect(describeC(ts), `message #${i} (${m.type})`).toEqual(expectedDescription(m));
      // The TS decoder reads the C-encoded bytes back to the original message.
      expect(normalize(P.decodeMessage(c))).toEqual(normalize(m));
    }
  });

  it('FrameReader reassembles a stream of C-encoded frames cut at random places', () => {
    const g = new Gen(mulberry32(42));
    const msgs = Array.from({ length: 400 }, () => randomMessage(g));
    const stream = Buffer.concat(msgs.map((m) => reencodeC(encode(m)) as Buffer));
    const reader = new P.FrameReader();
    const got: P.Message[] = [];
    for (let at = 0; at < stream.length; ) {
      const n = 1 + g.int(g.int(1) ? 16 : 20000);
      got.push(...reader.push(Buffer.from(stream.subarray(at, at + n))));
      at += n;
    }
    expect(reader.buffered).toBe(0);
    expect(got.map(normalize)).toEqual(msgs.map(normalize));
  });

  it('splits bodies over 1 MiB into several frames, FLUSH only on the last', () => {
    const data = Buffer.alloc(P.MAX_FRAME * 2 + 5, 7);
    const frames = P.bodyFrames(data, true);
    const whole = Buffer.concat(frames);
    expect(whole.equals(P.encodeBody(data, true))).toBe(true);
    const got = new P.FrameReader().push(whole) as P.BodyMsg[];
    expect(got.map((m) => [m.data.length, m.flush])).toEqual([
      [P.MAX_FRAME, false],
      [P.MAX_FRAME, false],
      [5, true],
    ]);
    for (const f of got) expect(reencodeC(Buffer.concat([P.encodeBodyHeader(f.data.length, f.flush), f.data]))).toBeInstanceOf(Buffer);
  });
});

describe('bad input is rejected the same way by both decoders', () => {
  const accepts = (frame: Buffer): boolean => {
    try {
      P.decodeMessage(frame);
      return true;
    } catch (err) {
      expect(err).toBeInstanceOf(P.ProtocolError);
      return false;
    }
  };

  it('agrees on 20000 mutated frames (flipped bytes, truncation, extension)', () => {
    const g = new Gen(mulberry32(9));
    let rejected = 0;
    for (let i = 0; i < 20000; i++) {
      const frame = Buffer.from(encode(randomMessage(new Gen(mulberry32(i)))));
      let bad: Buffer;
      const how = g.int(3);
      if (how === 0) {
        bad = frame;
        for (let k = 0; k <= g.int(3); k++) bad[g.int(Math.min(bad.length - 1, 40 + g.int(1) * (bad.length - 1)))] = g.int(255);
      } else if (how === 1) {
        // Truncate the payload but keep the header's length consistent, so the payload decoder is what must notice.
        const cut = g.int(frame.length - P.FRAME_HEADER_SIZE);
        bad = Buffer.from(frame.subarray(0, P.FRAME_HEADER_SIZE + cut));
        bad.writeUInt32LE(cut, 4);
      } else if (how === 2) {
        bad = Buffer.concat([frame, Buffer.from([g.int(255)])]);
        bad.writeUInt32LE(bad.length - P.FRAME_HEADER_SIZE, 4);
      } else {
        bad = frame;
        bad[g.int(7)] = g.int(255);
      }
      if (bad.length >= P.FRAME_HEADER_SIZE && bad.readUInt32LE(4) !== bad.length - P.FRAME_HEADER_SIZE) continue;
      const ts = accepts(bad);
      const c = reencodeC(bad);
      expect(typeof c !== 'number', `frame #${i}: TS ${ts ? 'accepts' : 'rejects'}, C disagrees`).toBe(ts);
      if (typeof c !== 'number') expect(c.equals(bad)).toBe(true);
      else rejected++;
    }
    expect(rejected).toBeGreaterThan(1000);
  });

  it('rejects a wrong version, a reserved byte, an oversized frame and unknown types', () => {
    const end = Buffer.from(P.encodeEnd());
    const cases: [string, Buffer][] = [
      ['version 2', Buffer.from([2, 4, 0, 0, 0, 0, 0, 0])],
      ['reserved byte', Buffer.from([1, 4, 0, 1, 0, 0, 0, 0])],
      ['unknown type', Buffer.from([1, 0x42, 0, 0, 0, 0, 0, 0])],
      ['flags on END', Buffer.from([1, 4, 1, 0, 0, 0, 0, 0])],
      ['unknown BODY flag', Buffer.from([1, 3, 2, 0, 0, 0, 0, 0])],
      ['payload on END', Buffer.from([1, 4, 0, 0, 1, 0, 0, 0, 9])],
      ['DECISION kind 2', Buffer.from([1, 0x83, 0, 0, 3, 0, 0, 0, 2, 0, 0])],
      ['DECISION kind 0 with a user', Buffer.from([1, 0x83, 0, 0, 4, 0, 0, 0, 0, 1, 0, 0x41])],
    ];
    expect(accepts(end)).toBe(true);
    for (const [what, frame] of cases) {
      expect(accepts(frame), what).toBe(false);
      expect(typeof reencodeC(frame), what).toBe('number');
    }
    const big = Buffer.from([1, 3, 0, 0, 0, 0, 0, 0]);
    big.writeUInt32LE(P.MAX_FRAME + 1, 4);
    expect(() => new P.FrameReader().push(big)).toThrow(/exceeds/);
  });

  it('a FrameReader stays broken after an error', () => {
    const r = new P.FrameReader();
    expect(() => r.push(Buffer.from([9, 9, 9, 9, 9, 9, 9, 9]))).toThrow(P.ProtocolError);
    expect(() => r.push(P.encodeEnd())).toThrow(P.ProtocolError);
  });

  it('encoders refuse what the format cannot carry', () => {
    expect(() => P.encodeResponseHead(200, ['a'])).toThrow(TypeError);
    expect(() => P.encodeResponseHead(200, ['x'.repeat(70000), 'v'])).toThrow(RangeError);
    expect(() => P.encodeResponseHead(200, ['big', 'v'.repeat(P.MAX_FRAME)])).toThrow(RangeError);
    expect(() => P.encodeDecision('u'.repeat(70000))).toThrow(RangeError);
  });
});

describe('the REQUEST decoder (decodeRequest: header strings decoded when first read)', () => {
  const g = new Gen(mulberry32(0x1ea2));
  const request = () => {
    let m: P.Message;
    do m = randomMessage(g);
    while (m.type !== 'request');
    return P.encodeRequest(m);
  };

  it('refuses every truncated and padded payload', () => {
    for (let i = 0; i < 1000; i++) {
      const f = request();
      const cut = P.FRAME_HEADER_SIZE + g.int(f.length - P.FRAME_HEADER_SIZE - 1);
      expect(() => P.decodeRequest(f, P.FRAME_HEADER_SIZE, cut)).toThrow(P.ProtocolError);
      const padded = Buffer.concat([f, Buffer.from([0])]);
      expect(() => P.decodeRequest(padded, P.FRAME_HEADER_SIZE, padded.length)).toThrow(P.ProtocolError);
    }
  });

  it('refuses a bad phase and unknown flags', () => {
    const f = request();
    const badPhase = Buffer.from(f);
    badPhase[8] = 4;
    expect(() => P.decodeRequest(badPhase, 8, badPhase.length)).toThrow(P.ProtocolError);
    const badFlags = Buffer.from(f);
    badFlags[9] = 0x20;
    expect(() => P.decodeRequest(badFlags, 8, badFlags.length)).toThrow(P.ProtocolError);
  });

  it('reads the headers only when asked, and the same every time', () => {
    const f = P.encodeRequest({ ...(P.decodeMessage(request()) as P.RequestMsg).toJSON?.() as P.RequestMsg, headers: ['a', 'b', 'Set-Cookie', 'x=1', 'Set-Cookie', 'y=2'] });
    const m = P.decodeRequest(f, 8, f.length);
    expect(m.headers).toEqual(['a', 'b', 'Set-Cookie', 'x=1', 'Set-Cookie', 'y=2']);
    expect(m.headers).toBe(m.headers);
  });
});

// ------------------------------------------------------------ what the worker sends

const HOP_BY_HOP = ['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer'];
const MIB = P.MAX_FRAME;
/** Body sizes on both sides of the 64 KiB copy limit and of the 1 MiB frame limit. */
const SMALL = [0, 1, 13, 4096, 65535, 65536, 65537];
const LARGE = [MIB - 1, MIB, MIB + 1, 2 * MIB + 7];

const hexOf = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

/** The BODY frames mod_tsgi should read for `data`: split at 1 MiB, FLUSH on the last when flushed. */
function bodyFramesOf(data: Uint8Array, flush: boolean): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (let at = 0; at < data.length; at += MIB) {
    const end = Math.min(data.length, at + MIB);
    out.push({ type: 0x03, flags: flush && end === data.length ? 1 : 0, data: hexOf(data.subarray(at, end)), end: true });
  }
  return out;
}

const headFrame = (status: number, reason: string, headers: string[]) => ({
  type: 0x82, flags: 0, status, reason: hexL(reason), headers: headers.map(hexL), end: true,
});
const END_FRAME = { type: 0x04, flags: 0, end: true };

/** Each frame of `wire` decoded and re-encoded by C, concatenated: equal to `wire` when C reads every byte as written. */
function reencodeFramesC(wire: Buffer): Buffer {
  const out: Buffer[] = [];
  for (let at = 0; at < wire.length; ) {
    const end = at + P.FRAME_HEADER_SIZE + wire.readUInt32LE(at + 4);
    const c = reencodeC(wire.subarray(at, end));
    if (typeof c === 'number') throw new Error(`C refused the frame at ${at}: ${c}`);
    out.push(c);
    at = end;
  }
  return Buffer.concat(out);
}

function latin1(g: Gen, max: number, from = 0x20): string {
  let s = '';
  for (let n = g.int(max); n > 0; n--) s += String.fromCharCode(g.int(2) ? from + g.int(0x7e - from) : 0xa0 + g.int(0x5f));
  return s;
}

describe("the worker's response encoders, read by the C decoder as mod_tsgi reads them", () => {
  it('encodeResponse: head, body frames and END in one buffer, for 160 seeded random responses, re-encoded by C to the same bytes', () => {
    const g = new Gen(mulberry32(0x5e9d));
    for (let i = 0; i < 160; i++) {
      const status = g.pick([200, 201, 204, 304, 404, 500, 100 + g.int(899)]);
      const reason = g.pick(['', 'OK', latin1(g, 60)]);
      const headers: string[] = [];
      for (let n = g.int(30); n > 0; n--) headers.push(g.pick(['Set-Cookie', 'x-a', 'content-type', 'x-' + latin1(g, 20, 0x61).replace(/[^a-z]/g, 'q')]), latin1(g, 200));
      const size = g.int(4) === 0 ? g.pick(LARGE) : g.pick(SMALL);
      // 'ascii': a string whose UTF-8 is its latin1 (the encoder's copy-by-hand path); 'string': any Unicode.
      const kind = g.pick(['null', 'string', 'ascii', 'bytes'] as const);
      const text = kind === 'ascii' ? Buffer.from(noise(size, i + 1)).toString('latin1').replace(/[^\x20-\x7e]/g, 'a') : g.unicode(Math.min(size, 3000));
      const bytes = kind === 'null' ? new Uint8Array(0) : kind === 'bytes' ? noise(size, i + 1) : Buffer.from(text);
      const body = kind === 'null' ? null : kind === 'bytes' ? bytes : text;
      const wire = P.encodeResponse(status, reason, headers, body);
      const frames = describeStreamC(wire);
      expect(frames, `response #${i}`).toEqual([headFrame(status, reason, headers), ...bodyFramesOf(bytes, false), END_FRAME]);
      // Byte for byte: C re-encodes what it decoded to exactly what the worker wrote.
      expect(reencodeFramesC(wire).equals(wire), `response #${i}: C re-encodes other bytes`).toBe(true);
    }
  });

  it('encodeResponseHead, bodyFrames, encodeBody, encodeFlush and encodeEnd: a stream as the worker writes it', () => {
    const g = new Gen(mulberry32(0xb0d7));
    for (let i = 0; i < 40; i++) {
      const headers = ['content-type', 'text/event-stream', 'x-i', String(i)];
      const chunks = Array.from({ length: 1 + g.int(5) }, (_, k) => noise(g.int(5) === 0 ? g.pick(LARGE) : g.pick(SMALL.slice(1)), i * 10 + k + 1));
      const parts = [P.encodeResponseHead(200, headers, 'Streaming'), P.encodeFlush()];
      for (const c of chunks) parts.push(...(g.int(1) ? P.bodyFrames(c, true) : [P.encodeBody(c, true)]));
      parts.push(P.encodeEnd());
      const wire = Buffer.concat(parts);
      expect(reencodeFramesC(wire).equals(wire), `stream #${i}: C re-encodes other bytes`).toBe(true);
      const frames = describeStreamC(wire);
      const flushFrame = { type: 0x03, flags: 1, data: '', end: true };
      expect(frames, `stream #${i}`).toEqual([headFrame(200, 'Streaming', headers), flushFrame, ...chunks.flatMap((c) => bodyFramesOf(c, true)), END_FRAME]);
    }
  });

  describe('respond() through a Connection onto a real socket', () => {
    const secret = Buffer.alloc(32, 7);
    let dir: string;
    let server: Server;
    let next: (() => Response) | null = null;
    const host: ConnectionHost = {
      secret,
      draining: false,
      log: () => {},
      request(conn, m, body) {
        const ctx = new RequestContext('apache', m.clientIp, new Lifecycle(() => {}), m.id);
        const req = new ApacheRequest(m, body, requestTarget(m) as RequestTarget, ctx);
        conn.begin(req);
        respond(conn, req, next!(), { log: () => {}, finished: (c, r) => c.done(r) });
      },
      closed() {},
    };

    beforeAll(async () => {
      dir = mkdtempSync(join(tmpdir(), 'tsgi-apa-codec-'));
      server = createServer((sock) => new Connection(sock, host));
      await new Promise<void>((r) => server.listen(join(dir, 's'), r));
    });
    afterAll(async () => {
      await new Promise((r) => server?.close(r));
      if (dir) rmSync(dir, { recursive: true, force: true });
    });

    /** HELLO and one REQUEST; everything the worker wrote up to its END, as mod_tsgi's decoder reads it. */
    function exchange(method: string, res: () => Response): Promise<Record<string, unknown>[]> {
      next = res;
      return new Promise((resolve, reject) => {
        const s = connect(join(dir, 's'));
        const got: Buffer[] = [];
        const reader = new P.FrameReader();
        s.on('error', reject);
        s.on('close', () => reject(new Error('the worker closed the connection before END')));
        s.on('data', (d: Buffer) => {
          got.push(d);
          if (reader.push(d).some((m) => m.type === 'end')) {
            s.destroy();
            const all = Buffer.concat(got);
            const frames = describeStreamC(all);
            if (typeof frames === 'number') reject(new Error(`C refused the stream: ${frames}`));
            else if (!reencodeFramesC(all).equals(all)) reject(new Error('C re-encodes what the worker wrote to other bytes'));
            else resolve(frames);
          }
        });
        s.write(P.encodeHello(1, secret));
        s.write(P.encodeRequest({
          phase: P.Phase.FULL, clientPort: 1, serverPort: 80, contentLength: 0, startUs: 1, method, uri: '/x', protocol: 'HTTP/1.1',
          scheme: 'http', host: 'h', clientIp: '127.0.0.1', serverIp: '127.0.0.1', user: '', id: 'codec', basePath: '', headers: [],
        }));
      });
    }

    /** The handler's headers less what the wire rules take out, plus the server's Content-Length for a fixed body. */
    const expectedHeaders = (res: Response, length: number | undefined): string[] => {
      const raw = toRawResponse(res).headers;
      const out: string[] = [];
      for (let i = 0; i < raw.length; i += 2) {
        const name = raw[i]!.toLowerCase();
        if (!HOP_BY_HOP.includes(name) && !(name === 'content-length' && length !== undefined)) out.push(raw[i]!, raw[i + 1]!);
      }
      if (length !== undefined) out.push('content-length', String(length));
      return out;
    };
    const WELCOME = { type: 0x81, flags: 0, pid: process.pid, end: true };
    const init = (i: number) => ({
      status: i % 3 === 0 ? 203 : 200,
      statusText: i % 2 ? 'Fine Thanks' : '',
      headers: [['X-Seq', String(i)], ['Connection', 'close'], ['Set-Cookie', 'a=1'], ['Set-Cookie', 'b=2'], ['Content-Length', '3'], ['x-latin1', 'caf\u00e9']] as [string, string][],
    });

    it('fixed bodies (string, bytes) on both sides of 64 KiB and 1 MiB: one head, the bytes, END; HEAD sends no body', async () => {
      for (const [i, size] of [...SMALL, ...LARGE].entries()) {
        const data = noise(size, 100 + i);
        for (const method of ['GET', 'HEAD']) {
          const make = () => new CoreResponse(data, init(i)) as unknown as Response;
          const frames = await exchange(method, make);
          const body = method === 'HEAD' ? [] : bodyFramesOf(data, false);
          expect(frames, `${method} ${size} bytes`).toEqual([WELCOME, headFrame(init(i).status, init(i).statusText, expectedHeaders(make(), size)), ...body, END_FRAME]);
        }
      }
      const text = 'h\u00e9llo \u{1f600} '.repeat(9000);
      const make = () => new globalThis.Response(text, init(1));
      const frames = await exchange('GET', make);
      expect(frames).toEqual([WELCOME, headFrame(200, 'Fine Thanks', expectedHeaders(make(), Buffer.byteLength(text))), ...bodyFramesOf(Buffer.from(text), false), END_FRAME]);
    });

    it("one fast Response answered three times: Content-Length goes on a copy, never on the Response's own header list", async () => {
      const reused = new CoreResponse('same', { headers: { 'x-once': '1' } }) as unknown as Response;
      for (let i = 0; i < 3; i++) {
        const frames = await exchange('GET', () => reused);
        expect(frames, `answer ${i + 1}`).toEqual([WELCOME, headFrame(200, '', ['x-once', '1', 'content-type', 'text/plain;charset=UTF-8', 'content-length', '4']), ...bodyFramesOf(Buffer.from('same'), false), END_FRAME]);
      }
      expect([...reused.headers]).toEqual([['content-type', 'text/plain;charset=UTF-8'], ['x-once', '1']]);
    });

    it('streams: each chunk one flushed BODY (split at 1 MiB), the head at once, END; HEAD cancels an endless one', async () => {
      const g = new Gen(mulberry32(0x57e4));
      for (let i = 0; i < 12; i++) {
        const chunks = Array.from({ length: 1 + g.int(4) }, (_, k) => noise(g.int(4) === 0 ? g.pick(LARGE) : g.pick(SMALL), 200 + i * 10 + k));
        const make = () =>
          new globalThis.Response(
            new ReadableStream<Uint8Array>({
              start(c) {
                for (const x of chunks) c.enqueue(x);
                c.close();
              },
            }),
            init(i),
          );
        const frames = await exchange('GET', make);
        // The head may have left on its own (FIRST_CHUNK_WAIT_MS) before the first chunk: an empty flushed BODY.
        const flush = frames[2] && (frames[2] as { data?: string }).data === '' && frames[2]!.flags === 1 ? [frames[2]] : [];
        expect(frames, `stream #${i}`).toEqual([
          WELCOME,
          headFrame(init(i).status, init(i).statusText, expectedHeaders(make(), undefined)),
          ...flush,
          ...chunks.flatMap((c) => (c.length ? bodyFramesOf(c, true) : [])),
          END_FRAME,
        ]);
      }
      let cancelled = false;
      const endless = () => new globalThis.Response(new ReadableStream({ pull(c) { c.enqueue(noise(100)); }, cancel() { cancelled = true; } }));
      expect(await exchange('HEAD', endless)).toEqual([WELCOME, headFrame(200, '', expectedHeaders(endless(), undefined)), END_FRAME]);
      expect(cancelled).toBe(true);
    });
  });
});
