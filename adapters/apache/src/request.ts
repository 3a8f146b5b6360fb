// The web Request a worker hands to the handler: built lazily from the decoded
// REQUEST frame. url, method, headers and the body readers need no undici
// objects; anything else builds the native Request once and forwards to it.
import type { RequestMsg } from './protocol.js';

const NativeRequest = globalThis.Request;

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

// Path and query made only of characters the URL parser leaves alone, with no
// dot segments: then "origin + path" is already the normalized href.
const PLAIN_TARGET = /^\/(?!.*\/\.\.?(?:[/?#]|$))[A-Za-z0-9\-._~!$&()*+,;=:@/%?]*$/;
const PLAIN_HOST = /^[a-z0-9.-]+(?::\d{1,5})?$/;

function safeURL(input: string, base: string | undefined): string | undefined {
  try {
    return new URL(input, base).href;
  } catch {
    return undefined;
  }
}

/** The absolute request URL: scheme://host + the raw request target. */
export function requestUrl(m: RequestMsg): string {
  const scheme = m.scheme === 'https' ? 'https' : 'http';
  const host = m.host || 'localhost';
  const target = m.uri;
  if (target.charCodeAt(0) !== 47 /* / */) {
    // absolute-form keeps the client's target; anything else ("*") becomes a path.
    const abs = /^https?:\/\//i.test(target) ? safeURL(target, undefined) : undefined;
    return abs ?? safeURL('/' + target, `${scheme}://${host}`) ?? `${scheme}://localhost/`;
  }
  const defaultPort = scheme === 'http' ? ':80' : ':443';
  if (PLAIN_TARGET.test(target) && PLAIN_HOST.test(host) && !host.endsWith(defaultPort)) return `${scheme}://${host}${target}`;
  return safeURL(target, `${scheme}://${host}`) ?? safeURL(target, `${scheme}://localhost`) ?? `${scheme}://localhost/`;
}

/**
 * One exchange's Request. `instanceof Request` holds through the prototype
 * chain; undici's own slots forward to a native Request built on demand.
 */
export class ApacheRequest {
  /** @internal */ _m: RequestMsg;
  /** @internal */ _body: BodySource | null;
  /** @internal set once the exchange was aborted (ABORT frame, EOF, timeout). */
  _aborted: unknown = undefined;
  private _url: string | undefined;
  private _headers: Headers | undefined;
  private _native: Request | undefined;
  private _ac: AbortController | undefined;
  private _used = false;
  private _stream: ReadableStream<Uint8Array> | null | undefined;

  constructor(m: RequestMsg, body: BodySource | null) {
    this._m = m;
    this._body = body;
  }

  /** Aborts request.signal and fails pending body reads. */
  _abort(reason: unknown): void {
    if (this._aborted !== undefined) return;
    this._aborted = reason;
    this._body?.fail(reason);
    this._ac?.abort(reason);
  }

  get method(): string {
    return this._m.method;
  }

  get url(): string {
    return (this._url ??= requestUrl(this._m));
  }

  get headers(): Headers {
    if (this._native) return this._native.headers;
    if (!this._headers) {
      const h = new Headers();
      const raw = this._m.headers;
      for (let i = 0; i < raw.length; i += 2) {
        try {
          h.append(raw[i]!, raw[i + 1]!);
        } catch {
          // Apache passed a header undici rejects; leave it out rather than fail the request.
        }
      }
      this._headers = h;
    }
    return this._headers;
  }

  get signal(): AbortSignal {
    if (this._native) return this._native.signal;
    if (!this._ac) {
      this._ac = new AbortController();
      if (this._aborted !== undefined) this._ac.abort(this._aborted);
    }
    return this._ac.signal;
  }

  get bodyUsed(): boolean {
    return this._native ? this._native.bodyUsed : this._used;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this._native) return this._native.body;
    if (this._stream !== undefined) return this._stream;
    if (!this._body) return (this._stream = null);
    this._used = true; // the stream owns the bytes now
    return (this._stream = this._body.stream());
  }

  private readAll(): Promise<Buffer> {
    if (this._used) return Promise.reject(new TypeError('Body is unusable: Body has already been read'));
    this._used = true;
    if (!this._body) return Promise.resolve(Buffer.alloc(0));
    return this._body.all();
  }

  text(): Promise<string> {
    if (this._native || this._stream) return this.native().text();
    return this.readAll().then((b) => b.toString('utf8'));
  }

  json(): Promise<unknown> {
    return this.text().then((t) => JSON.parse(t));
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    if (this._native || this._stream) return this.native().arrayBuffer();
    return this.readAll().then((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
  }

  bytes(): Promise<Uint8Array> {
    if (this._native || this._stream) return this.native().arrayBuffer().then((b) => new Uint8Array(b));
    return this.readAll().then((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
  }

  blob(): Promise<Blob> {
    return this.native().blob();
  }

  formData(): Promise<FormData> {
    return this.native().formData();
  }

  clone(): Request {
    return this.native().clone();
  }

  /** The native Request, built once; it takes over the body stream. */
  native(): Request {
    if (!this._native) {
      const body = this._stream !== undefined ? this._stream : this.body;
      const init: RequestInit & { duplex?: 'half' } = { method: this.method, headers: this.headers, signal: this.signal };
      if (body) {
        init.body = body;
        init.duplex = 'half';
      }
      this._native = new NativeRequest(this.url, init);
    }
    return this._native;
  }
}

// Everything else a Request has (cache, mode, redirect, ...) and undici's
// internal slots (so `new Request(request)` works) forward to the native one.
Object.setPrototypeOf(ApacheRequest.prototype, NativeRequest.prototype);
{
  const own = new Set(Object.getOwnPropertyNames(ApacheRequest.prototype));
  for (const key of Object.getOwnPropertyNames(NativeRequest.prototype)) {
    if (own.has(key) || key === 'constructor') continue;
    const d = Object.getOwnPropertyDescriptor(NativeRequest.prototype, key)!;
    if (d.get) {
      Object.defineProperty(ApacheRequest.prototype, key, {
        get(this: ApacheRequest) {
          return (this.native() as unknown as Record<string, unknown>)[key];
        },
        configurable: true,
      });
    } else if (typeof d.value === 'function') {
      Object.defineProperty(ApacheRequest.prototype, key, {
        value(this: ApacheRequest, ...args: unknown[]) {
          const n = this.native() as unknown as Record<string, (...a: unknown[]) => unknown>;
          return n[key]!(...args);
        },
        configurable: true,
        writable: true,
      });
    }
  }
  const probe = new NativeRequest('http://localhost/');
  for (const sym of Object.getOwnPropertySymbols(probe)) {
    Object.defineProperty(ApacheRequest.prototype, sym, {
      get(this: ApacheRequest) {
        return (this.native() as unknown as Record<symbol, unknown>)[sym];
      },
      configurable: true,
    });
  }
}
