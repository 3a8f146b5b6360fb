/**
 * The mod_tsgi wire protocol, version 1: the one TypeScript codec. The format
 * is PROTOCOL.md's; the C twin is mod_tsgi/tsgi_proto.c, and test/codec.test.ts
 * proves the two agree byte for byte (every encoder here against the C decoder,
 * every C encoding against the decoders here, and both decoders refuse the same
 * bad input).
 *
 * The worker (connection.ts) reads with `FrameReader.feed` and `decodeRequest`
 * (header strings decoded only when the handler reads them) and writes with
 * `encodeResponse` (head, body and END in one buffer), `encodeResponseHead`,
 * `encodeBody`/`bodyFrames` and the constant frames. Tests, tools and the fake
 * worker use `FrameReader.push` / `decodeMessage`, which return plain messages,
 * and the Apache-side encoders (encodeHello, encodeRequest, encodeAbort).
 */

export const PROTOCOL_VERSION = 1;
export const FRAME_HEADER_SIZE = 8;
/** Max payload of any frame; bodies are split over several BODY frames. */
export const MAX_FRAME = 1 << 20;
export const MAX_HEADERS = 0xffff;
/** content_length value meaning "unknown" (chunked). */
export const UNKNOWN_LENGTH = -1;

export const MsgType = {
  HELLO: 0x01,
  REQUEST: 0x02,
  BODY: 0x03,
  END: 0x04,
  ABORT: 0x05,
  WELCOME: 0x81,
  RESPONSE_HEAD: 0x82,
  DECISION: 0x83,
  ERROR: 0x84,
  GOAWAY: 0x85,
  TUNNEL: 0x86,
} as const;

export const Phase = { FULL: 0, AUTHENTICATE: 1, AUTHORIZE: 2, LOG: 3 } as const;
export type PhaseCode = (typeof Phase)[keyof typeof Phase];

export const RequestFlags = { TLS: 1, HAS_BODY: 2, AUTHN_DONE: 4, AUTHZ_DONE: 8, UPGRADE: 16 } as const;
const ALL_REQUEST_FLAGS = 0x1f;
export const BODY_FLUSH = 1;

export const AbortReason = { CLIENT_GONE: 1, TIMEOUT: 2, BODY_TOO_LARGE: 3, ERROR: 4 } as const;

export class ProtocolError extends Error {
  override name = 'ProtocolError';
}

export interface HelloMsg {
  type: 'hello';
  pid: number;
  secret: Buffer;
}

export interface LogInfo {
  status: number;
  bytes: number;
  durationUs: number;
}

export interface RequestMsg {
  type: 'request';
  phase: PhaseCode;
  /** Raw flag bits (RequestFlags). */
  flags: number;
  tls: boolean;
  hasBody: boolean;
  authnDone: boolean;
  authzDone: boolean;
  /** A WebSocket upgrade mod_tsgi can tunnel (the worker may answer TUNNEL). */
  upgrade: boolean;
  clientPort: number;
  serverPort: number;
  /** -1 when unknown (chunked). */
  contentLength: number;
  /** Request start in µs since the epoch. */
  startUs: number;
  method: string;
  uri: string;
  protocol: string;
  scheme: string;
  host: string;
  clientIp: string;
  serverIp: string;
  /** '' when nobody authenticated. */
  user: string;
  id: string;
  /** ctx.basePath: the <Location> path mod_tsgi serves (no trailing '/'); '' elsewhere. */
  basePath: string;
  /** Flat [name, value, name, value, ...] in arrival order. */
  headers: string[];
  /** Present only for phase LOG. */
  log?: LogInfo;
}

export interface BodyMsg {
  type: 'body';
  flush: boolean;
  /** A view into the received data; copy it if you keep it past the next push(). */
  data: Buffer;
}

export interface EndMsg {
  type: 'end';
}

export interface AbortMsg {
  type: 'abort';
  reason: number;
}

export interface WelcomeMsg {
  type: 'welcome';
  pid: number;
}

export interface ResponseHeadMsg {
  type: 'response';
  status: number;
  /** The reason phrase; '' for the server's standard one. */
  reason: string;
  headers: string[];
}

