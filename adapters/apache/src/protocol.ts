/**
 * mod_tsgi wire protocol, version 1 (see ../PROTOCOL.md; the C twin is
 * mod_tsgi/tsgi_proto.c and test/codec.test.ts proves they agree).
 *
 * Worker-side API:
 *   const reader = new FrameReader();
 *   socket.on('data', (chunk) => { for (const m of reader.push(chunk)) ... });
 *     m.type: 'hello' | 'request' | 'body' | 'end' | 'abort'  (Apache -> worker)
 *     push() throws ProtocolError on malformed input: close the connection.
 *   socket.write(encodeWelcome(process.pid))            on accept
 *   socket.write(encodeResponseHead(status, flatHeaders))  [name, value, name, value, ...]
 *   socket.write(encodeBody(chunk, flush))  or  socket.cork(); for (b of bodyFrames(chunk, flush)) socket.write(b)
 *   socket.write(encodeEnd())
 *   socket.write(encodeDecision(user?))                   authenticate/authorize phases
 *   socket.write(encodeError(503, retryAfterSec, msg))   overload / queue timeout
 *   socket.write(encodeGoAway())                          draining
 * Apache-side encoders (encodeHello, encodeRequest, encodeAbort) exist for tests
 * and tools; every message has an encoder and decodes with decodeMessage().
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
} as const;

export const Phase = { FULL: 0, AUTHENTICATE: 1, AUTHORIZE: 2, LOG: 3 } as const;
export type PhaseCode = (typeof Phase)[keyof typeof Phase];

export const RequestFlags = { TLS: 1, HAS_BODY: 2, AUTHN_DONE: 4, AUTHZ_DONE: 8 } as const;
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

export type ApacheMessage = HelloMsg | RequestMsg | BodyMsg | EndMsg | AbortMsg;
export type WorkerMessage = WelcomeMsg | ResponseHeadMsg | BodyMsg | EndMsg | DecisionMsg | ErrorMsg | GoAwayMsg;
export type Message = ApacheMessage | WorkerMessage;

// ---------------------------------------------------------------- encoding

const U32 = 0x1_0000_0000;

/** Append-only writer: sizes are computed first so each message is one allocation. */
class Writer {
  buf: Buffer;
  off = FRAME_HEADER_SIZE;
  constructor(type: number, flags: number, payload: number) {
    if (payload > MAX_FRAME) throw new RangeError(`tsgi frame payload ${payload} exceeds ${MAX_FRAME}`);
    this.buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + payload);
    writeHeader(this.buf, 0, type, flags, payload);
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
  done(): Buffer {
    if (this.off !== this.buf.length) throw new Error('tsgi encoder size mismatch');
    return this.buf;
  }
}

function writeHeader(buf: Buffer, at: number, type: number, flags: number, len: number): void {
  buf[at] = PROTOCOL_VERSION;
  buf[at + 1] = type;
  buf[at + 2] = flags;
  buf[at + 3] = 0;
  buf.writeUInt32LE(len, at + 4);
}

function len16(s: string, enc: BufferEncoding, what: string): number {
  const n = enc === 'latin1' ? s.length : Buffer.byteLength(s, enc);
  if (n > 0xffff) throw new RangeError(`tsgi: ${what} longer than 65535 bytes`);
  return 2 + n;
}

function len32(s: string, enc: BufferEncoding): number {
  return 4 + (enc === 'latin1' ? s.length : Buffer.byteLength(s, enc));
}

function headersSize(h: readonly string[]): number {
  if (h.length % 2 !== 0) throw new TypeError('tsgi: headers must be a flat [name, value, ...] list');
  if (h.length / 2 > MAX_HEADERS) throw new RangeError('tsgi: too many headers');
  let n = 0;
  for (let i = 0; i < h.length; i += 2) n += len16(h[i], 'latin1', 'header name') + len32(h[i + 1], 'latin1');
  return n;
}

function writeHeaders(w: Writer, h: readonly string[]): void {
  for (let i = 0; i < h.length; i += 2) {
    w.str16(h[i], 'latin1');
    w.str32(h[i + 1], 'latin1');
  }
}

export function encodeHello(pid: number, secret: Uint8Array): Buffer {
  if (secret.length > 0xffff) throw new RangeError('tsgi: secret too long');
  const w = new Writer(MsgType.HELLO, 0, 4 + 2 + secret.length);
  w.u32(pid);
  w.bytes16(secret);
  return w.done();
}

export type RequestInit = Omit<RequestMsg, 'type' | 'flags' | 'tls' | 'hasBody' | 'authnDone' | 'authzDone'> & {
  tls?: boolean;
  hasBody?: boolean;
  authnDone?: boolean;
  authzDone?: boolean;
};

