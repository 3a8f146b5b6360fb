/**
 * The Node worker process that mod_tsgi's Apache parent spawns and supervises
 * (PROTOCOL.md, "Worker process contract"). It accepts Apache children's
 * connections on the inherited listening socket (fd 3), checks the per-start
 * secret (read from the pipe on fd 4), and runs the handler's pipeline for
 * each REQUEST frame.
 *
 * Run as `node dist/worker.js` (the handler comes from TSGI_HANDLER), or as
 * one bundle (core's bundleWorker) whose entry calls runWorker — what
 * `tsgi apache run` generates, so an unprivileged worker reads one file.
 */
import { timingSafeEqual } from 'node:crypto';
import { closeSync, readFileSync, realpathSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import {
  assertHandler,
  internalError,
  plainResponse,
  runAuthenticate,
  runAuthorize,
  runFetch,
  runLog,
  runPipeline,
  BAD_REQUEST_TEXT,
  FIRST_CHUNK_WAIT_MS,
  contentLengthRule,
  isHopByHop,
  sendsBody,
  statusHasNoBody,
  toRawResponse,
  type ErrorLogger,
  type Handler,
  type RawResponse,
} from '@tsgi/core';
import { Lifecycle, RequestContext, StartupError, initHandler, loadFailure, loadHandler } from '@tsgi/core/node';
import {
  FRAME_HEADER_SIZE,
  MAX_FRAME,
  MsgType,
  Phase,
  ProtocolError,
  checkFrameHeader,
  decodePayload,
  encodeDecision,
  encodeEnd,
  encodeError,
  encodeGoAway,
  encodeWelcome,
  type RequestMsg,
} from './protocol.js';
import { ApacheRequest, BodySource, abortError, requestTarget, requestUrl, type BodyFlow } from './request.js';

export interface WorkerOptions {
  /** Daemon name, for log lines. */
  daemon: string;
  listenFd: number;
  /** The per-start secret HELLO must carry. */
  secret: Buffer;
  /** Recycle after this many requests (0 = never). */
  maxRequests: number;
  /** Refuse with ERROR 503 beyond this many requests in flight (0 = no limit). */
  maxInflight: number;
  /** Refuse with ERROR 503 when a request waited longer than this before reaching us (0 = off). */
  queueTimeoutMs: number;
  gracefulTimeoutMs: number;
}

const num = (v: string | undefined, dflt: number): number => {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n >= 0 ? n : dflt;
};

/** Reads the worker settings mod_tsgi passes (environment + the secret pipe). */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerOptions {
  const listenFd = num(env.TSGI_LISTEN_FD, 3);
  const secretFd = num(env.TSGI_SECRET_FD, 4);
  let hex: string;
  try {
    hex = readFileSync(secretFd, 'latin1').trim();
    closeSync(secretFd);
  } catch (err) {
    throw new StartupError(`cannot read the secret from fd ${secretFd} (is this worker started by mod_tsgi?): ${(err as Error).message}`);
  }
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new StartupError(`bad secret on fd ${secretFd}: expected 64 hex characters`);
  return {
    daemon: env.TSGI_DAEMON ?? 'tsgi',
    listenFd,
    secret: Buffer.from(hex, 'hex'),
    maxRequests: num(env.TSGI_MAX_REQUESTS, 0),
    maxInflight: num(env.TSGI_MAX_INFLIGHT, 0),
    queueTimeoutMs: num(env.TSGI_QUEUE_TIMEOUT, 0) * 1000,
    gracefulTimeoutMs: num(env.TSGI_GRACEFUL_TIMEOUT, 15) * 1000,
  };
}

const WELCOME = encodeWelcome(process.pid);
const END = encodeEnd();
const GOAWAY = encodeGoAway();
const NO_OPINION = encodeDecision();
/** An empty flushed BODY frame: Apache sends a stream's head to the client on it. */
const FLUSH_HEAD = bodyHeader(0, true);
/** After GOAWAY, an idle connection stays open this long for a REQUEST that crossed it. */
const LINGER_MS = 250;
/** Bodies up to this size are copied into the frame buffer; larger ones are written as views. */
const COPY_LIMIT = 64 << 10;

/**
 * The handler's headers as they go on the wire: hop-by-hop names dropped, and
 * Content-Length as core's contentLengthRule says (`length` is the fixed body's
 * byte count, or -1 for a stream). Names are only lower-cased when their length
 * could match, so the common headers cost a length check.
 */
function wireHeaders(h: string[], status: number, length: number): string[] {
  const rule = contentLengthRule(status, length >= 0);
  let out: string[] | null = null;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const n = name.length;
    let drop = false;
    if (n === 14) drop = rule !== 'handler' && name.toLowerCase() === 'content-length';
    else if (n === 2 || n === 7 || n === 10 || n === 16 || n === 17) drop = isHopByHop(name.toLowerCase());
    if (drop && !out) out = h.slice(0, i);
    else if (!drop && out) out.push(name, h[i + 1]!);
  }
  const res = out ?? h;
  if (rule === 'server') res.push('content-length', String(length));
  return res;
}