export interface DecisionMsg {
  type: 'decision';
  /** undefined: no opinion / allowed. */
  user: string | undefined;
}

export interface ErrorMsg {
  type: 'error';
  status: number;
  retryAfter: number;
  message: string;
}

export interface GoAwayMsg {
  type: 'goaway';
}

/** The worker accepted a WebSocket upgrade: from here on the connection carries raw bytes both ways. */
export interface TunnelMsg {
  type: 'tunnel';
}

export type ApacheMessage = HelloMsg | RequestMsg | BodyMsg | EndMsg | AbortMsg;
export type WorkerMessage = WelcomeMsg | ResponseHeadMsg | BodyMsg | EndMsg | DecisionMsg | ErrorMsg | GoAwayMsg | TunnelMsg;
export type Message = ApacheMessage | WorkerMessage;


// ---------------------------------------------------------------- encoding

const U32 = 0x1_0000_0000;

/** Writes a frame header at buf[at]; returns where the payload starts. */
function frameHeader(buf: Buffer, at: number, type: number, flags: number, len: number): number {
  buf[at] = PROTOCOL_VERSION;
  buf[at + 1] = type;
  buf[at + 2] = flags;
  buf[at + 3] = 0;
  buf[at + 4] = len;
  buf[at + 5] = len >>> 8;
  buf[at + 6] = len >>> 16;
  buf[at + 7] = len >>> 24;
  return at + FRAME_HEADER_SIZE;
}

function tooBig(payload: number): RangeError {
  return new RangeError(`tsgi frame payload ${payload} exceeds ${MAX_FRAME}`);
}

/** Append-only writer for the cold-path messages: sizes are computed first so each message is one allocation. */
class Writer {
  buf: Buffer;
  off: number;
  constructor(type: number, flags: number, payload: number) {
    if (payload > MAX_FRAME) throw tooBig(payload);
    this.buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload);
    this.off = frameHeader(this.buf, 0, type, flags, payload);
  }
  u8(v: number): void {
    this.buf[this.off++] = v;
  }
  u16(v: number): void {
    this.buf.writeUInt16LE(v, this.off);
    this.off += 2;
  }
  u32(v: number): void {
    this.buf.writeUInt32LE(v, this.off);
    this.off += 4;
  }
  u64(v: number): void {
    // -1 is the all-ones "unknown" marker; other values are non-negative safe integers.
    if (v < 0) {
      this.buf.writeUInt32LE(0xffffffff, this.off);
      this.buf.writeUInt32LE(0xffffffff, this.off + 4);
    } else {
      this.buf.writeUInt32LE(v % U32, this.off);
      this.buf.writeUInt32LE(Math.floor(v / U32), this.off + 4);
    }
    this.off += 8;
  }
  str16(s: string, enc: BufferEncoding): void {
    const n = this.buf.write(s, this.off + 2, enc);
    this.buf.writeUInt16LE(n, this.off);
    this.off += 2 + n;
  }
  str32(s: string, enc: BufferEncoding): void {
    const n = this.buf.write(s, this.off + 4, enc);
    this.buf.writeUInt32LE(n, this.off);
    this.off += 4 + n;
  }
  bytes16(b: Uint8Array): void {
    this.buf.writeUInt16LE(b.length, this.off);
    this.buf.set(b, this.off + 2);
    this.off += 2 + b.length;
  }
  headers(h: readonly string[]): void {
    this.off = writeHeaders(this.buf, this.off, h);
  }
  done(): Buffer {
    if (this.off !== this.buf.length) throw new Error('tsgi encoder size mismatch');
    return this.buf;
  }
}

/** Size of a str16. Header names, values and the other raw fields are latin1: one byte per character. */
function len16(s: string, enc: BufferEncoding, what: string): number {
  const n = enc === 'latin1' ? s.length : Buffer.byteLength(s, enc);
  if (n > 0xffff) throw new RangeError(`tsgi: ${what} longer than 65535 bytes`);
  return 2 + n;
}

function len32(s: string, enc: BufferEncoding): number {
  return 4 + (enc === 'latin1' ? s.length : Buffer.byteLength(s, enc));
}

