import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';

/** Thrown by body reads past the limit; the adapter answers 413 when it still can. */
export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

const NativeRequest = globalThis.Request;

// Path and query made only of characters the URL parser leaves alone, with no
// dot segments: then "base + path" is already the normalized href.
const PLAIN_TARGET = /^\/(?!.*\/\.\.?(?:[/?#]|$))[A-Za-z0-9\-._~!$&()*+,;=:@/%?]*$/;
const PLAIN_HOST = /^[a-z0-9.-]+(?::\d{1,5})?$/;

export interface RequestOptions {
  maxBodySize: number;
  /** Scheme when not trusting X-Forwarded-Proto. */
  scheme: 'http' | 'https';
  trustProxy: boolean;
  /** Called when a body read crosses maxBodySize. */
  onTooLarge(req: NodeRequest): void;
}

/**
 * A Request served straight from IncomingMessage. url, method and the body
 * readers need no WHATWG objects; anything else builds the native Request on
 * first use and forwards to it. instanceof Request holds (prototype chain).
 */
export class NodeRequest {
  readonly _req: IncomingMessage;
  readonly _res: ServerResponse;
  private _opts: RequestOptions;
  private _url: string | undefined;
  private _headers: Headers | undefined;
  private _native: Request | undefined;
  private _abort: AbortController | undefined;
  private _used = false;
  private _stream: ReadableStream<Uint8Array> | null | undefined;

  constructor(req: IncomingMessage, res: ServerResponse, opts: RequestOptions) {
    this._req = req;
    this._res = res;
    this._opts = opts;
  }

  get method(): string {
    return this._req.method ?? 'GET';
  }

  get url(): string {
    if (this._url !== undefined) return this._url;
    const req = this._req;
    const target = req.url ?? '/';
    let scheme: string = this._opts.scheme;
    if (this._opts.trustProxy) {
      const p = req.headers['x-forwarded-proto'];
      if (p === 'https' || p === 'http') scheme = p;
    }
    const host = req.headers.host || 'localhost';
    if (target.charCodeAt(0) !== 47 /* / */) {
      // absolute-form (RFC 9112 3.2.2) keeps the client's target; anything else is made a path.
      const abs = /^https?:\/\//i.test(target) ? safeURL(target, undefined) : undefined;
      return (this._url = abs ?? safeURL('/' + target, `${scheme}://${host}`) ?? `${scheme}://localhost/`);
    }
    if (PLAIN_TARGET.test(target) && PLAIN_HOST.test(host) && !(scheme === 'http' && host.endsWith(':80'))) {
      return (this._url = `${scheme}://${host}${target}`);
    }
    return (this._url = safeURL(target, `${scheme}://${host}`) ?? safeURL(target, `${scheme}://localhost`)!);
  }

  get headers(): Headers {
    if (this._native) return this._native.headers;
    if (!this._headers) {
      const h = new Headers();
      const raw = this._req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        try {
          h.append(raw[i]!, raw[i + 1]!);
        } catch {
          // Node accepted a header undici rejects; leave it out rather than fail the request.
        }
      }
      this._headers = h;
    }
    return this._headers;
  }

  get signal(): AbortSignal {
    if (this._native) return this._native.signal;
    if (!this._abort) {
      const ac = (this._abort = new AbortController());
      const res = this._res;
      const gone = (): void => {
        if (!res.writableFinished) ac.abort(new DOMException('The client disconnected', 'AbortError'));
      };
      if (res.destroyed || res.closed) gone();
      else res.once('close', gone);
    }
    return this._abort.signal;
  }

  get bodyUsed(): boolean {
    return this._native ? this._native.bodyUsed : this._used;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this._native) return this._native.body;
    if (this._stream !== undefined) return this._stream;
    if (!this.hasBody()) return (this._stream = null);
    this._used = true; // the stream owns the bytes now; body readers go through it
    const limited = this.limitedSource();
    return (this._stream = Readable.toWeb(limited) as unknown as ReadableStream<Uint8Array>);
  }

  private hasBody(): boolean {
    const m = this.method;
    if (m === 'GET' || m === 'HEAD') return false;
    const h = this._req.headers;
    return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
  }

  /** The IncomingMessage, or a pass-through that errors past the limit. */
  private limitedSource(): Readable {
    const req = this._req;
    const limit = this._opts.maxBodySize;
    if (!Number.isFinite(limit)) return req;
    let seen = 0;
    const out = new Readable({ read: () => req.resume() });
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) {
        req.off('data', onData);
        req.pause();
        this._opts.onTooLarge(this);
        out.destroy(new BodyTooLargeError(limit));
      } else if (!out.push(chunk)) req.pause();
    };
    req.on('data', onData);
    req.once('end', () => out.push(null));
    req.once('error', (err) => out.destroy(err));
    req.once('aborted', () => out.destroy(new DOMException('The client disconnected', 'AbortError')));
    return out;
  }

  /** Collects the body without Web streams (srvx/Hono do the same). */
  private readAll(): Promise<Buffer> {
    if (this._used) return Promise.reject(new TypeError('Body is unusable: Body has already been read'));
    this._used = true;
    if (!this.hasBody()) return Promise.resolve(Buffer.alloc(0));
    const req = this._req;
    const limit = this._opts.maxBodySize;
    // Small bodies usually arrive with the headers: take them from the buffer, no listeners.
    if (req.complete && req.readableLength <= limit) {
      const chunks: Buffer[] = [];
      let c: Buffer | null;
      while ((c = req.read() as Buffer | null) !== null) chunks.push(c);
      return Promise.resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let seen = 0;
      const onData = (c: Buffer): void => {
        seen += c.length;
        if (seen > limit) {
          cleanup();
          req.pause();
          this._opts.onTooLarge(this);
          reject(new BodyTooLargeError(limit));
          return;
        }
        chunks.push(c);
      };
      const onEnd = (): void => {
        cleanup();
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, seen));
      };
      const onAbort = (): void => {
        cleanup();
        reject(new DOMException('The client disconnected', 'AbortError'));
      };
      const onError = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const cleanup = (): void => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('aborted', onAbort);
        req.off('error', onError);
      };
      if (req.readableEnded) return resolve(Buffer.alloc(0));
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('aborted', onAbort);
      req.on('error', onError);
    });
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
      const init: RequestInit & { duplex?: 'half' } = {
        method: this.method,
        headers: this.headers,
        signal: this.signal,
      };
      if (body) {
        init.body = body;
        init.duplex = 'half';
      }
      this._native = new NativeRequest(this.url, init);
    }
    return this._native;
  }
}