/** RESPONSE_HEAD (status, reason phrase, headers), BODY frames for `body` (none when head-only) and END, in one buffer. */
function encodeWhole(status: number, reason: string, headers: string[], body: Buffer | string | null, sendBody: boolean): Buffer {
  let headLen = 6 + reason.length;
  for (let i = 0; i < headers.length; i += 2) headLen += 6 + headers[i]!.length + headers[i + 1]!.length;
  const n = body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.length;
  const bodyLen = sendBody && n > 0 ? n + FRAME_HEADER_SIZE * Math.ceil(n / MAX_FRAME) : 0;
  const buf = Buffer.allocUnsafe(FRAME_HEADER_SIZE + headLen + bodyLen + FRAME_HEADER_SIZE);
  let o = frameHeader(buf, 0, MsgType.RESPONSE_HEAD, 0, headLen);
  buf.writeUInt16LE(status, o);
  buf.writeUInt16LE(reason.length, o + 2);
  o += 4;
  if (reason.length > 0) o += buf.write(reason, o, 'latin1');
  buf.writeUInt16LE(headers.length / 2, o);
  o += 2;
  for (let i = 0; i < headers.length; i += 2) {
    const name = headers[i]!;
    const value = headers[i + 1]!;
    buf.writeUInt16LE(name.length, o);
    o += 2;
    o += buf.write(name, o, 'latin1');
    buf.writeUInt32LE(value.length, o);
    o += 4;
    o += buf.write(value, o, 'latin1');
  }
  if (bodyLen > 0) {
    if (n <= MAX_FRAME) {
      o = frameHeader(buf, o, MsgType.BODY, 0, n);
      o += typeof body === 'string' ? buf.write(body, o, 'utf8') : (body as Buffer).copy(buf, o);
    } else {
      const bytes = typeof body === 'string' ? Buffer.from(body) : (body as Buffer);
      for (let at = 0; at < n; at += MAX_FRAME) {
        const len = Math.min(MAX_FRAME, n - at);
        o = frameHeader(buf, o, MsgType.BODY, 0, len);
        o += bytes.copy(buf, o, at, at + len);
      }
    }
  }
  frameHeader(buf, o, MsgType.END, 0, 0);
  return buf;
}

/** Longer reason phrases are not sent (the server's standard one is): the frame field is a str16. */
const MAX_REASON = 1024;

/** The statusText to send: toRawResponse has checked its characters. */
const reasonOf = (raw: RawResponse): string => (raw.statusText.length <= MAX_REASON ? raw.statusText : '');

function frameHeader(buf: Buffer, at: number, type: number, flags: number, len: number): number {
  buf[at] = 1;
  buf[at + 1] = type;
  buf[at + 2] = flags;
  buf[at + 3] = 0;
  buf.writeUInt32LE(len, at + 4);
  return at + FRAME_HEADER_SIZE;
}

function bodyHeader(len: number, flush: boolean): Buffer {
  const b = Buffer.allocUnsafe(FRAME_HEADER_SIZE);
  frameHeader(b, 0, MsgType.BODY, flush ? 1 : 0, len);
  return b;
}

// ---- REQUEST decoding for the hot path: the same checks as protocol.ts's decodePayload,
// but the header strings are only decoded when the handler reads request.headers.

let at = 0;
let lim = 0;

function need(b: Buffer, n: number): void {
  if (at + n > lim) throw new ProtocolError('tsgi: truncated REQUEST payload');
}

function u16(b: Buffer): number {
  need(b, 2);
  const v = b[at]! | (b[at + 1]! << 8);
  at += 2;
  return v;
}

function u32(b: Buffer): number {
  need(b, 4);
  const v = b.readUInt32LE(at);
  at += 4;
  return v;
}

function u64(b: Buffer): number {
  const lo = u32(b);
  const hi = u32(b);
  if (lo === 0xffffffff && hi === 0xffffffff) return -1;
  if (hi >= 0x200000) throw new ProtocolError('tsgi: 64-bit value out of range');
  return hi * 0x1_0000_0000 + lo;
}

