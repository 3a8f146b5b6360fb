/**
 * One connection from an Apache child, and the only code that touches its
 * socket: reading and frame reassembly, HELLO and the secret, the request body
 * and its flow control, ABORT, GOAWAY, and every frame the worker sends.
 * Exchanges on it are sequential (PROTOCOL.md, "Conversation on one connection").
 * After an accepted WebSocket upgrade it is a tunnel (PROTOCOL.md, "WebSocket
 * tunnel"): `ws` gets a stream whose writes go to Apache raw and whose reads
 * are the client's bytes from Apache's BODY frames.
 */
import { timingSafeEqual } from 'node:crypto';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import type { ErrorLogger } from '@tsgi/core';
import { timeoutError } from '@tsgi/core/node';
import {
  FrameReader,
  MsgType,
  Phase,
  ProtocolError,
  bodyFlush,
  bodyFrames,
  bodyLength,
  decodePayload,
  decodeRequest,
  encodeBody,
  encodeDecision,
  encodeEnd,
  encodeError,
  encodeFlush,
  encodeGoAway,
  encodeResponse,
  encodeResponseHead,
  encodeTunnel,
  encodeWelcome,
  type RequestMsg,
} from './protocol.js';
import { BodySource, abortError, type BodyFlow } from './request.js';

/** What a connection needs from the worker that accepted it. */
export interface ConnectionHost {
  /** The per-start secret HELLO must carry. */
  readonly secret: Buffer;
  /** Draining: each connection gets GOAWAY once it is idle. */
  readonly draining: boolean;
  readonly log: ErrorLogger;
  /** mod_tsgi's request-timeout (ms): what the TimeoutError of its ABORT (reason 2) says. */
  readonly requestTimeoutMs?: number;
  /** Apache's request-timeout ended `ex` (it answers 504 itself): for the metrics. */
  timedOut?(ex: Exchange): void;
  /** A REQUEST frame arrived; `body` receives its BODY frames (null: none, or nobody may read them). */
  request(conn: Connection, m: RequestMsg, body: BodySource | null): void;
  /** The connection is gone. */
  closed(conn: Connection): void;
}

/** The exchange a connection carries (ApacheRequest): what it is told when Apache aborts or the connection goes. */
export interface Exchange {
  _abort(reason: unknown): void;
  /** The exchange is over: a body it left unread is dropped. */
  _release(): void;
}

const WELCOME = encodeWelcome(process.pid);
const END = encodeEnd();
const GOAWAY = encodeGoAway();
const FLUSH = encodeFlush();
const NO_OPINION = encodeDecision();
/** After GOAWAY, an idle connection stays open this long for a REQUEST that crossed it. */
const LINGER_MS = 250;
/** Body bytes up to this size are copied into the frame buffer (one write); larger ones go out as views. */
const COPY_LIMIT = 64 << 10;

/**
 * A tunneled connection as `ws` sees its socket: what ws writes goes to Apache
 * as raw bytes for the client (a write waits while the socket is full, so ws's
 * bufferedAmount sees the backlog); what it reads is the client's bytes.
 */
class TunnelStream extends Duplex {
  constructor(private readonly conn: Connection) {
    super();
  }

  override _read(): void {
    this.conn.resumeReading();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    this.conn.tunnelWrite(chunk, cb);
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.conn.tunnelEnd();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.conn.destroy();
    cb(err);
  }
}

const ABORT_WHY: Record<number, string> = {
  1: 'the client disconnected',
  2: 'request-timeout',
  3: 'request body too large',
};

export class Connection implements BodyFlow {
  /** Cut or closed: nothing more is read or written. */
  closed = false;
  private reported = false;
  private authed = false;
  /** The exchange whose response is being produced. */
  private ex: Exchange | null = null;
  /** Receiving body frames (until END); `body` is where they go (null: discard). */
  private bodyOpen = false;
  private body: BodySource | null = null;
  private goaway = false;
  private readonly reader = new FrameReader();
  private readonly sink = (type: number, flags: number, buf: Buffer, start: number, end: number): boolean => {
    this.frame(type, flags, buf, start, end);
    return !this.closed;
  };
  private drainWait: (() => void) | null = null;
  private linger: NodeJS.Timeout | null = null;
  /** A WebSocket tunnel: the stream ws reads and writes, and what Apache's GOAWAY (its child stops) does. */
  private tunneled: TunnelStream | null = null;
  private onApacheGoAway: (() => void) | null = null;
  private tunnelWait: (() => void) | null = null;

  constructor(
    private readonly sock: Socket,
    private readonly host: ConnectionHost,
  ) {
    sock.on('data', (c: Buffer) => this.onData(c));
    sock.on('drain', () => this.wakeDrain());
    sock.on('error', () => {}); // EPIPE/ECONNRESET: 'close' follows
    sock.on('close', () => this.onClose());
    sock.write(WELCOME);
  }