/** Size of a header block: flat [name, value, ...], each a str16 name and a str32 value. */
function headersSize(h: readonly string[]): number {
  const n = h.length;
  if (n % 2 !== 0) throw new TypeError('tsgi: headers must be a flat [name, value, ...] list');
  if (n / 2 > MAX_HEADERS) throw new RangeError('tsgi: too many headers');
  let size = 0;
  for (let i = 0; i < n; i += 2) {
    const name = h[i]!;
    if (name.length > 0xffff) throw new RangeError('tsgi: header name longer than 65535 bytes');
    size += 6 + name.length + h[i + 1]!.length;
  }
  return size;
}

/**
 * Writes `s` as latin1 (the low byte of each character) at buf[o]; returns the
 * byte count. Short strings, which most header names and values are, are
 * copied here: cheaper than a call into Buffer's native writer.
 */
function putLatin1(buf: Buffer, o: number, s: string): number {
  const n = s.length;
  if (n > 64) return buf.write(s, o, 'latin1');
  for (let i = 0; i < n; i++) buf[o + i] = s.charCodeAt(i);
  return n;
}

function writeHeaders(buf: Buffer, o: number, h: readonly string[]): number {
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const value = h[i + 1]!;
    const vl = value.length;
    buf[o] = name.length;
    buf[o + 1] = name.length >>> 8;
    o += 2 + putLatin1(buf, o + 2, name);
    buf[o] = vl;
    buf[o + 1] = vl >>> 8;
    buf[o + 2] = vl >>> 16;
    buf[o + 3] = vl >>> 24;
    o += 4 + putLatin1(buf, o + 4, value);
  }
  return o;
}

/** RESPONSE_HEAD payload size (u16 status, str16 reason, u16 count, headers); throws what the frame cannot carry. */
function responseHeadSize(reason: string, headers: readonly string[]): number {
  const size = 2 + len16(reason, 'latin1', 'reason') + 2 + headersSize(headers);
  if (size > MAX_FRAME) throw tooBig(size);
  return size;
}

function writeResponseHead(buf: Buffer, status: number, reason: string, headers: readonly string[], size: number): number {
  let o = frameHeader(buf, 0, MsgType.RESPONSE_HEAD, 0, size);
  const count = headers.length / 2;
  buf[o] = status;
  buf[o + 1] = status >>> 8;
  buf[o + 2] = reason.length;
  buf[o + 3] = reason.length >>> 8;
  o += 4 + putLatin1(buf, o + 4, reason);
  buf[o] = count;
  buf[o + 1] = count >>> 8;
  return writeHeaders(buf, o + 2, headers);
}

/** The byte length of a body (strings go out as UTF-8). */
export function bodyLength(body: Uint8Array | string | null): number {
  return body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
}

const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/**
 * RESPONSE_HEAD; `headers` is flat [name, value, ...] (RawResponse.headers), repeats (Set-Cookie) kept;
 * `reason` the statusText ('' for the server's standard phrase). Names, values and reason are latin1.
 */
export function encodeResponseHead(status: number, headers: readonly string[], reason = ''): Buffer {
  const size = responseHeadSize(reason, headers);
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + size);
  writeResponseHead(buf, status, reason, headers, size);
  return buf;
}

/**
 * A whole response in one buffer: RESPONSE_HEAD, the body as BODY frames (none
 * for a null or empty body), END. `n` is the body's byte length when the caller
 * has it already (bodyLength).
 */
export function encodeResponse(status: number, reason: string, headers: readonly string[], body: Uint8Array | string | null, n = bodyLength(body)): Buffer {
  const size = responseHeadSize(reason, headers);
  const bodyFramed = n > 0 ? n + FRAME_HEADER_SIZE * Math.ceil(n / MAX_FRAME) : 0;
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + size + bodyFramed + FRAME_HEADER_SIZE);
  let o = writeResponseHead(buf, status, reason, headers, size);
  if (n > 0 && n <= MAX_FRAME) {
    o = frameHeader(buf, o, MsgType.BODY, 0, n);
    // A string whose UTF-8 length is its length is ASCII: the same bytes as latin1.
    if (typeof body === 'string') o += n === body.length ? putLatin1(buf, o, body) : buf.write(body, o, 'utf8');
    else o += asBuffer(body!).copy(buf, o);
  } else if (n > 0) {
    const bytes = typeof body === 'string' ? Buffer.from(body) : asBuffer(body!);
    for (let at = 0; at < n; at += MAX_FRAME) {
      const len = Math.min(MAX_FRAME, n - at);
      o = frameHeader(buf, o, MsgType.BODY, 0, len);
      o += bytes.copy(buf, o, at, at + len);
    }
  }
  frameHeader(buf, o, MsgType.END, 0, 0);
  return buf;
}