function str16(b: Buffer, enc: 'latin1' | 'utf8'): string {
  const n = u16(b);
  need(b, n);
  const v = n === 0 ? '' : b.toString(enc, at, at + n);
  at += n;
  return v;
}

function skip16(b: Buffer): void {
  const n = u16(b);
  need(b, n);
  at += n;
}

function skip32(b: Buffer): void {
  const n = u32(b);
  need(b, n);
  at += n;
}

class LazyRequestMsg implements RequestMsg {
  readonly type = 'request' as const;
  phase: RequestMsg['phase'];
  flags: number;
  tls: boolean;
  hasBody: boolean;
  authnDone: boolean;
  authzDone: boolean;
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
  log?: RequestMsg['log'];
  /** Where the header block starts in buf. */
  hAt = 0;
  private _h: string[] | undefined = undefined;

  constructor(
    private buf: Buffer,
    private hCount: number,
    phase: number,
    flags: number,
  ) {
    this.phase = phase as RequestMsg['phase'];
    this.flags = flags;
    this.tls = (flags & 1) !== 0;
    this.hasBody = (flags & 2) !== 0;
    this.authnDone = (flags & 4) !== 0;
    this.authzDone = (flags & 8) !== 0;
    this.clientPort = u16(buf);
    this.serverPort = u16(buf);
    u16(buf); // header count, read by the caller
    this.contentLength = u64(buf);
    this.startUs = u64(buf);
    this.method = str16(buf, 'latin1');
    const n = u32(buf);
    need(buf, n);
    this.uri = buf.toString('latin1', at, at + n);
    at += n;
    this.protocol = str16(buf, 'latin1');
    this.scheme = str16(buf, 'latin1');
    this.host = str16(buf, 'latin1');
    this.clientIp = str16(buf, 'latin1');
    this.serverIp = str16(buf, 'latin1');
    this.user = str16(buf, 'utf8');
    this.id = str16(buf, 'utf8');
    this.basePath = str16(buf, 'latin1');
  }

  get headers(): string[] {
    if (this._h) return this._h;
    const b = this.buf;
    const h = new Array<string>(this.hCount * 2);
    let o = this.hAt;
    for (let i = 0; i < h.length; i += 2) {
      const nl = b[o]! | (b[o + 1]! << 8);
      h[i] = b.toString('latin1', o + 2, o + 2 + nl);
      o += 2 + nl;
      const vl = b.readUInt32LE(o);
      h[i + 1] = b.toString('latin1', o + 4, o + 4 + vl);
      o += 4 + vl;
    }
    return (this._h = h);
  }
}

/** Decodes a REQUEST payload buf[start, end); throws ProtocolError like decodePayload. */
export function decodeRequestFrame(buf: Buffer, start: number, end: number): RequestMsg {
  at = start;
  lim = end;
  need(buf, 8);
  const phase = buf[start]!;
  const flags = buf[start + 1]!;
  if (phase > 3) throw new ProtocolError('tsgi: bad phase');
  if (flags & ~0x0f) throw new ProtocolError('tsgi: unknown request flags');
  const count = buf[start + 6]! | (buf[start + 7]! << 8);
  at = start + 2;
  const m = new LazyRequestMsg(buf, count, phase, flags);
  if (m.startUs < 0) throw new ProtocolError('tsgi: bad start time');
  // Walk the headers (lengths only) so a bad payload is refused here, not when read.
  m.hAt = at;
  for (let i = 0; i < count; i++) {
    skip16(buf);
    skip32(buf);
  }
  if (phase === Phase.LOG) {
    const status = u16(buf);
    const bytes = u64(buf);
    const durationUs = u64(buf);
    if (bytes < 0 || durationUs < 0) throw new ProtocolError('tsgi: bad log values');
    m.log = { status, bytes, durationUs };
  }
  if (at !== end) throw new ProtocolError('tsgi: trailing bytes in payload');
  return m;
}

const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/** One accepted connection from an Apache child: sequential exchanges. */
class Conn implements BodyFlow {
  authed = false;
  /** The exchange whose response is being produced. */
  ex: ApacheRequest | null = null;
  /** Receiving body frames (until END); `body` is where they go (null: discard). */
  bodyOpen = false;
  body: BodySource | null = null;
  goaway = false;
  closed = false;
  private parts: Buffer[] = [];
  private plen = 0;
  private need = 0;
  private drainWait: (() => void) | null = null;
  private linger: NodeJS.Timeout | null = null;

  constructor(
    readonly sock: Socket,
    readonly w: Worker,
  ) {
    sock.on('data', (c: Buffer) => this.onData(c));
    sock.on('drain', () => this.wakeDrain());
    sock.on('error', () => {}); // EPIPE/ECONNRESET: 'close' follows
    sock.on('close', () => this.onClose());
    sock.write(WELCOME);
  }