  // ---------------------------------------------------------------- reading

  pauseReading(): void {
    this.sock.pause();
  }

  resumeReading(): void {
    if (!this.closed) this.sock.resume();
  }

  /** No exchange running and no request body arriving. */
  get idle(): boolean {
    return this.ex === null && !this.bodyOpen;
  }

  private onData(chunk: Buffer): void {
    try {
      this.reader.feed(chunk, this.sink);
    } catch (err) {
      this.host.log(`protocol error from Apache, closing the connection: ${(err as Error).message}`);
      this.destroy(err);
    }
  }

  private frame(type: number, flags: number, buf: Buffer, start: number, end: number): void {
    if (this.tunneled) {
      this.tunnelFrame(type, flags, buf, start, end);
      return;
    }
    if (type === MsgType.BODY) {
      if (!this.bodyOpen) throw new ProtocolError('BODY outside a request body');
      bodyFlush(flags);
      this.body?.push(buf.subarray(start, end));
      return;
    }
    if (!this.authed) {
      this.hello(decodePayload(type, flags, buf, start, end));
      return;
    }
    switch (type) {
      case MsgType.REQUEST: {
        if (this.bodyOpen || this.ex) throw new ProtocolError('REQUEST during another exchange');
        if (flags) throw new ProtocolError('flags on REQUEST');
        const m = decodeRequest(buf, start, end);
        if (this.linger) {
          clearTimeout(this.linger);
          this.linger = null;
        }
        let body: BodySource | null = null;
        if (m.hasBody) {
          this.bodyOpen = true;
          if (m.method !== 'GET' && m.method !== 'HEAD' && m.phase !== Phase.LOG) body = this.body = new BodySource(this);
        }
        this.host.request(this, m, body);
        return;
      }
      case MsgType.END:
        if (flags) throw new ProtocolError('flags on END');
        if (end !== start) throw new ProtocolError('payload on END');
        if (!this.bodyOpen) throw new ProtocolError('END outside a request body');
        this.bodyOpen = false;
        this.body?.end();
        this.body = null;
        this.settled();
        return;
      case MsgType.ABORT: {
        const m = decodePayload(type, flags, buf, start, end);
        const reason = m.type === 'abort' ? m.reason : 0;
        // mod_tsgi's request-timeout is the deadline of every Node host: a TimeoutError (core's timeoutError).
        if (reason === 2 && this.ex) this.host.timedOut?.(this.ex);
        this.destroy(reason === 2 ? timeoutError(this.host.requestTimeoutMs ?? 0) : abortError(`tsgi: ${ABORT_WHY[reason] ?? 'Apache aborted the request'}`));
        return;
      }
      default:
        throw new ProtocolError(`unexpected frame type 0x${type.toString(16)}`);
    }
  }

  /** Apache's side of a tunnel: BODY (the client's bytes), END (its FIN), GOAWAY (the child stops), ABORT. */
  private tunnelFrame(type: number, flags: number, buf: Buffer, start: number, end: number): void {
    const t = this.tunneled!;
    switch (type) {
      case MsgType.BODY:
        bodyFlush(flags);
        if (!t.push(buf.subarray(start, end))) this.pauseReading();
        return;
      case MsgType.END:
        decodePayload(type, flags, buf, start, end);
        t.push(null);
        return;
      case MsgType.GOAWAY:
        decodePayload(type, flags, buf, start, end);
        this.onApacheGoAway?.();
        return;
      case MsgType.ABORT:
        this.destroy(abortError('tsgi: the client disconnected'));
        return;
      default:
        throw new ProtocolError(`unexpected frame type 0x${type.toString(16)} in a tunnel`);
    }
  }

  private hello(m: ReturnType<typeof decodePayload>): void {
    if (m.type !== 'hello') throw new ProtocolError(`expected HELLO, got ${m.type}`);
    const s = this.host.secret;
    if (m.secret.length !== s.length || !timingSafeEqual(m.secret, s)) {
      this.host.log(`connection with a wrong secret (pid ${m.pid}) refused`);
      this.destroy();
      return;
    }
    this.authed = true;
  }

  // ---------------------------------------------------------------- exchanges

  /** The worker starts producing the answer to the REQUEST just read. */
  begin(ex: Exchange): void {
    this.ex = ex;
  }

  /** Whether the answer to `ex` can still be written (not aborted, connection open). */
  writable(ex: Exchange): boolean {
    return !this.closed && this.ex === ex;
  }

  /** The answer to `ex` is fully written (or abandoned). */
  done(ex: Exchange): void {
    if (this.ex !== ex) return;
    this.ex = null;
    // Whatever the handler left unread is discarded; the socket must keep flowing up to END.
    ex._release();
    this.settled();
  }