/** A BODY frame header for `len` bytes (write the data right after it). */
export function encodeBodyHeader(len: number, flush = false): Buffer {
  if (len > MAX_FRAME) throw tooBig(len);
  const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  frameHeader(b, 0, MsgType.BODY, flush ? BODY_FLUSH : 0, len);
  return b;
}

/**
 * BODY frames for a chunk of any size, without copying the data: alternating
 * headers and views. FLUSH goes on the last frame only.
 */
export function bodyFrames(chunk: Uint8Array, flush = false): Buffer[] {
  const data = asBuffer(chunk);
  const out: Buffer[] = [];
  let off = 0;
  do {
    const n = Math.min(MAX_FRAME, data.length - off);
    const last = off + n >= data.length;
    out.push(encodeBodyHeader(n, flush && last));
    if (n > 0) out.push(data.subarray(off, off + n));
    off += n;
  } while (off < data.length);
  return out;
}

/** BODY frame(s) as one Buffer (copies: for chunks up to a frame or so). FLUSH on the last frame only. */
export function encodeBody(chunk: Uint8Array | string, flush = false): Buffer {
  const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
  if (data.length <= MAX_FRAME) {
    const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE + data.length);
    b.set(data, frameHeader(b, 0, MsgType.BODY, flush ? BODY_FLUSH : 0, data.length));
    return b;
  }
  return Buffer.concat(bodyFrames(data, flush));
}

function emptyFrame(type: number, flags = 0): Buffer {
  const b = Buffer.alloc(FRAME_HEADER_SIZE);
  frameHeader(b, 0, type, flags, 0);
  return b;
}

const END = emptyFrame(MsgType.END);
const GOAWAY = emptyFrame(MsgType.GOAWAY);
const TUNNEL = emptyFrame(MsgType.TUNNEL);
const FLUSH = emptyFrame(MsgType.BODY, BODY_FLUSH);

/** END frame. Returns a shared buffer: do not modify it. */
export function encodeEnd(): Buffer {
  return END;
}

/** GOAWAY frame (shared buffer). */
export function encodeGoAway(): Buffer {
  return GOAWAY;
}

/** TUNNEL frame (shared buffer). */
export function encodeTunnel(): Buffer {
  return TUNNEL;
}

/** An empty BODY frame with FLUSH (shared buffer): Apache sends a stream's head on it, before the first chunk. */
export function encodeFlush(): Buffer {
  return FLUSH;
}

export function encodeHello(pid: number, secret: Uint8Array): Buffer {
  if (secret.length > 0xffff) throw new RangeError('tsgi: secret too long');
  const w = new Writer(MsgType.HELLO, 0, 4 + 2 + secret.length);
  w.u32(pid);
  w.bytes16(secret);
  return w.done();
}

export type RequestInit = Omit<RequestMsg, 'type' | 'flags' | 'tls' | 'hasBody' | 'authnDone' | 'authzDone' | 'upgrade'> & {
  tls?: boolean;
  upgrade?: boolean;
  hasBody?: boolean;
  authnDone?: boolean;
  authzDone?: boolean;
};