  pauseReading(): void {
    this.sock.pause();
  }

  resumeReading(): void {
    if (!this.closed) this.sock.resume();
  }

  get idle(): boolean {
    return this.ex === null && !this.bodyOpen;
  }

  /** Resolves once the socket can take more (or is gone). */
  drained(): Promise<void> {
    return new Promise((r) => (this.drainWait = r));
  }

  private wakeDrain(): void {
    const d = this.drainWait;
    if (d) {
      this.drainWait = null;
      d();
    }
  }

  private onData(chunk: Buffer): void {
    if (this.plen > 0) {
      this.parts.push(chunk);
      this.plen += chunk.length;
      if (this.plen < this.need) return;
      chunk = Buffer.concat(this.parts, this.plen);
      this.parts = [];
      this.plen = 0;
    }
    let at = 0;
    try {
      while (chunk.length - at >= FRAME_HEADER_SIZE) {
        const len = checkFrameHeader(chunk, at);
        const end = at + FRAME_HEADER_SIZE + len;
        if (end > chunk.length) break;
        this.frame(chunk[at + 1]!, chunk[at + 2]!, chunk, at + FRAME_HEADER_SIZE, end);
        if (this.closed) return;
        at = end;
      }
    } catch (err) {
      this.w.log(`protocol error from Apache, closing the connection: ${(err as Error).message}`);
      this.destroy(err);
      return;
    }
    if (at < chunk.length) {
      const rest = chunk.subarray(at);
      this.parts = [rest];
      this.plen = rest.length;
      this.need = rest.length >= FRAME_HEADER_SIZE ? FRAME_HEADER_SIZE + rest.readUInt32LE(4) : FRAME_HEADER_SIZE;
    }
  }

  private frame(type: number, flags: number, buf: Buffer, start: number, end: number): void {
    if (type === MsgType.BODY) {
      if (!this.bodyOpen) throw new ProtocolError('BODY outside a request body');
      if (flags & ~1) throw new ProtocolError('unknown BODY flags');
      this.body?.push(buf.subarray(start, end));
      return;
    }
    if (!this.authed) {
      const m = decodePayload(type, flags, buf, start, end);
      if (m.type !== 'hello') throw new ProtocolError(`expected HELLO, got ${m.type}`);
      const s = this.w.opts.secret;
      if (m.secret.length !== s.length || !timingSafeEqual(m.secret, s)) {
        this.w.log(`connection with a wrong secret (pid ${m.pid}) refused`);
        this.destroy();
        return;
      }
      this.authed = true;
      return;
    }
    switch (type) {
      case MsgType.REQUEST: {
        if (this.bodyOpen || this.ex) throw new ProtocolError('REQUEST during another exchange');
        if (flags) throw new ProtocolError('flags on REQUEST');
        const m = decodeRequestFrame(buf, start, end);
        if (this.linger) {
          clearTimeout(this.linger);
          this.linger = null;
        }
        let body: BodySource | null = null;
        if (m.hasBody) {
          this.bodyOpen = true;
          if (m.method !== 'GET' && m.method !== 'HEAD' && m.phase !== Phase.LOG) body = this.body = new BodySource(this);
        }
        this.w.request(this, m, body);
        return;
      }
      case MsgType.END:
        if (flags) throw new ProtocolError('flags on END');
        if (!this.bodyOpen) throw new ProtocolError('END outside a request body');
        this.bodyOpen = false;
        this.body?.end();
        this.body = null;
        if (this.idle) this.afterExchange();
        return;
      case MsgType.ABORT: {
        const m = decodePayload(type, flags, buf, start, end);
        const reason = m.type === 'abort' ? m.reason : 0;
        const why = reason === 2 ? 'request-timeout' : reason === 1 ? 'the client disconnected' : reason === 3 ? 'request body too large' : 'Apache aborted the request';
        this.destroy(abortError(`tsgi: ${why}`));
        return;
      }
      default:
        throw new ProtocolError(`unexpected frame type 0x${type.toString(16)}`);
    }
  }

  /** The response (or decision) of the current exchange is fully written. */
  exchangeDone(req: ApacheRequest): void {
    if (this.ex !== req) return;
    this.ex = null;
    // Whatever the handler left unread is discarded; the socket must keep flowing up to END.
    req._body?.release();
    if (this.idle) this.afterExchange();
  }

  private afterExchange(): void {
    if (this.w.draining) this.goAway();
  }

