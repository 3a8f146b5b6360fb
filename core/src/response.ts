/**
 * A `Response` that adapters can send without building undici's Response
 * (whose constructor alone costs ~12 µs on Node 20, as much as the rest of a
 * hello request). It is `instanceof Response` and behaves as one: any standard
 * accessor builds the native Response on first use and forwards to it.
 * Opt-in: `import { Response } from '@tsgi/core'`. No global is touched.
 */

import {
  MAX_RESPONSE_HEADERS,
  MAX_RESPONSE_HEADER_BYTES,
  PLAIN_TEXT_TYPE,
  headersFit,
  isAscii,
  isFieldValue,
  isHopByHop,
  isReasonPhrase,
  isToken,
  statusHasNoBody,
} from './wire.js';

const NativeResponse = globalThis.Response;

/** What an adapter writes: status, flat [name, value, ...] headers, and one body form. */
export interface RawResponse {
  status: number;
  statusText: string;
  /** May be the Response's own list (core's fast Response): a writer that adds to it adds to a copy. */
  headers: readonly string[];
  body: string | Uint8Array | ReadableStream<Uint8Array> | null;
  /**
   * True when no header name is a hop-by-hop one or Content-Length (core's
   * fast Response knows it from construction): a writer may send `headers` as
   * they are, plus its own framing. Absent: not known.
   */
  plain?: boolean;
  /** True when every header value is ASCII (known from construction, as `plain`). Absent: not known. */
  ascii?: boolean;
}

const kFast = Symbol.for('tsgi.fastResponse');

/**
 * What the standard snapshots at construction: status, statusText, the header
 * list and the body bytes. Later changes to the init object or to a byte body
 * the handler passed change nothing (as with undici's Response).
 */
interface FastState {
  status: number;
  statusText: string;
  /** Flat [name, value, ...], validated. */
  headers: string[];
  /** Within core's header limits (headersFit), known at construction. */
  fits: boolean;
  /** No name is hop-by-hop or Content-Length (RawResponse.plain). */
  plain: boolean;
  /** Every value is ASCII (RawResponse.ascii). */
  ascii: boolean;
  /** A string or bytes body as sent; anything else is handed to the native Response. */
  body: string | Uint8Array | null;
  /** A body the fast path cannot write (stream, Blob, FormData, ...): the native Response is built at once. */
  native: globalThis.Response | undefined;
}

function native(self: FastResponse): globalThis.Response {
  const s = self[kFast];
  if (!s.native) {
    const headers = new Headers();
    for (let i = 0; i < s.headers.length; i += 2) headers.append(s.headers[i]!, s.headers[i + 1]!);
    s.native = new NativeResponse(s.body as BodyInit | null, { status: s.status, statusText: s.statusText, headers });
  }
  return s.native;
}

/** The bytes of a BufferSource body, copied as the standard's "extract a body" does. */
function copyBytes(body: ArrayBuffer | ArrayBufferView): Uint8Array {
  if (body instanceof ArrayBuffer) return new Uint8Array(body.slice(0));
  return new Uint8Array(body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength) as ArrayBuffer);
}

function makeState(body: BodyInit | null | undefined, init: ResponseInit | undefined, jsonType: boolean): FastState {
  const status = init?.status ?? 200;
  const statusText = init?.statusText ?? '';
  validStatus(status, statusText);
  const headers: string[] = [];
  const seen = flattenInit(init?.headers, headers);
  let fixed: string | Uint8Array | null | undefined;
  if (body == null) fixed = null;
  else if (typeof body === 'string') fixed = body;
  else if (body instanceof ArrayBuffer || ArrayBuffer.isView(body)) fixed = copyBytes(body);
  // As undici: a body (even an empty one) with 204, 304 or 1xx is a TypeError.
  if (body != null && statusHasNoBody(status)) throw new TypeError(`Response constructor: Invalid response status code ${status}`);
  if (typeof fixed === 'string' && (seen & SEEN_TYPE) === 0) {
    headers.push('content-type', jsonType ? 'application/json' : PLAIN_TEXT_TYPE);
  }
  const plain = (seen & SEEN_FRAMING) === 0;
  const ascii = (seen & SEEN_NON_ASCII) === 0;
  const fits = headersFit(headers);
  if (fixed !== undefined) return { status, statusText, headers, fits, plain, ascii, body: fixed, native: undefined };
  // A body only undici can read (stream, Blob, FormData, URLSearchParams): build the native one now.
  const h = new Headers();
  for (let i = 0; i < headers.length; i += 2) h.append(headers[i]!, headers[i + 1]!);
  return { status, statusText, headers, fits, plain, ascii, body: null, native: new NativeResponse(body, { status, statusText, headers: h }) };
}