export function encodeRequest(r: RequestInit): Buffer {
  const flags =
    (r.tls ? RequestFlags.TLS : 0) |
    (r.hasBody ? RequestFlags.HAS_BODY : 0) |
    (r.authnDone ? RequestFlags.AUTHN_DONE : 0) |
    (r.authzDone ? RequestFlags.AUTHZ_DONE : 0);
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
  writeHeaders(w, r.headers);
  if (isLog) {
    w.u16(r.log!.status);
    w.u64(r.log!.bytes);
    w.u64(r.log!.durationUs);
  }
  return w.done();
}

/** A BODY frame header for `len` bytes (write the data right after it). */
export function encodeBodyHeader(len: number, flush = false): Buffer {
  if (len > MAX_FRAME) throw new RangeError(`tsgi frame payload ${len} exceeds ${MAX_FRAME}`);
  const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  writeHeader(b, 0, MsgType.BODY, flush ? BODY_FLUSH : 0, len);
  return b;
}

/**
 * BODY frames for a chunk of any size, without copying the data: alternating
 * headers and views. FLUSH goes on the last frame only.
 */
export function bodyFrames(chunk: Uint8Array, flush = false): Buffer[] {
  const data = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
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

/** BODY frame(s) as one Buffer (copies; fine for small chunks). */
export function encodeBody(chunk: Uint8Array | string, flush = false): Buffer {
  const data = typeof chunk === 'string' ? Buffer.from(chunk) : chunk;
  if (data.length <= MAX_FRAME) {
    const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE + data.length);
    writeHeader(b, 0, MsgType.BODY, flush ? BODY_FLUSH : 0, data.length);
    b.set(data, FRAME_HEADER_SIZE);
    return b;
  }
  return Buffer.concat(bodyFrames(data, flush));
}

const END = (() => {
  const b = Buffer.alloc(FRAME_HEADER_SIZE);
  writeHeader(b, 0, MsgType.END, 0, 0);
  return b;
})();
const GOAWAY = (() => {
  const b = Buffer.alloc(FRAME_HEADER_SIZE);
  writeHeader(b, 0, MsgType.GOAWAY, 0, 0);
  return b;
})();

/** END frame. Returns a shared immutable buffer: do not modify it. */
export function encodeEnd(): Buffer {
  return END;
}