  /** Draining: tell Apache not to reuse this connection; close it once idle. */
  goAway(): void {
    if (this.closed) return;
    if (!this.goaway) {
      this.goaway = true;
      this.sock.write(GOAWAY);
    }
    if (this.idle && !this.linger) {
      this.linger = setTimeout(() => {
        this.linger = null;
        // destroySoon, not end: Apache may not close its side until it next looks at the pooled connection.
        if (this.idle) this.sock.destroySoon();
      }, LINGER_MS);
    }
  }

  destroy(reason?: unknown): void {
    if (this.closed) return;
    this.abortAll(reason ?? abortError('tsgi: connection to Apache lost'));
    this.sock.destroy();
  }

  private abortAll(reason: unknown): void {
    this.body?.fail(reason);
    this.ex?._abort(reason);
  }

  private onClose(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.linger) clearTimeout(this.linger);
    this.abortAll(abortError('tsgi: connection to Apache lost'));
    this.wakeDrain();
    this.w.connClosed(this);
  }
}

export class Worker {
  readonly lifecycle: Lifecycle;
  readonly log: ErrorLogger;
  draining = false;
  private conns = new Set<Conn>();
  private server: Server | null = null;
  private served = 0;
  private hasLog: boolean;
  private exitTimer: NodeJS.Timeout | null = null;
  private finishing = false;