export class FastResponse {
  declare [kFast]: FastState;

  constructor(body?: BodyInit | null, init?: ResponseInit) {
    this[kFast] = makeState(body, init, false);
  }

  static json(data: unknown, init?: ResponseInit): FastResponse {
    const r = Object.create(FastResponse.prototype) as FastResponse;
    r[kFast] = makeState(JSON.stringify(data), init, true);
    return r;
  }

  static redirect(url: string | URL, status = 302): globalThis.Response {
    return NativeResponse.redirect(url, status);
  }

  static error(): globalThis.Response {
    return NativeResponse.error();
  }

  get status(): number {
    return this[kFast].status;
  }
  get ok(): boolean {
    const st = this.status;
    return st >= 200 && st < 300;
  }
  get statusText(): string {
    return this[kFast].statusText;
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
  /** console.log shows what a native Response shows. */
  [Symbol.for('nodejs.util.inspect.custom')](_depth: number, options: object, inspect: (v: unknown, o: object) => string): string {
    return inspect(native(this), options);
  }
}

Object.setPrototypeOf(FastResponse.prototype, NativeResponse.prototype);
Object.setPrototypeOf(FastResponse, NativeResponse);
// Seen from a handler it is the standard Response: its name and arity, and `instanceof` true for
// native responses too (fetch()'s, Response.redirect's); a subclass keeps the ordinary check.
Object.defineProperties(FastResponse, {
  name: { value: 'Response' },
  length: { value: 0 },
  [Symbol.hasInstance]: {
    value: function hasInstance(this: unknown, v: unknown): boolean {
      return this === FastResponse ? v instanceof NativeResponse : Function.prototype[Symbol.hasInstance].call(this, v);
    },
  },
});

/** The opt-in fast Response, typed as the standard one. */
export const Response = FastResponse as unknown as typeof globalThis.Response;

const isHttpSpace = (c: number): boolean => c === 32 || c === 9 || c === 10 || c === 13;

/** A header value with leading and trailing HTAB, SP, CR and LF removed, as the standard's Headers does. */
function httpTrim(v: string): string {
  let a = 0;
  let b = v.length;
  while (a < b && isHttpSpace(v.charCodeAt(a))) a++;
  while (b > a && isHttpSpace(v.charCodeAt(b - 1))) b--;
  return a === 0 && b === v.length ? v : v.slice(a, b);
}

// What flattenInit saw, as bits: a Content-Type; a name a writer must not pass on as is (isHopByHop,
// Content-Length); a value that is not ASCII (latin1 bytes: a writer must not merge it with a UTF-8 body).
const SEEN_TYPE = 1;
const SEEN_FRAMING = 2;
const SEEN_NON_ASCII = 4;

/**
 * What `name` is among the names that matter to a writer (SEEN_* bits, 0 for
 * the rest). Only names of their lengths are lower-cased: most never are.
 */
function nameKind(name: string): number {
  const n = name.length;
  if (n !== 12 && n !== 14 && n !== 2 && n !== 7 && n !== 10 && n !== 16 && n !== 17) return 0;
  const lower = name.toLowerCase();
  if (lower === 'content-type') return SEEN_TYPE;
  return lower === 'content-length' || isHopByHop(lower) ? SEEN_FRAMING : 0;
}

// The last headers found valid, by name and value: a handler's header literals are the same
// strings on every request, so `===` matches them at once and they are not checked again.
const MEMO = 8;
const memoName: string[] = [];
const memoValue: string[] = [];
const memoKind: number[] = [];
let memoNext = 0;

/** Validates one header and appends it; returns its SEEN_* bits. */
function pushHeader(out: string[], name: string, value: string): number {
  for (let i = 0; i < memoName.length; i++) {
    if (memoName[i] === name && memoValue[i] === value) {
      out.push(name, value);
      return memoKind[i]!;
    }
  }
  if (!isToken(name)) throw new TypeError(`Invalid header name: ${JSON.stringify(name)}`);
  const v = httpTrim(typeof value === 'string' ? value : String(value));
  if (!isFieldValue(v)) throw new TypeError(`Invalid value for header ${name}`);
  out.push(name, v);
  const kind = nameKind(name) | (isAscii(v) ? 0 : SEEN_NON_ASCII);
  if (v === value) {
    memoName[memoNext] = name;
    memoValue[memoNext] = v;
    memoKind[memoNext] = kind;
    memoNext = (memoNext + 1) % MEMO;
  }
  return kind;
}

/** Appends the init's headers to `out`, validated; returns the SEEN_* bits of what it holds. */
function flattenInit(h: HeadersInit | undefined, out: string[]): number {
  if (!h) return 0;
  let seen = 0;
  // A plain object (the usual literal) is told apart without an instanceof.
  if ((h as { constructor?: unknown }).constructor !== Object) {
    if (Array.isArray(h)) {
      for (const pair of h) seen |= pushHeader(out, pair[0]!, pair[1]!);
      return seen;
    }
    if (h instanceof Headers) {
      for (const [k, v] of h) seen |= pushHeader(out, k, v);
      return seen;
    }
  }
  for (const k in h) {
    const v = (h as Record<string, string | string[]>)[k];
    if (Array.isArray(v)) for (const x of v) seen |= pushHeader(out, k, x);
    else if (v !== undefined) seen |= pushHeader(out, k, v);
  }
  return seen;
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

function validStatus(status: number, statusText: string): void {
  if (!Number.isInteger(status) || status < 200 || status > 599) throw new RangeError(`Invalid status ${status}`);
  if (!isReasonPhrase(statusText)) throw new TypeError('Invalid statusText');
}

/**
 * Turn any Response (fast or native) into what an adapter writes. Throws
 * TypeError on values no host sends (a control character or a character above
 * U+00FF in a header value, a bad reason phrase), so a bad header becomes the
 * same bare 500 on every server.
 */
export function toRawResponse(res: globalThis.Response): RawResponse {
  const fast = (res as unknown as FastResponse)[kFast];
  if (fast && !fast.native) {
    // Its list is shared, not copied: the state is a snapshot nobody changes (writers copy to add).
    if (!fast.fits) throw tooMany();
    return { status: fast.status, statusText: fast.statusText, headers: fast.headers, body: fast.body, plain: fast.plain, ascii: fast.ascii };
  }
  const n: globalThis.Response = fast ? fast.native! : res;
  validStatus(n.status, n.statusText);
  const headers: string[] = [];
  for (const [k, v] of n.headers) pushHeader(headers, k, v);
  const src = nativeSource(n);
  return { status: n.status, statusText: n.statusText, headers: fitting(headers), body: src ?? n.body };
}

/**
 * `list` and then `name: value` (and `name2: value2`), in a new array allocated at its size: how a
 * writer adds its own framing to a RawResponse's list, which may be the Response's own. Cheaper than
 * concat (a runtime call on Node 20) or slice and push (a copy, then a grown copy).
 */
export function withHeaders(list: readonly string[], name: string, value: string, name2?: string, value2?: string): string[] {
  const n = list.length;
  const out = new Array<string>(name2 === undefined ? n + 2 : n + 4);
  for (let i = 0; i < n; i++) out[i] = list[i]!;
  out[n] = name;
  out[n + 1] = value;
  if (name2 !== undefined) {
    out[n + 2] = name2;
    out[n + 3] = value2!;
  }
  return out;
}

const tooMany = (): TypeError => new TypeError(`response headers over the limit (${MAX_RESPONSE_HEADERS} lines, ${MAX_RESPONSE_HEADER_BYTES} bytes)`);

function fitting(headers: string[]): string[] {
  if (!headersFit(headers)) throw tooMany();
  return headers;
}

export { statusHasNoBody };