export function encodeRequest(r: RequestInit): Buffer {
  const flags =
    (r.tls ? RequestFlags.TLS : 0) |
    (r.hasBody ? RequestFlags.HAS_BODY : 0) |
    (r.authnDone ? RequestFlags.AUTHN_DONE : 0) |
    (r.authzDone ? RequestFlags.AUTHZ_DONE : 0) |
    (r.upgrade ? RequestFlags.UPGRADE : 0);
  const isLog = r.phase === Phase.LOG;
  if (isLog && !r.log) throw new TypeError('tsgi: a LOG request needs log info');
  const size =
    2 + 2 + 2 + 2 + 8 + 8 +
    len16(r.method, 'latin1', 'method') +
    len32(r.uri, 'latin1') +
    len16(r.protocol, 'latin1', 'protocol') +
    len16(r.scheme, 'latin1', 'scheme') +
    len16(r.host, 'latin1', 'host') +
    len16(r.clientIp, 'latin1', 'client ip') +
    len16(r.serverIp, 'latin1', 'server ip') +
    len16(r.user, 'utf8', 'user') +
    len16(r.id, 'utf8', 'id') +
    len16(r.basePath, 'latin1', 'base path') +
    headersSize(r.headers) +
    (isLog ? 2 + 8 + 8 : 0);
  const w = new Writer(MsgType.REQUEST, 0, size);
  w.u8(r.phase);
  w.u8(flags);
  w.u16(r.clientPort);
  w.u16(r.serverPort);
  w.u16(r.headers.length / 2);
  w.u64(r.contentLength);
  w.u64(r.startUs);
  w.str16(r.method, 'latin1');
  w.str32(r.uri, 'latin1');
  w.str16(r.protocol, 'latin1');
  w.str16(r.scheme, 'latin1');
  w.str16(r.host, 'latin1');
  w.str16(r.clientIp, 'latin1');
  w.str16(r.serverIp, 'latin1');
  w.str16(r.user, 'utf8');
  w.str16(r.id, 'utf8');
  w.str16(r.basePath, 'latin1');
  w.headers(r.headers);
  if (isLog) {
    w.u16(r.log!.status);
    w.u64(r.log!.bytes);
    w.u64(r.log!.durationUs);
  }
  return w.done();
}

export function encodeAbort(reason: number): Buffer {
  const w = new Writer(MsgType.ABORT, 0, 1);
  w.u8(reason);
  return w.done();
}

export function encodeWelcome(pid: number): Buffer {
  const w = new Writer(MsgType.WELCOME, 0, 4);
  w.u32(pid);
  return w.done();
}

/** Phase decision: a user name for authenticate's `{user}`, undefined for no opinion / allowed. */
export function encodeDecision(user?: string): Buffer {
  const u = user ?? '';
  const w = new Writer(MsgType.DECISION, 0, 1 + len16(u, 'utf8', 'user'));
  w.u8(user === undefined ? 0 : 1);
  w.str16(u, 'utf8');
  return w.done();
}

/** The worker refuses a request (503 overloaded / queue timeout); Apache answers `status`. */
export function encodeError(status: number, retryAfter = 0, message = ''): Buffer {
  const w = new Writer(MsgType.ERROR, 0, 2 + 2 + len16(message, 'utf8', 'message'));
  w.u16(status);
  w.u16(retryAfter);
  w.str16(message, 'utf8');
  return w.done();
}

// ---------------------------------------------------------------- decoding

// One payload is decoded at a time, synchronously: the cursor lives here rather
// than in a reader object, so the per-request decode allocates only the message.
let src: Buffer = Buffer.alloc(0);
let at = 0;
let lim = 0;

function begin(buf: Buffer, start: number, end: number): void {
  src = buf;
  at = start;
  lim = end;
}

function need(n: number): void {
  if (at + n > lim) throw new ProtocolError('tsgi: truncated payload');
}

function u8(): number {
  need(1);
  return src[at++]!;
}

function u16(): number {
  need(2);
  const v = src[at]! | (src[at + 1]! << 8);
  at += 2;
  return v;
}

function u32(): number {
  need(4);
  const v = (src[at]! | (src[at + 1]! << 8) | (src[at + 2]! << 16)) + src[at + 3]! * 0x1000000;
  at += 4;
  return v;
}

/** A u64 below 2^53, or -1 for all-ones. */
function u64(): number {
  const lo = u32();
  const hi = u32();
  if (lo === 0xffffffff && hi === 0xffffffff) return -1;
  if (hi >= 0x200000) throw new ProtocolError('tsgi: 64-bit value out of range');
  return hi * U32 + lo;
}

function str(n: number, enc: 'latin1' | 'utf8'): string {
  need(n);
  const v = n === 0 ? '' : src.toString(enc, at, at + n);
  at += n;
  return v;
}

