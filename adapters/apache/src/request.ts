// The web Request a worker hands to the handler: a LazyRequest over the
// decoded REQUEST frame, with the body fed by BODY frames.
import { requestAuthority, type Context, type UrlRefusal } from '@tsgi/core';
import { LazyRequest, hostAuthority, originUrl } from '@tsgi/core/node';
import type { Exchange } from './connection.js';
import type { RequestMsg } from './protocol.js';

/** Returned to readers of a body whose request was aborted. */
export function abortError(message: string): DOMException {
  return new DOMException(message, 'AbortError');
}

/** What the worker's connection does for a body source (flow control). */
export interface BodyFlow {
  pauseReading(): void;
  resumeReading(): void;
}

const HIGH_WATER = 1 << 20;
const LOW_WATER = 256 << 10;

/**
 * Request body bytes as BODY frames bring them. One consumer: a stream, or a
 * whole-body read. Pauses the socket past HIGH_WATER unread bytes.
 */
export class BodySource {
  private chunks: Buffer[] = [];
  private head = 0;
  private size = 0;
  private ended = false;
  private err: unknown = undefined;
  private wake: (() => void) | null = null;
  private discard = false;
  private paused = false;

  constructor(private flow: BodyFlow) {}

  push(b: Buffer): void {
    if (this.discard || this.err !== undefined || b.length === 0) return;
    this.chunks.push(b);
    this.size += b.length;
    if (this.size > HIGH_WATER && !this.paused) {
      this.paused = true;
      this.flow.pauseReading();
    }
    this.notify();
  }

  end(): void {
    this.ended = true;
    this.notify();
  }

  fail(err: unknown): void {
    if (this.ended && this.size === 0) return;
    if (this.err === undefined) this.err = err;
    this.notify();
  }

  /**
   * The exchange is over: a body still arriving is dropped (the socket must flow up to END);
   * one already complete stays readable (waitUntil work may still read it).
   */
  release(): void {
    if (this.ended) this.unpause();
    else this.cancel();
  }

  /** Drop what is buffered and what still comes (unread body, cancelled stream). */
  cancel(): void {
    this.discard = true;
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    this.unpause();
    this.notify();
  }

  private unpause(): void {
    if (this.paused) {
      this.paused = false;
      this.flow.resumeReading();
    }
  }

  private notify(): void {
    const w = this.wake;
    if (w) {
      this.wake = null;
      w();
    }
  }

  private take(): Buffer {
    const b = this.chunks[this.head]!;
    this.chunks[this.head++] = undefined as unknown as Buffer;
    if (this.head === this.chunks.length) {
      this.chunks = [];
      this.head = 0;
    }
    this.size -= b.length;
    if (this.size < LOW_WATER) this.unpause();
    return b;
  }

  /** The next chunk, or null at the end. */
  next(): Promise<Buffer | null> {
    if (this.err !== undefined) return Promise.reject(this.err);
    if (this.head < this.chunks.length) return Promise.resolve(this.take());
    if (this.ended || this.discard) return Promise.resolve(null);
    return new Promise<void>((r) => (this.wake = r)).then(() => this.next());
  }

  /** The whole body. */
  async all(): Promise<Buffer> {
    while (!this.ended && this.err === undefined && !this.discard) {
      // Reading everything anyway: no reason to hold the socket back.
      this.unpause();
      await new Promise<void>((r) => (this.wake = r));
    }
    // END may have come in the same socket chunk that made us pause.
    this.unpause();
    if (this.err !== undefined) throw this.err;
    const parts = this.chunks.slice(this.head);
    const n = this.size;
    this.chunks = [];
    this.head = 0;
    this.size = 0;
    return parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
  }

  stream(): ReadableStream<Uint8Array> {
    return new ReadableStream<Uint8Array>(
      {
        pull: (c) =>
          this.next().then((b) => {
            if (b) c.enqueue(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
            else c.close();
          }),
        cancel: () => this.cancel(),
      },
      { highWaterMark: 0 },
    );
  }
}

/**
 * The request's authority and origin-form path by core's rule
 * (requestAuthority, decision 7): the authority is the request line's for an
 * absolute-form target, else the Host header. `host` is Apache's Host header
 * (it refuses a second one), or its own name:port for HTTP/1.0 without one.
 */
export function requestTarget(m: RequestMsg): RequestTarget | UrlRefusal {
  if (m.uri.charCodeAt(0) === 47 /* / */) {
    const authority = hostAuthority(m.host);
    return typeof authority === 'string' ? { authority, path: m.uri } : authority;
  }
  return requestAuthority(m.uri, [m.host], m.protocol === 'HTTP/1.0', m.host);
}

export type RequestTarget = { authority: string; path: string };

/** The absolute URL; the scheme is the connection's (Apache's ap_http_scheme), never the client's. */
export function targetUrl(m: RequestMsg, t: RequestTarget): string {
  return originUrl(m.scheme === 'https' ? 'https' : 'http', t.authority, t.path);
}

/** The request URL for a log entry (a request Apache served, so never refused in practice). */
export function requestUrl(m: RequestMsg): string {
  const t = requestTarget(m);
  return targetUrl(m, 'status' in t ? { authority: 'localhost', path: '/' } : t);
}

/**
 * One exchange's Request, served from the decoded REQUEST frame (see
 * LazyRequest); also the exchange its connection aborts and releases.
 */
export class ApacheRequest extends LazyRequest implements Exchange {
  /** @internal */ _m: RequestMsg;
  /** @internal */ _body: BodySource | null;
  /** @internal authority and path, checked before the handler runs (requestTarget). */
  _target: RequestTarget;
  /** @internal set once the exchange was aborted (ABORT frame, EOF, timeout). */
  _aborted: unknown = undefined;
  /** @internal what the response writer does on abort (cancel a stream still waiting for its first chunk). */
  _onAbort: ((reason: unknown) => void) | undefined = undefined;
  private _abortCtl: AbortController | undefined;

  constructor(
    m: RequestMsg,
    body: BodySource | null,
    target: RequestTarget,
    /** @internal the handler's ctx */
    readonly _ctx: Context,
    /** @internal performance.now() at the start (0 when nobody logs) */
    readonly _start = 0,
  ) {
    super(undefined);
    this._m = m;
    this._body = body;
    this._target = target;
  }

  /** Aborts request.signal and fails pending body reads. */
  _abort(reason: unknown): void {
    if (this._aborted !== undefined) return;
    this._aborted = reason;
    this._body?.fail(reason);
    this._abortCtl?.abort(reason);
    this._onAbort?.(reason);
  }

  /** The answer is out: a body still arriving is dropped, one already complete stays readable (BodySource.release). */
  _release(): void {
    this._body?.release();
  }

  get method(): string {
    return this._m.method;
  }

  protected makeUrl(): string {
    return targetUrl(this._m, this._target);
  }

  protected rawHeaders(): readonly string[] {
    return this._m.headers;
  }

  protected watchAbort(ac: AbortController): void {
    this._abortCtl = ac;
    if (this._aborted !== undefined) ac.abort(this._aborted);
  }

  protected hasBody(): boolean {
    return this._body !== null;
  }

  protected readBody(): Promise<Buffer> {
    return this._body!.all();
  }

  protected openBody(): ReadableStream<Uint8Array> {
    return this._body!.stream();
  }
}