  constructor(
    readonly handler: Handler,
    readonly opts: WorkerOptions,
  ) {
    const tag = `[tsgi ${opts.daemon} worker pid ${process.pid}]`;
    this.log = (message, error) => {
      if (error === undefined) console.error(`${tag} ${message}`);
      else console.error(`${tag} ${message}:`, error);
    };
    this.lifecycle = new Lifecycle(this.log);
    this.hasLog = typeof handler.log === 'function';
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = (this.server = createServer((sock) => this.accept(sock)));
      server.once('error', reject);
      server.listen({ fd: this.opts.listenFd }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log('listening socket failed', err));
        resolve();
      });
    });
  }

  private accept(sock: Socket): void {
    if (this.draining) {
      sock.destroy();
      return;
    }
    this.conns.add(new Conn(sock, this));
  }

  connClosed(c: Conn): void {
    this.conns.delete(c);
    if (this.draining) this.maybeFinish();
  }

  /** One REQUEST frame. */
  request(conn: Conn, m: RequestMsg, body: BodySource | null): void {
    if (m.phase === Phase.LOG) {
      this.logPhase(m);
      return;
    }
    const o = this.opts;
    if (o.maxInflight > 0 && this.lifecycle.inflight >= o.maxInflight) {
      this.refuse(conn, body, `${this.lifecycle.inflight} requests in flight (max ${o.maxInflight})`);
      return;
    }
    if (o.queueTimeoutMs > 0 && Date.now() - m.startUs / 1000 > o.queueTimeoutMs) {
      this.refuse(conn, body, `request waited longer than queue-timeout (${o.queueTimeoutMs / 1000} s)`);
      return;
    }
    const target = requestTarget(m);
    this.lifecycle.begin();
    const start = this.hasLog ? performance.now() : 0;
    const refused = 'status' in target;
    const req = new ApacheRequest(m, body, refused ? { authority: 'localhost', path: '/' } : target);
    const ctx = new RequestContext('apache', m.clientIp, this.lifecycle, m.id || undefined, m.user || undefined, m.basePath);
    conn.ex = req;
    if (refused) {
      // Refused before any hook runs, as Node and nginx refuse it while parsing.
      this.log(`request ${ctx.id}: ${target.reason} (400)`);
      this.respond(conn, req, ctx, plainResponse(400, BAD_REQUEST_TEXT), start, false);
      return;
    }
    const h = this.handler;
    const r = req as unknown as Request;
    let out: Response | Promise<Response | undefined> | undefined;
    switch (m.phase) {
      case Phase.FULL:
        out = m.authnDone || m.authzDone ? this.partialPipeline(r, ctx, m.authnDone, m.authzDone) : runPipeline(h, r, ctx, this.log);
        break;
      case Phase.AUTHENTICATE: {
        const before = ctx.user;
        out = runAuthenticate(h, r, ctx).then((rejected) => {
          if (rejected) return rejected;
          this.decision(conn, req, ctx.user !== undefined && ctx.user !== before ? ctx.user : undefined);
          return undefined;
        }, this.failed(ctx, 'authenticate'));
        break;
      }
      default:
        out = runAuthorize(h, r, ctx).then((rejected) => {
          if (rejected) return rejected;
          this.decision(conn, req, undefined);
          return undefined;
        }, this.failed(ctx, 'authorize'));
    }
    if (out instanceof Promise) {
      out.then(
        (res) => {
          if (res) this.respond(conn, req, ctx, res, start, m.phase === Phase.FULL);
        },
        (err) => {
          this.log(`request ${ctx.id}: pipeline failed`, err);
          this.respond(conn, req, ctx, internalError(), start, m.phase === Phase.FULL);
        },
      );
    } else if (out) {
      this.respond(conn, req, ctx, out, start, true);
    }
  }

  private failed(ctx: RequestContext, phase: string) {
    return (err: unknown): Response => {
      this.log(`request ${ctx.id}: ${phase} threw`, err);
      return internalError();
    };
  }

  /** FULL phase where Apache already ran some hooks (TsgiAuthenticate/TsgiAuthorize on a tsgi location). */
  private async partialPipeline(r: Request, ctx: RequestContext, authnDone: boolean, authzDone: boolean): Promise<Response> {
    try {
      const rejected = (authnDone ? undefined : await runAuthenticate(this.handler, r, ctx)) ?? (authzDone ? undefined : await runAuthorize(this.handler, r, ctx));
      if (rejected) return rejected;
    } catch (err) {
      return this.failed(ctx, 'authenticate/authorize')(err);
    }
    return runFetch(this.handler, r, ctx, this.log);
  }

  private refuse(conn: Conn, body: BodySource | null, why: string): void {
    body?.cancel();
    this.log(`refusing a request: ${why}`);
    conn.sock.write(encodeError(503, 1, why));
    // No exchange ran: the connection is free again once the body (if any) has arrived.
    if (conn.idle && this.draining) conn.goAway();
  }

  private decision(conn: Conn, req: ApacheRequest, user: string | undefined): void {
    if (!conn.closed && req._aborted === undefined) conn.sock.write(user === undefined ? NO_OPINION : encodeDecision(user));
    this.finish(conn, req, null, 0, 0, 0, false);
  }

  private logPhase(m: RequestMsg): void {
    if (!this.hasLog || !m.log) return;
    const ctx = new RequestContext('apache', m.clientIp, this.lifecycle, m.id || undefined, m.user || undefined, m.basePath);
    runLog(
      this.handler,
      { method: m.method, url: requestUrl(m), status: m.log.status, bytes: m.log.bytes, durationMs: m.log.durationUs / 1000, user: ctx.user },
      ctx,
      this.log,
    );
  }

  /** Writes a Response; string and byte bodies go out in one write, streams chunk by chunk. */
  private respond(conn: Conn, req: ApacheRequest, ctx: RequestContext, res: Response, start: number, content: boolean): void {
    let raw: RawResponse;
    try {
      raw = toRawResponse(res);
    } catch (err) {
      // A header the wire can't carry (CR/LF, bad name) or a bad status: the bare 500 instead.
      this.log(`request ${ctx.id}: invalid response`, err);
      raw = toRawResponse(internalError());
    }
    const body = raw.body;
    if (conn.closed || req._aborted !== undefined) {
      if (body instanceof ReadableStream) void body.cancel(req._aborted).catch(() => {});
      this.finish(conn, req, ctx, raw.status, 0, start, content);
      return;
    }
    const sendBody = sendsBody(req._m.method, raw.status);
    if (!(body instanceof ReadableStream)) {
      const bytes = body === null || statusHasNoBody(raw.status) ? null : typeof body === 'string' ? body : asBuffer(body);
      const length = bytes === null ? 0 : typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
      const headers = wireHeaders(raw.headers, raw.status, length);
      if (bytes !== null && typeof bytes !== 'string' && bytes.length > COPY_LIMIT && sendBody) {
        // Large bytes: frame headers around views, no copy.
        const s = conn.sock;
        s.cork();
        s.write(encodeWhole(raw.status, reasonOf(raw), headers, null, false).subarray(0, -FRAME_HEADER_SIZE));
        for (let at = 0; at < bytes.length; at += MAX_FRAME) {
          const len = Math.min(MAX_FRAME, bytes.length - at);
          s.write(bodyHeader(len, false));
          s.write(bytes.subarray(at, at + len));
        }
        s.write(END);
        s.uncork();
      } else {
        conn.sock.write(encodeWhole(raw.status, reasonOf(raw), headers, bytes, sendBody));
      }
      this.finish(conn, req, ctx, raw.status, sendBody ? length : 0, start, content);
      return;
    }
    const headers = wireHeaders(raw.headers, raw.status, -1);
    if (!sendBody) {
      // HEAD (or 204/304): headers only; let the stream go at once, even an endless one.
      void body.cancel().catch(() => {});
      conn.sock.write(encodeWhole(raw.status, reasonOf(raw), headers, null, false));
      this.finish(conn, req, ctx, raw.status, 0, start, content);
      return;
    }
    this.stream(conn, req, ctx, raw.status, reasonOf(raw), headers, body, start, content);
  }

  /**
   * A stream's head leaves with its first chunk, or FIRST_CHUNK_WAIT_MS without
   * one (an empty flushed BODY frame makes Apache send it to the client), so
   * an SSE stream that waits still gets its head promptly while one that fails
   * at once still gets the bare 500. A request aborted at any point (client
   * gone, request-timeout) cancels the stream, also before its first chunk.
   */
  private stream(
    conn: Conn,
    req: ApacheRequest,
    ctx: RequestContext,
    status: number,
    reason: string,
    headers: string[],
    body: ReadableStream<Uint8Array>,
    start: number,
    content: boolean,
  ): void {
    const reader = body.getReader();
    let headSent = false;
    const sendHead = () => {
      if (headSent) return;
      headSent = true;
      conn.sock.write(encodeWhole(status, reason, headers, null, false).subarray(0, -FRAME_HEADER_SIZE));
    };
    const timer = setTimeout(() => {
      if (conn.closed || req._aborted !== undefined) return;
      sendHead();
      conn.sock.write(FLUSH_HEAD);
    }, FIRST_CHUNK_WAIT_MS);
    req._onAbort = (reason) => {
      clearTimeout(timer);
      void reader.cancel(reason).catch(() => {});
    };
    const done = (bytes: number) => {
      req._onAbort = undefined;
      this.finish(conn, req, ctx, status, bytes, start, content);
    };
    reader.read().then(
      (first) => {
        clearTimeout(timer);
        if (conn.closed || req._aborted !== undefined) {
          void reader.cancel(req._aborted).catch(() => {});
          done(0);
          return;
        }
        sendHead();
        this.pump(conn, req, reader, first).then(done, (err) => {
          // Headers are out: all we can do is drop the connection (Apache aborts the client's).
          this.log(`request ${ctx.id}: response stream failed`, err);
          conn.destroy(err);
          done(0);
        });
      },
      (err) => {
        clearTimeout(timer);
        if (conn.closed || req._aborted !== undefined) {
          done(0);
        } else if (headSent) {
          this.log(`request ${ctx.id}: response stream failed before its first chunk`, err);
          conn.destroy(err);
          done(0);
        } else {
          this.log(`request ${ctx.id}: response stream failed before its first chunk`, err);
          req._onAbort = undefined;
          this.respond(conn, req, ctx, internalError(), start, content);
        }
      },
    );
  }

  /** Streams a body: one BODY frame per chunk, flushed, waiting for the socket when it is full. */
  private async pump(
    conn: Conn,
    req: ApacheRequest,
    reader: ReadableStreamDefaultReader<Uint8Array>,
    first: ReadableStreamReadResult<Uint8Array>,
  ): Promise<number> {
    let bytes = 0;
    let next: ReadableStreamReadResult<Uint8Array> | null = first;
    try {
      for (;;) {
        if (conn.closed || req._aborted !== undefined) {
          void reader.cancel(req._aborted).catch(() => {});
          return bytes;
        }
        const { done, value } = next ?? (await reader.read());
        next = null;
        if (done) break;
        if (conn.closed || req._aborted !== undefined) continue;
        if (!(value instanceof Uint8Array)) throw new TypeError('response body chunks must be Uint8Array');
        if (value.length === 0) continue;
        bytes += value.length;
        const s = conn.sock;
        const data = asBuffer(value);
        let ok = true;
        for (let at = 0; at < data.length; at += MAX_FRAME) {
          const len = Math.min(MAX_FRAME, data.length - at);
          s.write(bodyHeader(len, at + len >= data.length));
          ok = s.write(at === 0 && len === data.length ? data : data.subarray(at, at + len));
        }
        if (!ok) await conn.drained();
      }
      if (!conn.closed && req._aborted === undefined) conn.sock.write(END);
      return bytes;
    } finally {
      try {
        reader.releaseLock();
      } catch {
        // a read still pending on a cancelled stream
      }
    }
  }

  private finish(conn: Conn, req: ApacheRequest, ctx: RequestContext | null, status: number, bytes: number, start: number, content: boolean): void {
    this.lifecycle.end();
    conn.exchangeDone(req);
    if (content && this.hasLog && ctx) {
      runLog(
        this.handler,
        { method: req.method, url: req.url, status, bytes, durationMs: performance.now() - start, user: ctx.user },
        ctx,
        this.log,
      );
    }
    if (++this.served === this.opts.maxRequests) {
      this.log(`served ${this.served} requests (max-requests): recycling`);
      this.drain();
    } else if (this.draining) {
      this.maybeFinish();
    }
  }

  /** Stop accepting, let in-flight exchanges finish, close connections as they go idle, then exit. */
  drain(): void {
    if (this.draining) return;
    this.draining = true;
    this.server?.close();
    for (const c of this.conns) c.goAway();
    this.exitTimer = setTimeout(() => {
      this.log(`graceful-timeout (${this.opts.gracefulTimeoutMs / 1000} s) reached with ${this.lifecycle.inflight} request(s) in flight`);
      for (const c of this.conns) c.destroy();
      void this.exit(1000);
    }, this.opts.gracefulTimeoutMs);
    this.exitTimer.unref();
    this.maybeFinish();
  }

  private maybeFinish(): void {
    if (this.conns.size === 0 && this.lifecycle.inflight === 0) void this.exit(this.opts.gracefulTimeoutMs);
  }

  private async exit(waitMs: number): Promise<void> {
    if (this.finishing) return;
    this.finishing = true;
    if (this.exitTimer) clearTimeout(this.exitTimer);
    // waitUntil work still gets time (the parent SIGKILLs at graceful-timeout + 5 s).
    if (!(await this.lifecycle.drain(Math.max(1000, waitMs)))) {
      this.log('waitUntil work still pending at exit');
    }
    try {
      await this.handler.close?.();
    } catch (err) {
      this.log('close() failed', err);
    }
    process.exit(0);
  }
}