export function encodeGoAway(): Buffer {
  return GOAWAY;
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

/**
 * Response head; `headers` is flat [name, value, ...] (RawResponse.headers), repeats (Set-Cookie) kept;
 * `reason` the statusText ('' for the server's standard phrase).
 */
export function encodeResponseHead(status: number, headers: readonly string[], reason = ''): Buffer {
  const w = new Writer(MsgType.RESPONSE_HEAD, 0, 2 + len16(reason, 'latin1', 'reason') + 2 + headersSize(headers));
  w.u16(status);
  w.str16(reason, 'latin1');
  w.u16(headers.length / 2);
  writeHeaders(w, headers);
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

class Reader {
  off: number;
  constructor(
    private b: Buffer,
    start: number,
    private end: number,
  ) {
    this.off = start;
  }
  private need(n: number): void {
    if (this.off + n > this.end) throw new ProtocolError('tsgi: truncated payload');
  }
  u8(): number {
    this.need(1);
    return this.b[this.off++];
  }
  u16(): number {
    this.need(2);
    const v = this.b.readUInt16LE(this.off);
    this.off += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.b.readUInt32LE(this.off);
    this.off += 4;
    return v;
  }
  u64(): number {
    this.need(8);
    const lo = this.b.readUInt32LE(this.off);
    const hi = this.b.readUInt32LE(this.off + 4);
    this.off += 8;
    if (lo === 0xffffffff && hi === 0xffffffff) return -1;
    if (hi >= 0x200000) throw new ProtocolError('tsgi: 64-bit value out of range');
    return hi * U32 + lo;
  }
  private take(n: number): Buffer {
    this.need(n);
    const v = this.b.subarray(this.off, this.off + n);
    this.off += n;
    return v;
  }
  str16(enc: BufferEncoding): string {
    const n = this.u16();
    this.need(n);
    const s = this.b.toString(enc, this.off, this.off + n);
    this.off += n;
    return s;
  }
  str32(enc: BufferEncoding): string {
    const n = this.u32();
    this.need(n);
    const s = this.b.toString(enc, this.off, this.off + n);
    this.off += n;
    return s;
  }
  bytes16(): Buffer {
    return Buffer.from(this.take(this.u16()));
  }
  headers(count: number): string[] {
    const h = new Array<string>(count * 2);
    for (let i = 0; i < count * 2; i += 2) {
      h[i] = this.str16('latin1');
      h[i + 1] = this.str32('latin1');
    }
    return h;
  }
  finish(): void {
    if (this.off !== this.end) throw new ProtocolError('tsgi: trailing bytes in payload');
  }
}

/**
 * Decodes one frame's payload (buf[start, end)) of the given type. BODY data
 * is a view into `buf`.
 */
export function decodePayload(type: number, flags: number, buf: Buffer, start: number, end: number): Message {
  const r = new Reader(buf, start, end);
  if (type !== MsgType.BODY && flags !== 0) throw new ProtocolError(`tsgi: flags set on frame type ${type}`);
  let m: Message;
  switch (type) {
    case MsgType.BODY:
      if ((flags & ~BODY_FLUSH) !== 0) throw new ProtocolError('tsgi: unknown BODY flags');
      return { type: 'body', flush: (flags & BODY_FLUSH) !== 0, data: buf.subarray(start, end) };
    case MsgType.END:
      m = { type: 'end' };
      break;
    case MsgType.GOAWAY:
      m = { type: 'goaway' };
      break;
    case MsgType.HELLO:
      m = { type: 'hello', pid: r.u32(), secret: r.bytes16() };
      break;
    case MsgType.ABORT:
      m = { type: 'abort', reason: r.u8() };
      break;
    case MsgType.WELCOME:
      m = { type: 'welcome', pid: r.u32() };
      break;
    case MsgType.RESPONSE_HEAD: {
      const status = r.u16();
      const reason = r.str16('latin1');
      m = { type: 'response', status, reason, headers: r.headers(r.u16()) };
      break;
    }
    case MsgType.DECISION: {
      const kind = r.u8();
      if (kind > 1) throw new ProtocolError('tsgi: bad DECISION kind');
      const user = r.str16('utf8');
      if (kind === 0 && user !== '') throw new ProtocolError('tsgi: DECISION kind 0 with a user');
      m = { type: 'decision', user: kind === 1 ? user : undefined };
      break;
    }
    case MsgType.ERROR:
      m = { type: 'error', status: r.u16(), retryAfter: r.u16(), message: r.str16('utf8') };
      break;
    case MsgType.REQUEST:
      m = decodeRequest(r);
      break;
    default:
      throw new ProtocolError(`tsgi: unknown frame type ${type}`);
  }
  r.finish();
  return m;
}

function decodeRequest(r: Reader): RequestMsg {
  const phase = r.u8();
  if (phase > 3) throw new ProtocolError('tsgi: bad phase');
  const flags = r.u8();
  if (flags & ~0x0f) throw new ProtocolError('tsgi: unknown request flags');
  const clientPort = r.u16();
  const serverPort = r.u16();
  const count = r.u16();
  const m: RequestMsg = {
    type: 'request',
    phase: phase as PhaseCode,
    flags,
    tls: (flags & RequestFlags.TLS) !== 0,
    hasBody: (flags & RequestFlags.HAS_BODY) !== 0,
    authnDone: (flags & RequestFlags.AUTHN_DONE) !== 0,
    authzDone: (flags & RequestFlags.AUTHZ_DONE) !== 0,
    clientPort,
    serverPort,
    contentLength: r.u64(),
    startUs: r.u64(),
    method: r.str16('latin1'),
    uri: r.str32('latin1'),
    protocol: r.str16('latin1'),
    scheme: r.str16('latin1'),
    host: r.str16('latin1'),
    clientIp: r.str16('latin1'),
    serverIp: r.str16('latin1'),
    user: r.str16('utf8'),
    id: r.str16('utf8'),
    basePath: r.str16('latin1'),
    headers: r.headers(count),
  };
  if (m.startUs < 0) throw new ProtocolError('tsgi: bad start time');
  if (phase === Phase.LOG) {
    const status = r.u16();
    const bytes = r.u64();
    const durationUs = r.u64();
    if (bytes < 0 || durationUs < 0) throw new ProtocolError('tsgi: bad log values');
    m.log = { status, bytes, durationUs };
  }
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
  return decodePayload(frame[1], frame[2], frame, FRAME_HEADER_SIZE, frame.length);
}

/**
 * Incremental parser for a socket: push() each chunk, get the complete
 * messages. Any error is fatal for the connection (the reader stays broken).
 */
export class FrameReader {
  private pending: Buffer | null = null;
  private broken: ProtocolError | null = null;

  push(chunk: Buffer): Message[] {
    if (this.broken) throw this.broken;
    let buf = chunk;
    if (this.pending) {
      buf = Buffer.concat([this.pending, chunk]);
      this.pending = null;
    }
    const out: Message[] = [];
    let at = 0;
    try {
      while (buf.length - at >= FRAME_HEADER_SIZE) {
        const len = checkFrameHeader(buf, at);
        const end = at + FRAME_HEADER_SIZE + len;
        if (end > buf.length) break;
        out.push(decodePayload(buf[at + 1], buf[at + 2], buf, at + FRAME_HEADER_SIZE, end));
        at = end;
      }
    } catch (err) {
      this.broken = err instanceof ProtocolError ? err : new ProtocolError(String(err));
      throw this.broken;
    }
    if (at < buf.length) {
      // Copy the tail only when earlier messages may still hold views into buf.
      this.pending = at === 0 ? buf : Buffer.from(buf.subarray(at));
    }
    return out;
  }

  /** Bytes held for an incomplete frame (non-zero at EOF means a truncated message). */
  get buffered(): number {
    return this.pending?.length ?? 0;
  }
}
