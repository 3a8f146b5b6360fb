// The TypeScript codec (src/protocol.ts) and the C codec that mod_tsgi uses
// (mod_tsgi/tsgi_proto.c, loaded here through koffi) must agree byte for byte.
import koffi from 'koffi';
import { beforeAll, describe, expect, it } from 'vitest';
import { buildCodecLib } from '../src/build.js';
import * as P from '../src/protocol.js';

type CFn = (...args: unknown[]) => number;
let reencodeC: (frame: Buffer) => Buffer | number;
let describeC: (frame: Buffer) => Record<string, unknown> | number;

beforeAll(async () => {
  const lib = koffi.load(await buildCodecLib());
  const re = lib.func('int tsgi_test_reencode(const void *in, size_t inlen, void *out, size_t outcap)') as CFn;
  const de = lib.func('int tsgi_test_describe(const void *in, size_t inlen, void *out, size_t outcap)') as CFn;
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
      const flags = g.int(15);
      const m: P.RequestMsg = {
        type: 'request',
        phase,
        flags,
        tls: (flags & 1) !== 0,
        hasBody: (flags & 2) !== 0,
        authnDone: (flags & 4) !== 0,
        authzDone: (flags & 8) !== 0,
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
      return g.int(1) ? { type: 'end' } : { type: 'goaway' };
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
    goaway: 0x85,
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
