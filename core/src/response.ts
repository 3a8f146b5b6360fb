/**
 * A `Response` that adapters can send without building undici's Response
 * (whose constructor alone costs ~12 µs on Node 20, as much as the rest of a
 * hello request). It is `instanceof Response` and behaves as one: any standard
 * accessor builds the native Response on first use and forwards to it.
 * Opt-in: `import { Response } from '@tsgi/core'`. No global is touched.
 */

const NativeResponse = globalThis.Response;


/** What an adapter writes: status, flat [name, value, ...] headers, and one body form. */
export interface RawResponse {
  status: number;
  statusText: string;
  headers: string[];
  body: string | Uint8Array | ReadableStream<Uint8Array> | null;
}

const kFast = Symbol.for('tsgi.fastResponse');

interface FastState {
  body: BodyInit | null | undefined;
  init: ResponseInit | undefined;
  contentType: string | undefined;
  native: globalThis.Response | undefined;
}

function native(self: FastResponse): globalThis.Response {
  const s = self[kFast];
  if (!s.native) {
    s.native = new NativeResponse(s.body, s.init);
    if (s.contentType && !s.native.headers.has('content-type')) s.native.headers.set('content-type', s.contentType);
  }
  return s.native;
}

export class FastResponse {
  declare [kFast]: FastState;

  constructor(body?: BodyInit | null, init?: ResponseInit) {
    this[kFast] = { body, init, contentType: undefined, native: undefined };
  }

  static json(data: unknown, init?: ResponseInit): FastResponse {
    const r = new FastResponse(JSON.stringify(data), init);
    r[kFast].contentType = 'application/json';
    return r;
  }

  static redirect(url: string | URL, status = 302): globalThis.Response {
    return NativeResponse.redirect(url, status);
  }

  static error(): globalThis.Response {
    return NativeResponse.error();
  }

  get status(): number {
    const s = this[kFast];
    return s.native ? s.native.status : (s.init?.status ?? 200);
  }
  get ok(): boolean {
    const st = this.status;
    return st >= 200 && st < 300;
  }
  get statusText(): string {
    const s = this[kFast];
    return s.native ? s.native.statusText : (s.init?.statusText ?? '');
  }
  get headers(): Headers {
    return native(this).headers;
  }
  get body(): ReadableStream<Uint8Array> | null {
    return native(this).body;
  }
  get bodyUsed(): boolean {
    const s = this[kFast];
    return s.native ? s.native.bodyUsed : false;
  }
  get type(): ResponseType {
    return native(this).type;
  }
  get url(): string {
    return native(this).url;
  }
  get redirected(): boolean {
    return native(this).redirected;
  }
  text(): Promise<string> {
    return native(this).text();
  }
  json(): Promise<unknown> {
    return native(this).json();
  }
  arrayBuffer(): Promise<ArrayBuffer> {
    return native(this).arrayBuffer();
  }
  blob(): Promise<Blob> {
    return native(this).blob();
  }
  formData(): Promise<FormData> {
    return native(this).formData();
  }
  bytes(): Promise<Uint8Array> {
    const n = native(this) as globalThis.Response & { bytes?: () => Promise<Uint8Array> };
    return n.bytes ? n.bytes() : n.arrayBuffer().then((b) => new Uint8Array(b));
  }
  clone(): globalThis.Response {
    return native(this).clone();
  }
}

Object.setPrototypeOf(FastResponse.prototype, NativeResponse.prototype);
Object.setPrototypeOf(FastResponse, NativeResponse);

/** The opt-in fast Response, typed as the standard one. */
export const Response = FastResponse as unknown as typeof globalThis.Response;

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
// Field values may not hold CR, LF or NUL (RFC 9110 5.5); undici rejects them too.
const BAD_VALUE = /[\r\n\0]/;

function pushHeader(out: string[], name: string, value: string): void {
  if (!TOKEN.test(name)) throw new TypeError(`Invalid header name: ${JSON.stringify(name)}`);
  const v = String(value).trim();
  if (BAD_VALUE.test(v)) throw new TypeError(`Invalid value for header ${name}`);
  out.push(name, v);
}

function flattenInit(h: HeadersInit | undefined, out: string[]): void {
  if (!h) return;
  if (h instanceof Headers) {
    for (const [k, v] of h) out.push(k, v);
  } else if (Array.isArray(h)) {
    for (const pair of h) pushHeader(out, pair[0]!, pair[1]!);
  } else {
    for (const k in h) {
      const v = (h as Record<string, string | string[]>)[k];
      if (Array.isArray(v)) for (const x of v) pushHeader(out, k, x);
      else if (v !== undefined) pushHeader(out, k, v);
    }
  }
}

function hasHeader(flat: string[], lower: string): boolean {
  for (let i = 0; i < flat.length; i += 2) if (flat[i]!.toLowerCase() === lower) return true;
  return false;
}

let stateSymbol: symbol | null | undefined;

/** undici keeps a string/bytes body's source; reading it skips a stream round. */
function nativeSource(res: globalThis.Response): string | Uint8Array | undefined {
  if (stateSymbol === undefined) {
    stateSymbol = Object.getOwnPropertySymbols(res).find((s) => s.description === 'state') ?? null;
  }
  if (stateSymbol === null || res.bodyUsed) return undefined;
  const body = (res as unknown as Record<symbol, { body?: { source?: unknown; stream?: ReadableStream } }>)[stateSymbol]
    ?.body;
  const src = body?.source;
  if ((typeof src === 'string' || src instanceof Uint8Array) && !body!.stream?.locked) return src;
  return undefined;
}

const REASON = /^[\t\x20-\x7e\x80-\xff]*$/;

function validStatus(status: number, statusText: string): void {
  if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`Invalid status ${status}`);
  if (!REASON.test(statusText)) throw new TypeError('Invalid statusText');
}

/**
 * Turn any Response (fast or native) into what an adapter writes. Throws
 * TypeError on values the standard Response would have rejected, so a bad
 * header becomes the same 500 on every server.
 */
export function toRawResponse(res: globalThis.Response): RawResponse {
  const fast = (res as unknown as FastResponse)[kFast];
  if (fast && !fast.native) {
    const init = fast.init;
    const status = init?.status ?? 200;
    const statusText = init?.statusText ?? '';
    validStatus(status, statusText);
    const headers: string[] = [];
    flattenInit(init?.headers, headers);
    let body = fast.body;
    if (body instanceof ArrayBuffer) body = new Uint8Array(body);
    else if (ArrayBuffer.isView(body) && !(body instanceof Uint8Array)) {
      body = new Uint8Array(body.buffer, body.byteOffset, body.byteLength);
    }
    if (body == null || typeof body === 'string' || body instanceof Uint8Array) {
      if (typeof body === 'string' && !hasHeader(headers, 'content-type')) {
        headers.push('content-type', fast.contentType ?? 'text/plain;charset=UTF-8');
      }
      return { status, statusText, headers, body: body ?? null };
    }
    native(res as unknown as FastResponse);
  }
  const n: globalThis.Response = fast ? fast.native! : res;
  const headers: string[] = [];
  for (const [k, v] of n.headers) headers.push(k, v);
  const src = nativeSource(n);
  return { status: n.status, statusText: n.statusText, headers, body: src ?? n.body };
}

/** Bodies are forbidden for these statuses and for HEAD (RFC 9110 6.4.1). */
export function statusHasNoBody(status: number): boolean {
  return status === 204 || status === 304 || (status >= 100 && status < 200);
}