const str16 = (enc: 'latin1' | 'utf8'): string => str(u16(), enc);

function bytes16(): Buffer {
  const n = u16();
  need(n);
  const v = Buffer.from(src.subarray(at, at + n));
  at += n;
  return v;
}

/** Checks a header block's lengths (so a bad payload is refused now, not when read); returns where it starts. */
function skipHeaders(count: number): number {
  const start = at;
  for (let i = 0; i < count; i++) {
    const nl = u16();
    need(nl);
    at += nl;
    const vl = u32();
    need(vl);
    at += vl;
  }
  return start;
}

/** Decodes a header block that skipHeaders checked. */
function readHeaders(buf: Buffer, o: number, count: number): string[] {
  const h = new Array<string>(count * 2);
  for (let i = 0; i < h.length; i += 2) {
    const nl = buf[o]! | (buf[o + 1]! << 8);
    h[i] = buf.toString('latin1', o + 2, o + 2 + nl);
    o += 2 + nl;
    const vl = buf.readUInt32LE(o);
    h[i + 1] = buf.toString('latin1', o + 4, o + 4 + vl);
    o += 4 + vl;
  }
  return h;
}

function finish(): void {
  if (at !== lim) throw new ProtocolError('tsgi: trailing bytes in payload');
}

/** Offset (from the first field) and length of each string field of the REQUEST being decoded. */
const FIELDS = new Int32Array(20);

function field(all: string, i: number): string {
  const n = FIELDS[2 * i + 1]!;
  return n === 0 ? '' : all.slice(FIELDS[2 * i]!, FIELDS[2 * i]! + n);
}

/** A UTF-8 field: its latin1 cut when it is ASCII (the same characters), else decoded as UTF-8. */
function utf8Field(all: string, base: number, i: number): string {
  const off = FIELDS[2 * i]!;
  const n = FIELDS[2 * i + 1]!;
  for (let j = base + off, end = j + n; j < end; j++) if (src[j]! > 0x7f) return src.toString('utf8', base + off, end);
  return n === 0 ? '' : all.slice(off, off + n);
}

/**
 * A decoded REQUEST whose header strings are decoded only when `headers` is
 * first read (most handlers read one or two headers, many none). It keeps the
 * received buffer until then.
 */
class LazyRequestMsg implements RequestMsg {
  readonly type = 'request' as const;
  phase: PhaseCode;
  flags: number;
  tls: boolean;
  hasBody: boolean;
  authnDone: boolean;
  authzDone: boolean;
  upgrade: boolean;
  clientPort: number;
  serverPort: number;
  contentLength: number;
  startUs: number;
  method: string;
  uri: string;
  protocol: string;
  scheme: string;
  host: string;
  clientIp: string;
  serverIp: string;
  user: string;
  id: string;
  basePath: string;
  log?: LogInfo;
  #buf: Buffer | null;
  #at: number;
  #count: number;
  #headers: string[] | undefined = undefined;

  /** Reads the payload from the cursor (begin() set it). */
  constructor(phase: number, flags: number, count: number) {
    this.phase = phase as PhaseCode;
    this.flags = flags;
    this.tls = (flags & RequestFlags.TLS) !== 0;
    this.hasBody = (flags & RequestFlags.HAS_BODY) !== 0;
    this.authnDone = (flags & RequestFlags.AUTHN_DONE) !== 0;
    this.authzDone = (flags & RequestFlags.AUTHZ_DONE) !== 0;
    this.upgrade = (flags & RequestFlags.UPGRADE) !== 0;
    this.clientPort = u16();
    this.serverPort = u16();
    at += 2; // header count, read by decodeRequest
    this.contentLength = u64();
    this.startUs = u64();
    if (this.startUs < 0) throw new ProtocolError('tsgi: bad start time');
    // method, uri, protocol, scheme, host, client ip, server ip, user, id, base path lie back to back.
    const base = at;
    for (let i = 0; i < 10; i++) {
      const n = i === 1 ? u32() : u16();
      need(n);
      FIELDS[2 * i] = at - base;
      FIELDS[2 * i + 1] = n;
      at += n;
    }
    // One latin1 decode for all of them (one character per byte, so offsets carry over), cut into fields:
    // one call into Buffer's native decoder instead of ten.
    const all = src.toString('latin1', base, at);
    this.method = field(all, 0);
    this.uri = field(all, 1);
    this.protocol = field(all, 2);
    this.scheme = field(all, 3);
    this.host = field(all, 4);
    this.clientIp = field(all, 5);
    this.serverIp = field(all, 6);
    this.user = utf8Field(all, base, 7);
    this.id = utf8Field(all, base, 8);
    this.basePath = field(all, 9);
    this.#buf = src;
    this.#count = count;
    this.#at = skipHeaders(count);
  }