/**
 * Starts a worker for a loaded handler module (the default export, or the
 * module itself, is the handler). Start-up failures say why in one line and exit 78.
 */
export async function startWorker(mod: unknown, opts?: WorkerOptions): Promise<Worker> {
  try {
    const handler = assertHandler(mod, process.env.TSGI_HANDLER ?? 'handler');
    const o = opts ?? optionsFromEnv();
    await initHandler(handler, { server: 'apache', env: process.env });
    const w = new Worker(handler, o);
    await w.listen();
    closeStatusFd();
    const stop = () => w.drain();
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return w;
  } catch (err) {
    fatal(err);
  }
}

/**
 * The entry of a worker bundle (core's bundleWorker, for `tsgi apache run`):
 * `load` imports the handler module, so a throw while it loads is a start-up
 * failure like any other (one line, exit 78).
 */
export async function runWorker(load: () => Promise<unknown>, where: string): Promise<Worker> {
  let mod: unknown;
  try {
    mod = await load();
  } catch (err) {
    fatal(loadFailure(where, err));
  }
  return startWorker(mod);
}

/** The status pipe is only for a start-up failure: once started, the handler's child processes must not inherit it. */
function closeStatusFd(): void {
  const fd = Number(process.env.TSGI_STATUS_FD);
  if (Number.isInteger(fd) && fd > 2) {
    try {
      closeSync(fd);
    } catch {
      // not open
    }
  }
}