function safeURL(input: string, base: string | undefined): string | undefined {
  try {
    return new URL(input, base).href;
  } catch {
    return undefined;
  }
}

// Everything else a Request has (cache, mode, redirect, ...) and undici's internal
// slots (so `new Request(request)` works) forward to the native Request.
Object.setPrototypeOf(NodeRequest.prototype, NativeRequest.prototype);
{
  const own = new Set(Object.getOwnPropertyNames(NodeRequest.prototype));
  for (const key of Object.getOwnPropertyNames(NativeRequest.prototype)) {
    if (own.has(key) || key === 'constructor') continue;
    const d = Object.getOwnPropertyDescriptor(NativeRequest.prototype, key)!;
    if (d.get) {
      Object.defineProperty(NodeRequest.prototype, key, {
        get(this: NodeRequest) {
          return (this.native() as unknown as Record<string, unknown>)[key];
        },
        configurable: true,
      });
    } else if (typeof d.value === 'function') {
      Object.defineProperty(NodeRequest.prototype, key, {
        value(this: NodeRequest, ...args: unknown[]) {
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
    Object.defineProperty(NodeRequest.prototype, sym, {
      get(this: NodeRequest) {
        return (this.native() as unknown as Record<symbol, unknown>)[sym];
      },
      configurable: true,
    });
  }
}