  get headers(): string[] {
    if (this.#headers === undefined) {
      this.#headers = readHeaders(this.#buf!, this.#at, this.#count);
      this.#buf = null;
    }
    return this.#headers;
  }

  /** Every field, as a plain message (JSON.stringify, test comparisons). */
  toJSON(): RequestMsg {
    const { type, phase, flags, tls, hasBody, authnDone, authzDone, upgrade, clientPort, serverPort, contentLength, startUs } = this;
    const { method, uri, protocol, scheme, host, clientIp, serverIp, user, id, basePath, headers, log } = this;
    return {
      ...{ type, phase, flags, tls, hasBody, authnDone, authzDone, upgrade, clientPort, serverPort, contentLength, startUs },
      ...{ method, uri, protocol, scheme, host, clientIp, serverIp, user, id, basePath, headers },
      ...(log ? { log } : {}),
    };
  }
}

/** Decodes a REQUEST payload buf[start, end). Throws ProtocolError on anything PROTOCOL.md does not allow. */
export function decodeRequest(buf: Buffer, start: number, end: number): RequestMsg {
  begin(buf, start, end);
  need(8);
  const phase = buf[start]!;
  const flags = buf[start + 1]!;
  if (phase > Phase.LOG) throw new ProtocolError('tsgi: bad phase');
  if (flags & ~ALL_REQUEST_FLAGS) throw new ProtocolError('tsgi: unknown request flags');
  at = start + 2;
  const m = new LazyRequestMsg(phase, flags, buf[start + 6]! | (buf[start + 7]! << 8));
  if (phase === Phase.LOG) {
    const status = u16();
    const bytes = u64();
    const durationUs = u64();
    if (bytes < 0 || durationUs < 0) throw new ProtocolError('tsgi: bad log values');
    m.log = { status, bytes, durationUs };
  }
  finish();
  return m;
}

/** The FLUSH bit of a BODY frame's flags; throws on unknown bits. */
export function bodyFlush(flags: number): boolean {
  if ((flags & ~BODY_FLUSH) !== 0) throw new ProtocolError('tsgi: unknown BODY flags');
  return flags !== 0;
}

/**
 * Decodes one frame's payload (buf[start, end)) of the given type. BODY data
 * is a view into `buf`.
 */
export function decodePayload(type: number, flags: number, buf: Buffer, start: number, end: number): Message {
  if (type === MsgType.BODY) return { type: 'body', flush: bodyFlush(flags), data: buf.subarray(start, end) };
  if (flags !== 0) throw new ProtocolError(`tsgi: flags set on frame type ${type}`);
  if (type === MsgType.REQUEST) return decodeRequest(buf, start, end);
  begin(buf, start, end);
  let m: Message;
  switch (type) {
    case MsgType.END:
      m = { type: 'end' };
      break;
    case MsgType.GOAWAY:
      m = { type: 'goaway' };
      break;
    case MsgType.TUNNEL:
      m = { type: 'tunnel' };
      break;
    case MsgType.HELLO:
      m = { type: 'hello', pid: u32(), secret: bytes16() };
      break;
    case MsgType.ABORT:
      m = { type: 'abort', reason: u8() };
      break;
    case MsgType.WELCOME:
      m = { type: 'welcome', pid: u32() };
      break;
    case MsgType.RESPONSE_HEAD: {
      const status = u16();
      const reason = str16('latin1');
      const count = u16();
      m = { type: 'response', status, reason, headers: readHeaders(buf, skipHeaders(count), count) };
      break;
    }
    case MsgType.DECISION: {
      const kind = u8();
      if (kind > 1) throw new ProtocolError('tsgi: bad DECISION kind');
      const user = str16('utf8');
      if (kind === 0 && user !== '') throw new ProtocolError('tsgi: DECISION kind 0 with a user');
      m = { type: 'decision', user: kind === 1 ? user : undefined };
      break;
    }
    case MsgType.ERROR:
      m = { type: 'error', status: u16(), retryAfter: u16(), message: str16('utf8') };
      break;
    default:
      throw new ProtocolError(`tsgi: unknown frame type ${type}`);
  }
  finish();
  return m;
}