  /** After an exchange or a request body: a draining worker says GOAWAY on an idle connection. */
  private settled(): void {
    if (this.idle && this.host.draining) this.goAway();
  }

  /**
   * The exchange's WebSocket upgrade is accepted: TUNNEL goes out, and the
   * stream returned is the socket for ws (it writes the 101 head first).
   * `goAway` runs when Apache says its child is stopping.
   */
  tunnel(goAway: () => void): Duplex {
    this.sock.write(encodeTunnel());
    this.onApacheGoAway = goAway;
    const t = (this.tunneled = new TunnelStream(this));
    if (this.closed) t.destroy();
    return t;
  }

  /** ws's bytes for the client; `done` once the socket took them (or is gone). */
  tunnelWrite(chunk: Buffer, done: () => void): void {
    // The stream writes one chunk at a time: at most one waits, woken by 'drain' or the end.
    if (this.closed || this.sock.write(chunk)) done();
    else this.tunnelWait = done;
  }

  /** ws ended the socket: Apache sees EOF and ends the tunnel. */
  tunnelEnd(): void {
    if (!this.closed) this.sock.end();
  }

  // ---------------------------------------------------------------- writing

  /** A whole response: head, body (null: none) and END. Bytes past COPY_LIMIT are written as views. */
  sendResponse(status: number, reason: string, headers: readonly string[], body: Buffer | string | null, n = bodyLength(body)): void {
    if (this.closed) return;
    if (typeof body === 'string' || body === null || n <= COPY_LIMIT) {
      this.sock.write(encodeResponse(status, reason, headers, body, n));
      return;
    }
    const s = this.sock;
    s.cork();
    s.write(encodeResponseHead(status, headers, reason));
    for (const b of bodyFrames(body)) s.write(b);
    s.write(END);
    s.uncork();
  }

  /** A stream's head (its body follows as sendBody calls, then sendEnd). */
  sendHead(status: number, reason: string, headers: readonly string[]): void {
    if (!this.closed) this.sock.write(encodeResponseHead(status, headers, reason));
  }

  /** An empty flushed BODY: Apache sends the head to the client now. */
  sendFlush(): void {
    if (!this.closed) this.sock.write(FLUSH);
  }

  /** One chunk of a stream, flushed to the client. False when the socket is full: wait for drained(). */
  sendBody(data: Buffer, flush: boolean): boolean {
    if (this.closed) return true;
    if (data.length <= COPY_LIMIT) return this.sock.write(encodeBody(data, flush));
    const s = this.sock;
    s.cork();
    let ok = true;
    for (const b of bodyFrames(data, flush)) ok = s.write(b);
    s.uncork();
    return ok;
  }

  sendEnd(): void {
    if (!this.closed) this.sock.write(END);
  }

  /** The authenticate/authorize answer: a user for `{ user }`, undefined for no opinion / allowed. */
  sendDecision(user: string | undefined): void {
    if (!this.closed) this.sock.write(user === undefined ? NO_OPINION : encodeDecision(user));
  }

  /** The worker refuses a REQUEST before any exchange (overload, queue-timeout). */
  sendError(status: number, retryAfter: number, message: string): void {
    if (this.closed) return;
    this.sock.write(encodeError(status, retryAfter, message));
    // No exchange ran: the connection is free again once the body (if any) has arrived.
    this.settled();
  }

  /** Resolves once the socket can take more (or is gone). */
  drained(): Promise<void> {
    if (this.closed) return Promise.resolve();
    return new Promise((r) => (this.drainWait = r));
  }

  private wakeDrain(): void {
    const w = this.tunnelWait;
    if (w) {
      this.tunnelWait = null;
      w();
    }
    const d = this.drainWait;
    if (d) {
      this.drainWait = null;
      d();
    }
  }

  // ---------------------------------------------------------------- ending

  /** Draining: tell Apache not to reuse this connection; close it once idle (after a short linger). */
  goAway(): void {
    if (this.closed || this.tunneled) return;
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

  /** Cuts the connection; the exchange on it (and its body) are aborted with `reason`. */
  destroy(reason?: unknown): void {
    if (this.closed) return;
    this.cut(reason ?? abortError('tsgi: connection to Apache lost'));
    this.sock.destroy();
  }

  private cut(reason: unknown): void {
    this.closed = true;
    if (this.linger) clearTimeout(this.linger);
    this.body?.fail(reason);
    this.ex?._abort(reason);
    this.tunneled?.destroy();
    this.wakeDrain();
  }

  private onClose(): void {
    if (this.reported) return;
    this.reported = true;
    if (!this.closed) this.cut(abortError('tsgi: connection to Apache lost'));
    this.host.closed(this);
  }
}
