/**
 * The base of the Requests that Node-hosted adapters hand to handlers. url,
 * method, headers and the whole-body readers need no undici objects; anything
 * else builds the native Request once and forwards to it. `instanceof Request`
 * holds through the prototype chain, and undici's internal slots forward too,
 * so `new Request(request)` works. No global is touched.
 */

import { requestAuthority, type UrlRefusal } from '../wire.js';

const NativeRequest = globalThis.Request;

// Path and query made only of characters the URL parser leaves alone, with no
// dot segments: then "origin + target" is already the normalized href.
const PLAIN_TARGET = /^\/(?!.*\/\.\.?(?:[/?#]|$))[A-Za-z0-9\-._~!$&()*+,;=:@/%?]*$/;
const PLAIN_HOST = /^[a-z0-9.-]+(?::\d{1,5})?$/;

function safeURL(input: string, base: string | undefined): string | undefined {
  try {
    return new URL(input, base).href;
  } catch {
    return undefined;
  }
}

/**
 * The absolute request URL from the scheme, a checked authority (wire.ts
 * requestAuthority) and an origin-form path, as the URL parser would give it.
 */
export function originUrl(scheme: 'http' | 'https', authority: string, path: string): string {
  const defaultPort = scheme === 'http' ? ':80' : ':443';
  if (PLAIN_TARGET.test(path) && PLAIN_HOST.test(authority) && !authority.endsWith(defaultPort)) return `${scheme}://${authority}${path}`;
  return safeURL(path, `${scheme}://${authority}`) ?? `${scheme}://localhost/`;
}

let lastHost: string | undefined;
let lastAuthority = '';

/**
 * requestAuthority for an origin-form target with one Host header: the answer depends on the Host
 * alone, and a connection's requests mostly repeat it, so the last one accepted is remembered (a
 * Node host's state; the njs runtime keeps none across requests). Returns the authority.
 */
export function hostAuthority(host: string): string | UrlRefusal {
  if (host === lastHost) return lastAuthority;
  const where = requestAuthority('/', [host], false, '');
  if ('status' in where) return where;
  lastHost = host;
  return (lastAuthority = where.authority);
}

/** The absolute request URL from the scheme, Host and raw request target, as the URL parser would give it. */
export function absoluteUrl(scheme: 'http' | 'https', host: string | undefined, target: string): string {
  const h = host || 'localhost';
  if (target.charCodeAt(0) !== 47 /* / */) {
    // absolute-form (RFC 9112 3.2.2) keeps the client's target; anything else ("*") becomes a path.
    const abs = /^https?:\/\//i.test(target) ? safeURL(target, undefined) : undefined;
    return abs ?? safeURL('/' + target, `${scheme}://${h}`) ?? `${scheme}://localhost/`;
  }
  const defaultPort = scheme === 'http' ? ':80' : ':443';
  if (PLAIN_TARGET.test(target) && PLAIN_HOST.test(h) && !h.endsWith(defaultPort)) return `${scheme}://${h}${target}`;
  return safeURL(target, `${scheme}://${h}`) ?? safeURL(target, `${scheme}://localhost`) ?? `${scheme}://localhost/`;
}

const EMPTY = Buffer.alloc(0);
const utf8 = (b: Buffer): string => b.toString('utf8');
const parseJson = (b: Buffer): unknown => JSON.parse(b.toString('utf8'));

export abstract class LazyRequest<S = undefined> {
  /** What the host serves this request from, read by its hooks below (see the constructor). */
  readonly _src: S;
  private _url: string | undefined;
  private _headers: Headers | undefined;
  private _native: Request | undefined;
  private _ac: AbortController | undefined;
  private _used = false;
  private _stream: ReadableStream<Uint8Array> | null | undefined;

  /**
   * node-http's subclass keeps its per-request state in `src` and defines no constructor (nor field
   * initializers): V8 on Node 20 does not inline a derived constructor's `super()` call, which cost it
   * ~200 instructions a request. (ApacheRequest still has its own: its exchange state is mutable.)
   */
  constructor(src: S) {
    this._src = src;
  }

  abstract get method(): string;
  /** Computes the absolute URL (called once). */
  protected abstract makeUrl(): string;
  /** Request headers as a flat [name, value, ...] list, repeats kept. */
  protected abstract rawHeaders(): readonly string[];
  /** Whether the request carries a body at all. */
  protected abstract hasBody(): boolean;
  /** The whole body (called at most once, only when hasBody()). */
  protected abstract readBody(): Promise<Buffer>;
  /**
   * The whole body handed to `convert` the moment it has arrived, one promise
   * for both (a host that can offers this; otherwise readBody().then(convert)).
   */
  protected readBodyAs?<T>(convert: (body: Buffer) => T): Promise<T>;
  /** The body as a stream (called at most once, only when hasBody()). */
  protected abstract openBody(): ReadableStream<Uint8Array>;
  /** Arranges for `ac` to abort when the client goes away (called when .signal is first read). */
  protected abstract watchAbort(ac: AbortController): void;

  get url(): string {
    return (this._url ??= this.makeUrl());
  }

  get headers(): Headers {
    if (this._native) return this._native.headers;
    if (!this._headers) {
      const h = new Headers();
      const raw = this.rawHeaders();
      for (let i = 0; i < raw.length; i += 2) {
        try {
          h.append(raw[i]!, raw[i + 1]!);
        } catch {
          // The server accepted a header undici rejects; leave it out rather than fail the request.
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
      this.watchAbort(this._ac);
    }
    return this._ac.signal;
  }

  /** Aborts `signal` with `reason` (the host's request-timeout: a TimeoutError); nothing once it has aborted. */
  abortSignal(reason: unknown): void {
    const signal = this.signal;
    if (!signal.aborted) this._ac?.abort(reason);
  }

  get bodyUsed(): boolean {
    return this._native ? this._native.bodyUsed : this._used;
  }

  get body(): ReadableStream<Uint8Array> | null {
    if (this._native) return this._native.body;
    if (this._stream !== undefined) return this._stream;
    if (!this.hasBody()) return (this._stream = null);
    this._used = true; // the stream owns the bytes now; body readers go through it
    return (this._stream = this.openBody());
  }

  private readAll<T>(convert: (body: Buffer) => T): Promise<T> {
    if (this._used) return Promise.reject(new TypeError('Body is unusable: Body has already been read'));
    this._used = true;
    if (!this.hasBody()) {
      try {
        return Promise.resolve(convert(EMPTY));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return this.readBodyAs ? this.readBodyAs(convert) : this.readBody().then(convert);
  }

  text(): Promise<string> {
    if (this._native || this._stream) return this.native().text();
    return this.readAll(utf8);
  }

  json(): Promise<unknown> {
    if (this._native || this._stream) return this.native().json();
    return this.readAll(parseJson);
  }

  arrayBuffer(): Promise<ArrayBuffer> {
    if (this._native || this._stream) return this.native().arrayBuffer();
    return this.readAll((b) => b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer);
  }

  bytes(): Promise<Uint8Array> {
    if (this._native || this._stream) return this.native().arrayBuffer().then((b) => new Uint8Array(b));
    return this.readAll((b) => new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
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

// Everything else a Request has (cache, mode, redirect, ...) and undici's internal
// slots (so `new Request(request)` works) forward to the native Request.
Object.setPrototypeOf(LazyRequest.prototype, NativeRequest.prototype);
{
  const own = new Set(Object.getOwnPropertyNames(LazyRequest.prototype));
  for (const key of Object.getOwnPropertyNames(NativeRequest.prototype)) {
    if (own.has(key) || key === 'constructor') continue;
    const d = Object.getOwnPropertyDescriptor(NativeRequest.prototype, key)!;
    if (d.get) {
      Object.defineProperty(LazyRequest.prototype, key, {
        get(this: LazyRequest) {
          return (this.native() as unknown as Record<string, unknown>)[key];
        },
        configurable: true,
      });
    } else if (typeof d.value === 'function') {
      Object.defineProperty(LazyRequest.prototype, key, {
        value(this: LazyRequest, ...args: unknown[]) {
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
    Object.defineProperty(LazyRequest.prototype, sym, {
      get(this: LazyRequest) {
        return (this.native() as unknown as Record<symbol, unknown>)[sym];
      },
      configurable: true,
    });
  }
}