/** Validates a frame header at buf[at]; returns the payload length. */
export function checkFrameHeader(buf: Buffer, at: number): number {
  if (buf[at] !== PROTOCOL_VERSION) throw new ProtocolError(`tsgi: protocol version ${buf[at]} (want ${PROTOCOL_VERSION})`);
  if (buf[at + 3] !== 0) throw new ProtocolError('tsgi: reserved header byte set');
  const len = buf.readUInt32LE(at + 4);
  if (len > MAX_FRAME) throw new ProtocolError(`tsgi: frame of ${len} bytes exceeds ${MAX_FRAME}`);
  return len;
}

/** Decodes exactly one complete frame (header + payload). */
export function decodeMessage(frame: Buffer): Message {
  if (frame.length < FRAME_HEADER_SIZE) throw new ProtocolError('tsgi: short frame');
  const len = checkFrameHeader(frame, 0);
  if (frame.length !== FRAME_HEADER_SIZE + len) throw new ProtocolError('tsgi: frame length mismatch');
  return decodePayload(frame[1]!, frame[2]!, frame, FRAME_HEADER_SIZE, frame.length);
}

/**
 * What FrameReader.feed hands each complete frame: its type, flags and payload
 * buf[start, end) (a view; nothing is reused, so views stay valid). Returning
 * false stops reading the rest of the chunk (the connection went away).
 */
export type FrameSink = (type: number, flags: number, buf: Buffer, start: number, end: number) => boolean | void;

/**
 * Reassembles frames from a byte stream (socket chunks cut anywhere). A frame
 * split over chunks is copied once, when it is complete; frames inside one
 * chunk are handed on as views. Any error is fatal for the connection: the
 * reader stays broken.
 */
export class FrameReader {
  private parts: Buffer[] = [];
  private plen = 0;
  /** Bytes `parts` must reach before a frame can be complete. */
  private want = 0;
  private broken: ProtocolError | null = null;

  /** Calls `sink` for each complete frame; throws ProtocolError on a bad frame (or whatever the sink throws). */
  feed(chunk: Buffer, sink: FrameSink): void {
    if (this.broken) throw this.broken;
    if (this.plen > 0) {
      this.parts.push(chunk);
      this.plen += chunk.length;
      if (this.plen < this.want) return;
      chunk = Buffer.concat(this.parts, this.plen);
      this.parts = [];
      this.plen = 0;
    }
    let at = 0;
    try {
      while (chunk.length - at >= FRAME_HEADER_SIZE) {
        const end = at + FRAME_HEADER_SIZE + checkFrameHeader(chunk, at);
        if (end > chunk.length) break;
        if (sink(chunk[at + 1]!, chunk[at + 2]!, chunk, at + FRAME_HEADER_SIZE, end) === false) return;
        at = end;
      }
    } catch (err) {
      this.broken = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      throw this.broken;
    }
    if (at < chunk.length) {
      const rest = chunk.subarray(at);
      this.parts = [rest];
      this.plen = rest.length;
      this.want = rest.length >= FRAME_HEADER_SIZE ? FRAME_HEADER_SIZE + rest.readUInt32LE(4) : FRAME_HEADER_SIZE;
    }
  }

  /** The complete messages in `chunk` (plus what came before), decoded. */
  push(chunk: Buffer): Message[] {
    const out: Message[] = [];
    this.feed(chunk, (type, flags, buf, start, end) => {
      out.push(decodePayload(type, flags, buf, start, end));
    });
    return out;
  }

  /** Bytes held for an incomplete frame (non-zero at EOF means a truncated message). */
  get buffered(): number {
    return this.plen;
  }
}