/** EX_CONFIG: the worker cannot start; mod_tsgi backs off instead of respawning at once (decision 9). */
export const EXIT_STARTUP = 78;

/**
 * A start-up failure: one line saying why, then exit 78. The line goes to the
 * status pipe (TSGI_STATUS_FD) when mod_tsgi gave one, so that mod_tsgi logs it
 * once with its next attempt; else to stderr (the error log).
 */
function fatal(err: unknown): never {
  const msg = (err instanceof Error ? err.message : String(err)).split('\n')[0]!;
  const fd = Number(process.env.TSGI_STATUS_FD);
  let told = false;
  if (Number.isInteger(fd) && fd > 2) {
    try {
      writeSync(fd, `${msg}\n`);
      told = true;
    } catch {
      // no status pipe after all
    }
  }
  if (!told) console.error(`[tsgi ${process.env.TSGI_DAEMON ?? ''} worker pid ${process.pid}] start-up failed: ${msg}`);
  process.exit(EXIT_STARTUP);
}

function isMain(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(argv1)).href;
  } catch {
    return false;
  }
}

// `node dist/worker.js`: load TSGI_HANDLER. A bundle (tsgi apache run) defines
// TSGI_BUNDLED at build time and calls startWorker itself.
if (process.env.TSGI_BUNDLED !== '1' && isMain()) {
  const path = process.env.TSGI_HANDLER;
  if (!path) fatal(new StartupError('TSGI_HANDLER is not set (this script is started by mod_tsgi)'));
  loadHandler(path).then((h) => startWorker(h), fatal);
}
