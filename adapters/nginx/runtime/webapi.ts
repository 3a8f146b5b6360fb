/**
 * Web API polyfills for njs 0.7.9: Headers, Request, Response, URL,
 * URLSearchParams, ReadableStream, AbortController/AbortSignal.
 *
 * Written for njs 0.7.9's per-request VM clone (see README.md): everything that
 * exists after module load is copied for every request, so this module creates
 * at load time only its constructor functions (and Response's three statics).
 * Each type's prototype is filled on first use *within a request* by an
 * `ensureX()` installer whose method functions live inside the installer's
 * body, so a request pays only for the types it touches.
 *
 * Style rules (the code is lowered to ES5 by esbuild + babel-preset-njs):
 * plain functions, no classes, no Map/Set, no spread, no for-of, no
 * generators, no default parameters, never `f(await x)`.
 *
 * Nothing here touches globals: in njs the build aliases the global names to
 * these exports; in Node the tests import them side by side with Node's own.
 */

/* eslint-disable @typescript-eslint/no-this-alias -- njs 0.7.9 code: closures capture the instance */
import { isAscii, isFieldValue, isReasonPhrase, isToken as isTokenExact } from '../../../core/src/wire.js';

type Any = any;

// Installed-prototype flags. Primitives: cheap to clone, reset for every request.
let hdrP = false;
let reqP = false;
let resP = false;
let urlP = false;
let uspP = false;
let rsP = false;
let sigP = false;
let blobP = false;
let fdP = false;

/**
 * RFC 9110 token check (wire.ts). A loop costs ~0.1 µs a character in njs
 * 0.7.9, so the common case goes through encodeURIComponent (native): it
 * leaves exactly A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone, all token characters but
 * "(" and ")". Anything else gets the exact check.
 */
function isToken(n: string): boolean {
  if (n.length > 0 && encodeURIComponent(n) === n) return n.indexOf('(') < 0 && n.indexOf(')') < 0;
  return isTokenExact(n);
}

/** The lower-cased header name, or null when `n` is not a token. The usual names are
 * answered by a switch: each native call (test, toLowerCase) costs ~0.1 µs in njs 0.7.9. */
function tokenLower(n: string): string | null {
  switch (n) {
    case 'content-type':
    case 'Content-Type':
      return 'content-type';
    case 'cache-control':
    case 'Cache-Control':
      return 'cache-control';
    case 'set-cookie':
    case 'Set-Cookie':
      return 'set-cookie';
    case 'location':
    case 'Location':
      return 'location';
    case 'etag':
    case 'ETag':
      return 'etag';
    case 'x-powered-by':
      return n;
  }
  return isToken(n) ? n.toLowerCase() : null;
}

/** Normalizes (trims HTTP whitespace) and validates one header, then appends it.
 * Top-level, not in HB(): the text-Response fast path uses it on every request. */
function headerPush(l: Any, name: Any, value: Any): void {
  const n = tokenLower(typeof name === 'string' ? name : String(name));
  if (n === null) throw new TypeError('Invalid header name: "' + name + '"');
  let v = typeof value === 'string' ? value : String(value);
  switch (v) {
    // Common values are known to be valid: skip the four native scans below.
    case 'text/plain;charset=UTF-8':
    case 'text/plain; charset=utf-8':
    case 'text/plain':
    case 'text/html;charset=UTF-8':
    case 'text/html; charset=utf-8':
    case 'text/html':
    case 'application/json':
    case 'application/json; charset=utf-8':
    case 'no-cache':
    case 'no-store':
      break;
    default: {
      // trim() strips a superset of HTTP whitespace: only then pay for the exact regex.
      if (v.trim() !== v) v = v.replace(/^[\t\n\r ]+|[\t\n\r ]+$/g, '');
      // Visible ASCII that encodeURI leaves alone, and spaces (each grows the encoding by exactly 2,
      // anything else encoded grows it too): valid and ASCII, known from one or two native calls.
      let e: string;
      try {
        e = encodeURI(v);
      } catch (_e) {
        e = ''; // a lone surrogate
      }
      if (e !== v && e.length !== v.length + 2 * (v.split(' ').length - 1)) {
        // wire.ts: control characters, DEL and anything above U+00FF are never sent. undici
        // refuses CR, LF, NUL and > U+00FF here and the Node hosts the rest when they write;
        // refusing all of them here gives the same bare 500.
        if (!isFieldValue(v)) throw new TypeError('Invalid value for header "' + n + '"');
        // U+0080..U+00FF go out as one byte each: the writer looks for them only in marked lists.
        if (!isAscii(v)) l._l1 = true;
      }
    }
  }
  l.push(n, v);
}

/** An array-backed iterator (no generators in njs 0.7.9). */
function arrayIter(a: Any[]): Any {
  let i = 0;
  const it: Any = {
    next: function () {
      return i < a.length ? { value: a[i++], done: false } : { value: undefined, done: true };
    },
  };
  it[Symbol.iterator] = function () {
    return it;
  };
  return it;
}

// ---------------------------------------------------------------- Headers

/**
 * Header list as a flat array [lowerName, value, ...] in insertion order,
 * the way the Fetch standard keeps it; `get` joins with ", ".
 */
export function Headers(this: Any, init?: Any): Any {
  if (!(this instanceof (Headers as Any))) throw new TypeError("Failed to construct 'Headers': Please use the 'new' operator");
  if (!hdrP) HB().ensureHeaders();
  this._l = [];
  if (init != null) HB().fillHeaders(this._l, init);
}





/** Flat [lowerName, value, ...] list of a Request/Response (no Headers object built). A list
 * holding a value with U+0080..U+00FF carries `_l1 = true` (headerPush sets it; copies keep it). */
export function headerList(x: Any): string[] {
  return x._hd ? x._hd._l : x._h;
}


// ---------------------------------------------------------------- bodies











/** Header and body helpers, created on first use in a request (nested functions cost
 * nothing until their factory runs; top-level ones are cloned for every request). */
let hbCache: Any = null;
export function HB(): Any {
  if (hbCache !== null) return hbCache;
  /**
   * Bytes start..end (byte offsets) of the view `u`, copied into a Uint8Array over a buffer of
   * exactly that size. njs 0.7.9's TypedArray.prototype.slice copies from the
   * start of the underlying buffer (it ignores the view's offset) and
   * String.bytesFrom(view) takes the whole buffer; ArrayBuffer.prototype.slice,
   * subarray, set() and TextDecoder are right. Never use a typed array's slice here.
   */
  function copyBytes(u: Any, start: number, end: number): Any {
    return new Uint8Array(u.buffer.slice(u.byteOffset + start, u.byteOffset + end));
  }

  /** ArrayBuffer.isView, which in njs 0.7.9 is false for a DataView. */
  function isView(x: Any): boolean {
    return ArrayBuffer.isView(x) || x instanceof DataView;
  }
  /** Validates and appends `init` (Headers, [[k, v]...], iterable or record) to a flat list. */
  function fillHeaders(l: Any, init: Any): void {
    let i: number;
    if (init instanceof (Headers as Any)) {
      const src = init._l;
      for (i = 0; i < src.length; i++) l.push(src[i]);
      if (src._l1) l._l1 = true;
      return;
    }
    if (typeof init !== 'object' && typeof init !== 'function') throw new TypeError('Headers init must be an object');
    let pairs: Any = null;
    if (Array.isArray(init)) pairs = init;
    else if (typeof init[Symbol.iterator] === 'function') {
      pairs = [];
      const it = init[Symbol.iterator]();
      for (let s = it.next(); !s.done; s = it.next()) pairs.push(s.value);
    }
    if (pairs) {
      for (i = 0; i < pairs.length; i++) {
        const p = pairs[i];
        if (p == null || typeof p !== 'object' || p.length !== 2) {
          throw new TypeError('Headers init: each entry must be a [name, value] pair');
        }
        headerPush(l, p[0], p[1]);
      }
      return;
    }
    const keys = Object.keys(init);
    for (i = 0; i < keys.length; i++) headerPush(l, keys[i], init[keys[i]]);
  }
  function ensureHeaders(): void {
    hdrP = true;
    const p = Headers.prototype as Any;
    function lower(name: Any): string {
      const n = tokenLower(String(name));
      if (n === null) throw new TypeError('Invalid header name: "' + name + '"');
      return n;
    }
    function remove(l: Any[], n: string): void {
      for (let i = l.length - 2; i >= 0; i -= 2) if (l[i] === n) l.splice(i, 2);
    }
    // Sorted, combined view used by iteration (Set-Cookie stays one entry per value).
    function sorted(l: Any[]): Any[] {
      const names: string[] = [];
      const seen: Any = {};
      let i: number;
      for (i = 0; i < l.length; i += 2) {
        if (seen[l[i]] !== true) {
          seen[l[i]] = true;
          names.push(l[i]);
        }
      }
      names.sort();
      const out: Any[] = [];
      for (i = 0; i < names.length; i++) {
        const n = names[i];
        if (n === 'set-cookie') {
          for (let j = 0; j < l.length; j += 2) if (l[j] === n) out.push([n, l[j + 1]]);
        } else out.push([n, getJoined(l, n)]);
      }
      return out;
    }
    p.append = function (name: Any, value: Any) {
      headerPush(this._l, name, value);
    };
    p.set = function (name: Any, value: Any) {
      const tmp: Any = [];
      headerPush(tmp, name, value);
      const l = this._l;
      let at = -1;
      for (let i = 0; i < l.length; i += 2) {
        if (l[i] === tmp[0]) {
          if (at < 0) {
            at = i;
            l[i + 1] = tmp[1];
          } else {
            l.splice(i, 2);
            i -= 2;
          }
        }
      }
      if (at < 0) l.push(tmp[0], tmp[1]);
      if (tmp._l1) l._l1 = true;
    };
    p.get = function (name: Any) {
      return getJoined(this._l, lower(name));
    };
    p.has = function (name: Any) {
      const n = lower(name);
      const l = this._l;
      for (let i = 0; i < l.length; i += 2) if (l[i] === n) return true;
      return false;
    };
    p.delete = function (name: Any) {
      remove(this._l, lower(name));
    };
    p.getSetCookie = function () {
      const out: string[] = [];
      const l = this._l;
      for (let i = 0; i < l.length; i += 2) if (l[i] === 'set-cookie') out.push(l[i + 1]);
      return out;
    };
    p.forEach = function (cb: Any, thisArg: Any) {
      const s = sorted(this._l);
      for (let i = 0; i < s.length; i++) cb.call(thisArg, s[i][1], s[i][0], this);
    };
    p.entries = function () {
      return arrayIter(sorted(this._l));
    };
    p.keys = function () {
      const s = sorted(this._l);
      for (let i = 0; i < s.length; i++) s[i] = s[i][0];
      return arrayIter(s);
    };
    p.values = function () {
      const s = sorted(this._l);
      for (let i = 0; i < s.length; i++) s[i] = s[i][1];
      return arrayIter(s);
    };
    p[Symbol.iterator] = p.entries;
  }
  function getJoined(l: Any[], n: string): string | null {
    let out: string | null = null;
    for (let i = 0; i < l.length; i += 2) {
      if (l[i] === n) out = out === null ? l[i + 1] : out + ', ' + l[i + 1];
    }
    return out;
  }
  /**
   * Body state shared by Request and Response:
   *   _b: null | string | Uint8Array | ReadableStream (source, until .body is read)
   *   _used: consumed by text()/json()/...
   */
  function toBody(o: Any, body: Any): string | null {
    // Returns the default content type, if the body kind has one.
    if (body == null) {
      o._b = null;
      return null;
    }
    if (typeof body === 'string') {
      o._b = body;
      return 'text/plain;charset=UTF-8';
    }
    if (body instanceof Uint8Array) {
      o._b = body;
      return null;
    }
    if (body instanceof ArrayBuffer) {
      o._b = new Uint8Array(body.slice(0));
      return null;
    }
    if (isView(body)) {
      o._b = copyBytes(body, 0, body.byteLength);
      return null;
    }
    if (body instanceof (ReadableStream as Any)) {
      if (body.locked || body._disturbed) throw new TypeError('Response body object should not be disturbed or locked');
      o._b = body;
      return null;
    }
    if (body instanceof (URLSearchParams as Any)) {
      o._b = body.toString();
      return 'application/x-www-form-urlencoded;charset=UTF-8';
    }
    if (body instanceof (FormData as Any)) {
      const m = FD().encodeForm(body);
      o._b = m[0];
      return m[1];
    }
    if (body instanceof (Blob as Any)) {
      o._b = copyBytes(body._u, 0, body._u.length);
      return body.type === '' ? null : body.type;
    }
    o._b = String(body);
    return 'text/plain;charset=UTF-8';
  }
  function bodyStream(o: Any): Any {
    const b = o._b;
    if (b == null) return null;
    if (b instanceof (ReadableStream as Any)) return b;
    const s = streamOfBytes(typeof b === 'string' ? new TextEncoder().encode(b) : b);
    if (o._used) {
      s._disturbed = true;
      s._state = 'closed';
    }
    o._b = s;
    return s;
  }
  function bodyUsed(o: Any): boolean {
    const b = o._b;
    return o._used || (b instanceof (ReadableStream as Any) && b._disturbed === true);
  }
  /** Reads the whole body: kind 0 = string, 1 = Uint8Array. */
  function consume(o: Any, kind: number): Any {
    if (bodyUsed(o)) return Promise.reject(new TypeError('Body is unusable: Body has already been read'));
    const b = o._b;
    if (b instanceof (ReadableStream as Any) && b.locked) return Promise.reject(new TypeError('Body is unusable: Body is locked'));
    o._used = true;
    if (b == null) return Promise.resolve(kind === 0 ? '' : new Uint8Array(0));
    if (typeof b === 'string') return Promise.resolve(kind === 0 ? b : new TextEncoder().encode(b));
    if (b instanceof Uint8Array) return Promise.resolve(kind === 0 ? new TextDecoder().decode(b) : copyBytes(b, 0, b.length));
    const reader = b.getReader();
    const chunks: Any[] = [];
    function step(): Any {
      return reader.read().then(function (res: Any): Any {
        if (res.done) {
          const all = concat(chunks);
          return kind === 0 ? new TextDecoder().decode(all) : all;
        }
        let c = res.value;
        if (typeof c === 'string') c = new TextEncoder().encode(c);
        else if (!(c instanceof Uint8Array)) {
          if (isView(c)) c = new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
          else throw new TypeError('Received non-Uint8Array chunk');
        }
        chunks.push(c);
        return step();
      });
    }
    return step();
  }
  /** One Uint8Array holding every chunk of `list`, in order. */
  function concat(list: Any[]): Any {
    let n = 0;
    let i: number;
    for (i = 0; i < list.length; i++) n += list[i].length;
    const out = new Uint8Array(n);
    let off = 0;
    for (i = 0; i < list.length; i++) {
      out.set(list[i], off);
      off += list[i].length;
    }
    return out;
  }
  /** A stream that yields `bytes` (if any) as its one chunk, then closes. */
  function streamOfBytes(bytes: Any): Any {
    return new (ReadableStream as Any)({
      start: function (c: Any) {
        if (bytes.length) c.enqueue(bytes);
        c.close();
      },
    });
  }
  function toArrayBuffer(u: Any): Any {
    return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? u.buffer : copyBytes(u, 0, u.byteLength).buffer;
  }
  /** Copies body for clone(): tees a stream, shares an immutable source. */
  function cloneBody(from: Any, to: Any): void {
    if (bodyUsed(from)) throw new TypeError('Response.clone: Body has already been consumed.');
    const b = from._b;
    if (b instanceof (ReadableStream as Any)) {
      if (b.locked) throw new TypeError('Body is locked');
      const t = b.tee();
      from._b = t[0];
      to._b = t[1];
    } else to._b = b;
    to._used = false;
  }
  /** Lazily turns the flat header list into a Headers object (built on first `.headers`). */
  function headersOf(o: Any): Any {
    if (!o._hd) {
      const h = new (Headers as Any)();
      h._l = o._h;
      o._hd = h;
      o._h = undefined;
    }
    return o._hd;
  }
  /** A copy of a header list, its `_l1` mark included. */
  function copyList(l: Any): Any {
    const c = l.slice(0);
    if (l._l1) c._l1 = true;
    return c;
  }
  function hasName(l: string[], n: string): boolean {
    for (let i = 0; i < l.length; i += 2) if (l[i] === n) return true;
    return false;
  }

  hbCache = { fillHeaders: fillHeaders, ensureHeaders: ensureHeaders, getJoined: getJoined, toBody: toBody, bodyStream: bodyStream, bodyUsed: bodyUsed, consume: consume, toArrayBuffer: toArrayBuffer, concat: concat, streamOfBytes: streamOfBytes, cloneBody: cloneBody, headersOf: headersOf, hasName: hasName, copyList: copyList, copyBytes: copyBytes, isView: isView };
  return hbCache;
}
// ---------------------------------------------------------------- Response


export function Response(this: Any, body?: Any, init?: Any): Any {
  if (!(this instanceof (Response as Any))) throw new TypeError("Failed to construct 'Response': Please use the 'new' operator");
  if (!resP) {
    // `this` still has the pre-install prototype: move it to the installed one.
    ensureResponse();
    Object.setPrototypeOf(this, Response.prototype);
  }
  if (typeof body === 'string') {
    if (init === undefined) {
      // The common `new Response(text)`: no init to validate. status 200, statusText ''
      // and ok true come from the prototype (each own property costs ~50 ns in njs 0.7.9).
      this._h = ['content-type', 'text/plain;charset=UTF-8'];
      this._b = body;
      return;
    }
    // `new Response(text, { status, headers: { name: 'value' } })` without HB(): building
    // the helper set costs more than the whole response. Anything unusual takes the full path.
    if (textInit(this, body, init)) return;
  }
  let status = 200;
  let statusText = '';
  const h: string[] = [];
  if (init != null) {
    if (typeof init !== 'object') throw new TypeError('Response init must be an object');
    if (init.status !== undefined) {
      status = Number(init.status);
      if (!(status >= 200 && status <= 599 && Math.floor(status) === status)) {
        throw new RangeError('init["status"] must be in the range of 200 to 599, inclusive.');
      }
    }
    if (init.statusText !== undefined) {
      statusText = String(init.statusText);
      if (!isReasonPhrase(statusText)) throw new TypeError('Invalid statusText');
    }
    if (init.headers != null) HB().fillHeaders(h, init.headers);
  }
  // Plain data fields (getters cost ~0.35 µs each to install in njs 0.7.9).
  this.status = status;
  this.statusText = statusText;
  this.ok = status >= 200 && status < 300;
  this._h = h;
  const ct = HB().toBody(this, body);
  if (this._b != null && (status === 204 || status === 205 || status === 304)) throw new TypeError('Response with null body status cannot have body');
  if (ct !== null && !HB().hasName(h, 'content-type')) headerPush(h, 'content-type', ct);
}

/** Fast path of Response for a text body and a plain init; false = take the full path. */
function textInit(o: Any, body: string, init: Any): boolean {
  if (init === null || typeof init !== 'object') return false;
  if (init.statusText !== undefined) return false;
  let status = 200;
  const st = init.status;
  if (st !== undefined) {
    if (typeof st !== 'number' || !(st >= 200 && st <= 599) || Math.floor(st) !== st) return false;
    if (st === 204 || st === 205 || st === 304) return false;
    status = st;
  }
  const hi = init.headers;
  const h: string[] = [];
  let ct = false;
  if (hi != null) {
    // A record (WebIDL: any object without @@iterator): the same pushes, in the same order,
    // as fillHeaders would make. Headers instances and arrays are iterable: full path.
    if (typeof hi !== 'object' || hi[Symbol.iterator] !== undefined) return false;
    const keys = Object.keys(hi);
    for (let i = 0; i < keys.length; i++) {
      headerPush(h, keys[i], hi[keys[i]]);
      if (h[h.length - 2] === 'content-type') ct = true;
    }
  }
  if (!ct) h.push('content-type', 'text/plain;charset=UTF-8');
  if (status !== 200) {
    o.status = status;
    o.ok = status < 300;
  }
  o._h = h;
  o._b = body;
  return true;
}

// Prototypes are object literals (getters included): in njs 0.7.9 a literal
// costs a fraction of the equivalent defineProperty calls. Request and Response
// share one body prototype, built once per request.
let bodyP: Any = null;
function bodyProto(): Any {
  if (bodyP === null) {
    bodyP = {
      get body() {
        return HB().bodyStream(this);
      },
      get bodyUsed() {
        return HB().bodyUsed(this);
      },
      text: bodyText,
      json: bodyJson,
      bytes: bodyBytes,
      arrayBuffer: bodyArrayBuffer,
      blob: bodyBlob,
      formData: bodyFormData,
    };
  }
  return bodyP;
}

// Prototype methods are top-level functions: cloning one with the module is cheaper in njs
// 0.7.9 than creating it in a literal on each request (getters have no such choice).
function bodyText(this: Any): Any {
  return HB().consume(this, 0);
}
function bodyJson(this: Any): Any {
  return HB().consume(this, 0).then(JSON.parse);
}
function bodyBytes(this: Any): Any {
  return HB().consume(this, 1);
}
function bodyArrayBuffer(this: Any): Any {
  return HB().consume(this, 1).then(HB().toArrayBuffer);
}
function bodyBlob(this: Any): Any {
  const self = this;
  const type = FD().mimeOf(self);
  return HB()
    .consume(self, 1)
    .then(function (u: Any) {
      return FD().blobOf(u, type);
    });
}
function bodyFormData(this: Any): Any {
  return FD().readForm(this);
}

function ensureResponse(): void {
  resP = true;
  Response.prototype = {
    __proto__: bodyProto(),
    constructor: Response,
    // Defaults the hot constructors leave out of the instance.
    status: 200,
    statusText: '',
    ok: true,
    type: 'default',
    url: '',
    redirected: false,
    get headers() {
      return HB().headersOf(this);
    },
    clone: responseClone,
  };
}

function responseClone(this: Any): Any {
  const c = Object.create(Response.prototype);
  c.status = this.status;
  c.statusText = this.statusText;
  c.ok = this.ok;
  if (this.type !== 'default') c.type = this.type;
  c._h = HB().copyList(headerList(this));
  HB().cloneBody(this, c);
  return c;
}

// Statics are declared functions assigned once: in njs 0.7.9 a declaration costs less per
// request than a function expression.
(Response as Any).json = responseJson;
(Response as Any).redirect = responseRedirect;
(Response as Any).error = responseError;

function responseJson(data: Any, init?: Any): Any {
  const s = JSON.stringify(data);
  if (s === undefined) throw new TypeError('Value is not JSON serializable');
  const res = new (Response as Any)(s, init);
  const l = res._h;
  for (let i = 0; i < l.length; i += 2) {
    if (l[i] === 'content-type' && l[i + 1] === 'text/plain;charset=UTF-8') l.splice(i, 2);
  }
  if (!HB().hasName(l, 'content-type')) l.push('content-type', 'application/json');
  return res;
}

function responseRedirect(url: Any, status?: Any): Any {
  const st = status === undefined ? 302 : status;
  if (st !== 301 && st !== 302 && st !== 303 && st !== 307 && st !== 308) throw new RangeError('Invalid status code ' + st);
  const href = new (URL as Any)(String(url)).href;
  const res = new (Response as Any)(null, { status: st });
  headerPush(res._h, 'location', href);
  return res;
}

function responseError(): Any {
  const res = new (Response as Any)(null);
  res.status = 0;
  res.ok = false;
  res.type = 'error';
  return res;
}

// ---------------------------------------------------------------- Request


export function Request(this: Any, input: Any, init?: Any): Any {
  if (!(this instanceof (Request as Any))) throw new TypeError("Failed to construct 'Request': Please use the 'new' operator");
  if (!reqP) {
    ensureRequest();
    return new (Request as Any)(input, init);
  }
  let from: Any = null;
  if (input instanceof (Request as Any)) {
    from = input;
    // A bridge-made request builds its header list on first use.
    if (!from._h && !from._hd) from._h = from._mkh(from._r);
  }
  this._url = from ? from.url : new (URL as Any)(String(input)).href;
  let method = from ? from.method : 'GET';
  if (init != null && init.method !== undefined) {
    method = String(init.method);
    if (!isToken(method)) throw new TypeError("'" + method + "' is not a valid HTTP method.");
    const up = method.toUpperCase();
    if (up === 'CONNECT' || up === 'TRACE' || up === 'TRACK') throw new TypeError("'" + method + "' HTTP method is unsupported.");
    if (up === 'DELETE' || up === 'GET' || up === 'HEAD' || up === 'OPTIONS' || up === 'POST' || up === 'PUT') method = up;
  }
  this.method = method;
  const h: string[] = [];
  if (init != null && init.headers !== undefined) HB().fillHeaders(h, init.headers);
  else if (from) {
    const fl = headerList(from);
    for (let i = 0; i < fl.length; i++) h.push(fl[i]);
    if ((fl as Any)._l1) (h as Any)._l1 = true;
  }
  this._h = h;
  this._sig = init != null && init.signal != null ? init.signal : from ? from._sig : null;
  let ct: string | null = null;
  if (init != null && init.body != null) {
    ct = HB().toBody(this, init.body);
  } else if (from && from._b != null) {
    if (HB().bodyUsed(from)) throw new TypeError('Cannot construct a Request with a Request object that has already been used.');
    this._b = from._b;
    from._used = true;
  } else this._b = null;
  if (this._b != null && (method === 'GET' || method === 'HEAD')) {
    throw new TypeError('Request with GET/HEAD method cannot have body.');
  }
  if (ct !== null && !HB().hasName(h, 'content-type')) headerPush(h, 'content-type', ct);
}

function ensureRequest(): void {
  reqP = true;
  Request.prototype = {
    __proto__: bodyProto(),
    constructor: Request,
    get url() {
      if (this._url === undefined) this._url = this._mk(this._r);
      return this._url;
    },
    get headers() {
      if (!this._h && !this._hd) this._h = this._mkh(this._r);
      return HB().headersOf(this);
    },
    get signal() {
      if (!this._sig) this._sig = new (AbortSignal as Any)();
      return this._sig;
    },
    clone: requestClone,
  };
}

function requestClone(this: Any): Any {
  if (!this._h && !this._hd) this._h = this._mkh(this._r);
  const c = Object.create(Request.prototype);
  c.method = this.method;
  c._url = this.url;
  c._h = HB().copyList(headerList(this));
  c._sig = this._sig;
  HB().cloneBody(this, c);
  return c;
}

/**
 * Builds a Request without parsing anything up front: `mkUrl(src)` and
 * `mkHeaders(src)` (flat [lowerName, value, ...]) run on first `.url` /
 * `.headers`. Used by the nginx bridge; `body` is null, a string or bytes.
 */
export function lazyRequest(src: Any, method: string, body: Any, mkUrl: Any, mkHeaders: Any): Any {
  if (!reqP) ensureRequest();
  // One literal (cheaper than Object.create + stores in njs); _url/_h/_hd/_sig/_used start undefined.
  return { __proto__: Request.prototype, method: method, _r: src, _mk: mkUrl, _mkh: mkHeaders, _b: body };
}

// ---------------------------------------------------------------- Blob, File, FormData

/** Blob: bytes in `_u` (a Uint8Array nothing else holds), `size` and `type` as data fields. */
export function Blob(this: Any, parts?: Any, options?: Any): Any {
  if (!(this instanceof (Blob as Any))) throw new TypeError("Failed to construct 'Blob': Please use the 'new' operator");
  FD().initBlob(this, parts, options);
}

export function File(this: Any, parts: Any, name: Any, options?: Any): Any {
  if (!(this instanceof (File as Any))) throw new TypeError("Failed to construct 'File': Please use the 'new' operator");
  if (arguments.length < 2) throw new TypeError("Failed to construct 'File': 2 arguments required");
  FD().initBlob(this, parts, options);
  this.name = String(name);
  this.lastModified = options != null && options.lastModified !== undefined ? Number(options.lastModified) : Date.now();
}

/** FormData: entries in `_e` as a flat [name, value, ...] list, in insertion order. */
export function FormData(this: Any, form?: Any): Any {
  if (!(this instanceof (FormData as Any))) throw new TypeError("Failed to construct 'FormData': Please use the 'new' operator");
  if (form !== undefined) throw new TypeError("Failed to construct 'FormData': parameter 1 is not of type 'HTMLFormElement'");
  if (!fdP) FD().ensureFormData();
  this._e = [];
}

/** Blob/File/FormData helpers and multipart encoding, built on first use in a request. */
let fdCache: Any = null;
function FD(): Any {
  if (fdCache !== null) return fdCache;
  const CRLF = '\r\n';
  function enc(s: string): Any {
    return new TextEncoder().encode(s);
  }
  const concat = HB().concat;
  const copyBytes = HB().copyBytes;
  const isView = HB().isView;
  /** A Blob type: lower-cased, '' unless every character is printable ASCII. */
  function blobType(t: Any): string {
    if (t === undefined) return '';
    const v = String(t);
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c < 0x20 || c > 0x7e) return '';
    }
    return v.toLowerCase();
  }
  function ensureBlob(): void {
    blobP = true;
    const p = Blob.prototype as Any;
    p.text = function () {
      return Promise.resolve(new TextDecoder().decode(this._u));
    };
    p.bytes = function () {
      return Promise.resolve(copyBytes(this._u, 0, this._u.length));
    };
    p.arrayBuffer = function () {
      return Promise.resolve(copyBytes(this._u, 0, this._u.length).buffer);
    };
    p.slice = function (start: Any, end: Any, type: Any) {
      const n = this._u.length;
      let a = start === undefined ? 0 : Math.trunc(Number(start)) || 0;
      let b = end === undefined ? n : Math.trunc(Number(end)) || 0;
      a = a < 0 ? Math.max(n + a, 0) : Math.min(a, n);
      b = b < 0 ? Math.max(n + b, 0) : Math.min(b, n);
      return blobOf(copyBytes(this._u, a, Math.max(a, b)), blobType(type));
    };
    p.stream = function () {
      return HB().streamOfBytes(copyBytes(this._u, 0, this._u.length));
    };
    // File.prototype inherits Blob.prototype (both objects already exist: they are only extended).
    Object.setPrototypeOf(File.prototype, Blob.prototype);
  }
  function initBlob(o: Any, parts: Any, options: Any): void {
    if (!blobP) ensureBlob();
    const list: Any[] = [];
    if (parts !== undefined) {
      if (parts === null || typeof parts !== 'object' || typeof parts[Symbol.iterator] !== 'function') {
        throw new TypeError("Failed to construct 'Blob': The provided value cannot be converted to a sequence.");
      }
      const it = parts[Symbol.iterator]();
      for (let st = it.next(); !st.done; st = it.next()) {
        const x = st.value;
        if (x instanceof (Blob as Any)) list.push(x._u);
        else if (x instanceof ArrayBuffer) list.push(new Uint8Array(x.slice(0)));
        else if (isView(x)) list.push(copyBytes(x, 0, x.byteLength));
        else list.push(enc(String(x)));
      }
    }
    o._u = list.length === 1 ? copyBytes(list[0], 0, list[0].length) : concat(list);
    o.size = o._u.length;
    o.type = options != null ? blobType(options.type) : '';
  }
  /** A Blob over bytes nobody else holds (no copy). */
  function blobOf(u: Any, type: string): Any {
    const b = new (Blob as Any)();
    b._u = u;
    b.size = u.length;
    b.type = type;
    return b;
  }
  function fileOf(u: Any, name: string, type: string): Any {
    const f = new (File as Any)([], name, { type: type });
    f._u = u;
    f.size = u.length;
    return f;
  }
  /** FormData's value conversion: strings, or Files (a Blob becomes a File named "blob"). */
  function entryValue(value: Any, filename: Any, n: number): Any {
    if (!(value instanceof (Blob as Any))) {
      if (n > 2) throw new TypeError("Failed to execute 'append' on 'FormData': parameter 2 is not of type 'Blob'.");
      return String(value);
    }
    if (value instanceof (File as Any) && filename === undefined) return value;
    const f = fileOf(value._u, filename !== undefined ? String(filename) : value instanceof (File as Any) ? value.name : 'blob', value.type);
    if (value instanceof (File as Any)) f.lastModified = value.lastModified;
    return f;
  }
  function ensureFormData(): void {
    fdP = true;
    if (!blobP) ensureBlob();
    const p = FormData.prototype as Any;
    function pairs(e: Any[]): Any[] {
      const out: Any[] = [];
      for (let i = 0; i < e.length; i += 2) out.push([e[i], e[i + 1]]);
      return out;
    }
    p.append = function (name: Any, value: Any, filename: Any) {
      if (arguments.length < 2) throw new TypeError("Failed to execute 'append' on 'FormData': 2 arguments required");
      this._e.push(String(name), entryValue(value, filename, arguments.length));
    };
    p.set = function (name: Any, value: Any, filename: Any) {
      if (arguments.length < 2) throw new TypeError("Failed to execute 'set' on 'FormData': 2 arguments required");
      const n = String(name);
      const v = entryValue(value, filename, arguments.length);
      const e = this._e;
      let at = -1;
      for (let i = 0; i < e.length; i += 2) {
        if (e[i] !== n) continue;
        if (at < 0) {
          at = i;
          e[i + 1] = v;
        } else {
          e.splice(i, 2);
          i -= 2;
        }
      }
      if (at < 0) e.push(n, v);
    };
    p.get = function (name: Any) {
      const n = String(name);
      for (let i = 0; i < this._e.length; i += 2) if (this._e[i] === n) return this._e[i + 1];
      return null;
    };
    p.getAll = function (name: Any) {
      const n = String(name);
      const out: Any[] = [];
      for (let i = 0; i < this._e.length; i += 2) if (this._e[i] === n) out.push(this._e[i + 1]);
      return out;
    };
    p.has = function (name: Any) {
      return this.get(name) !== null;
    };
    p.delete = function (name: Any) {
      const n = String(name);
      const e = this._e;
      for (let i = e.length - 2; i >= 0; i -= 2) if (e[i] === n) e.splice(i, 2);
    };
    p.forEach = function (fn: Any, thisArg: Any) {
      const l = pairs(this._e);
      for (let i = 0; i < l.length; i++) fn.call(thisArg, l[i][1], l[i][0], this);
    };
    p.entries = function () {
      return arrayIter(pairs(this._e));
    };
    p.keys = function () {
      const out: Any[] = [];
      for (let i = 0; i < this._e.length; i += 2) out.push(this._e[i]);
      return arrayIter(out);
    };
    p.values = function () {
      const out: Any[] = [];
      for (let i = 1; i < this._e.length; i += 2) out.push(this._e[i]);
      return arrayIter(out);
    };
    p[Symbol.iterator] = p.entries;
  }
  // ---- multipart/form-data (RFC 7578), as undici writes and reads it
  function escapeName(s: string): string {
    return s.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
  }
  function unescapeName(s: Any): Any {
    return s === undefined ? s : s.replace(/%0D/gi, '\r').replace(/%0A/gi, '\n').replace(/%22/g, '"');
  }
  /** FormData -> [bytes, content type]. */
  function encodeForm(fd: Any): Any[] {
    let boundary = '----tsgi-formdata-';
    for (let i = 0; i < 3; i++) boundary += String(Math.random()).slice(2, 10);
    const list: Any[] = [];
    const e = fd._e;
    for (let i = 0; i < e.length; i += 2) {
      const v = e[i + 1];
      let head = '--' + boundary + CRLF + 'Content-Disposition: form-data; name="' + escapeName(e[i]) + '"';
      if (typeof v === 'string') {
        // Line breaks in values become CRLF, as undici and browsers send them.
        list.push(enc(head + CRLF + CRLF + v.replace(/\r?\n|\r/g, CRLF) + CRLF));
        continue;
      }
      head += '; filename="' + escapeName(v.name) + '"' + CRLF + 'Content-Type: ' + (v.type || 'application/octet-stream') + CRLF + CRLF;
      list.push(enc(head), v._u, enc(CRLF));
    }
    list.push(enc('--' + boundary + '--' + CRLF));
    return [concat(list), 'multipart/form-data; boundary=' + boundary];
  }
  /** Index of `pat` (bytes) in `u` from `from`, or -1. */
  function find(u: Any, pat: Any, from: number): number {
    const first = pat[0];
    const last = u.length - pat.length;
    for (let i = u.indexOf(first, from); i >= 0 && i <= last; i = u.indexOf(first, i + 1)) {
      let j = 1;
      while (j < pat.length && u[i + j] === pat[j]) j++;
      if (j === pat.length) return i;
    }
    return -1;
  }
  /** A header parameter (`name="x"` or `name=x`) of a Content-Disposition value, or undefined. */
  function param(v: string, key: string): Any {
    const re = new RegExp('(?:^|;)\\s*' + key + '\\s*=\\s*(?:"([^"]*)"|([^;\\s]*))', 'i');
    const m = re.exec(v);
    if (m === null) return undefined;
    return m[1] !== undefined ? m[1] : m[2];
  }
  function parseMultipart(u: Any, boundary: string): Any {
    const bad = 'Failed to parse body as FormData.';
    const fd = new (FormData as Any)();
    const delim = enc('--' + boundary);
    const next = enc(CRLF + '--' + boundary);
    const hdrEnd = enc(CRLF + CRLF);
    // As undici: the body starts with the first delimiter (no preamble).
    if (find(u, delim, 0) !== 0) throw new TypeError(bad);
    let p = delim.length;
    for (;;) {
      if (u[p] === 0x2d && u[p + 1] === 0x2d) return fd; // the closing delimiter
      while (u[p] === 0x20 || u[p] === 0x09) p++;
      if (u[p] !== 0x0d || u[p + 1] !== 0x0a) throw new TypeError(bad);
      p += 2;
      const h = find(u, hdrEnd, p);
      if (h < 0) throw new TypeError(bad);
      const lines = new TextDecoder().decode(u.subarray(p, h)).split(CRLF);
      let disp: Any;
      let type = '';
      for (let i = 0; i < lines.length; i++) {
        const c = lines[i].indexOf(':');
        if (c < 0) continue;
        const n = lines[i].slice(0, c).trim().toLowerCase();
        const v = lines[i].slice(c + 1).trim();
        if (n === 'content-disposition') disp = v;
        else if (n === 'content-type') type = v;
      }
      const end = find(u, next, h + 4);
      if (end < 0 || disp === undefined || !/^form-data\b/i.test(disp)) throw new TypeError(bad);
      const name = unescapeName(param(disp, 'name'));
      if (name === undefined) throw new TypeError(bad);
      const filename = unescapeName(param(disp, 'filename'));
      const content = copyBytes(u, h + 4, end);
      fd._e.push(name, filename === undefined ? new TextDecoder().decode(content) : fileOf(content, filename, blobType(type || 'text/plain')));
      p = end + next.length;
    }
  }
  /** The body's MIME type as Body.blob() reports it: lower-cased, no blanks around ";". */
  function mimeOf(o: Any): string {
    if (!o._h && !o._hd && o._mkh) o._h = o._mkh(o._r);
    const ct = HB().getJoined(headerList(o), 'content-type');
    if (ct === null || ct.indexOf('/') < 0) return '';
    const parts = ct.toLowerCase().split(';');
    const out: string[] = [];
    for (let i = 0; i < parts.length; i++) {
      const t = parts[i].trim();
      if (t !== '') out.push(t);
    }
    return out.join(';');
  }
  /** Body.formData(): multipart/form-data or application/x-www-form-urlencoded. */
  function readForm(o: Any): Any {
    const mime = mimeOf(o);
    const essence = mime.split(';')[0];
    if (essence === 'multipart/form-data') {
      // Boundaries are case-sensitive: read it from the original header, not the lower-cased mime.
      const raw = HB().getJoined(headerList(o), 'content-type');
      const b = param(raw.slice(raw.indexOf(';')), 'boundary');
      if (b === undefined || b === '') return Promise.reject(new TypeError('Failed to parse body as FormData: no boundary.'));
      return HB()
        .consume(o, 1)
        .then(function (u: Any) {
          return parseMultipart(u, b);
        });
    }
    if (essence === 'application/x-www-form-urlencoded') {
      return HB()
        .consume(o, 0)
        .then(function (text: string) {
          const fd = new (FormData as Any)();
          new (URLSearchParams as Any)(text).forEach(function (v: string, k: string) {
            fd._e.push(k, v);
          });
          return fd;
        });
    }
    return Promise.reject(new TypeError('Content-Type was not one of "multipart/form-data" or "application/x-www-form-urlencoded".'));
  }
  fdCache = { ensureBlob: ensureBlob, ensureFormData: ensureFormData, initBlob: initBlob, blobOf: blobOf, encodeForm: encodeForm, mimeOf: mimeOf, readForm: readForm };
  return fdCache;
}

// ---------------------------------------------------------------- AbortController / AbortSignal

export function AbortSignal(this: Any): Any {
  if (!(this instanceof (AbortSignal as Any))) throw new TypeError('Illegal constructor');
  if (!sigP) ensureSignal();
  this.aborted = false;
  this.reason = undefined;
  this.onabort = null;
  this._ls = [];
}

function ensureSignal(): void {
  sigP = true;
  const p = AbortSignal.prototype as Any;
  p.addEventListener = function (type: Any, fn: Any, opts: Any) {
    if (type !== 'abort' || typeof fn !== 'function') return;
    for (let i = 0; i < this._ls.length; i += 2) if (this._ls[i] === fn) return;
    this._ls.push(fn, opts != null && typeof opts === 'object' && opts.once === true);
  };
  p.removeEventListener = function (type: Any, fn: Any) {
    if (type !== 'abort') return;
    for (let i = 0; i < this._ls.length; i += 2) if (this._ls[i] === fn) this._ls.splice(i, 2);
  };
  p.throwIfAborted = function () {
    if (this.aborted) throw this.reason;
  };
  p._abort = function (reason: Any) {
    if (this.aborted) return;
    this.aborted = true;
    if (reason === undefined) {
      reason = new Error('This operation was aborted');
      reason.name = 'AbortError';
    }
    this.reason = reason;
    const ev = { type: 'abort', target: this };
    if (typeof this.onabort === 'function') this.onabort.call(this, ev);
    const ls = this._ls.slice(0);
    this._ls = [];
    for (let i = 0; i < ls.length; i += 2) {
      if (!ls[i + 1]) this._ls.push(ls[i], false);
      ls[i].call(this, ev);
    }
  };
}

export function AbortController(this: Any): Any {
  if (!(this instanceof (AbortController as Any))) throw new TypeError("Failed to construct 'AbortController'");
  this.signal = new (AbortSignal as Any)();
  if (!(AbortController.prototype as Any).abort) {
    (AbortController.prototype as Any).abort = function (reason: Any) {
      this.signal._abort(reason);
    };
  }
}

// ---------------------------------------------------------------- ReadableStream

/**
 * Enough of the Streams standard for handlers that stream: an underlying
 * source with start/pull/cancel, a default controller, a default reader,
 * high-water mark 1 chunk, tee() for clone().
 * Internal: _state 'readable'|'closed'|'errored', _q queue, _reqs pending reads.
 */
export function ReadableStream(this: Any, source?: Any, strategy?: Any): Any {
  if (!(this instanceof (ReadableStream as Any))) throw new TypeError("Failed to construct 'ReadableStream'");
  if (!rsP) SL().ensureStream();
  if (source != null && source.type !== undefined) throw new RangeError('Only default ReadableStreams are supported');
  const self = this;
  self._src = source == null ? {} : source;
  self._state = 'readable';
  self._q = [];
  self._reqs = [];
  self._err = undefined;
  self._reader = null;
  self._disturbed = false;
  self._started = false;
  self._pulling = false;
  self._pullAgain = false;
  self._closeReq = false;
  self._hwm = strategy != null && strategy.highWaterMark !== undefined ? Number(strategy.highWaterMark) : 1;
  const c: Any = {
    enqueue: function (chunk: Any) {
      if (self._closeReq || self._state !== 'readable') throw new TypeError('Invalid state: ReadableStream is closed');
      if (self._reqs.length) self._reqs.shift().res({ value: chunk, done: false });
      else self._q.push(chunk);
      SL().rsPull(self);
    },
    close: function () {
      if (self._closeReq || self._state !== 'readable') throw new TypeError('Invalid state: ReadableStream is closed');
      self._closeReq = true;
      if (!self._q.length) SL().rsClose(self);
    },
    error: function (e: Any) {
      SL().rsError(self, e);
    },
  };
  Object.defineProperty(c, 'desiredSize', {
    get: function () {
      return self._state === 'errored' ? null : self._state === 'closed' ? 0 : self._hwm - self._q.length;
    },
  });
  self._c = c;
  let started: Any;
  try {
    started = typeof self._src.start === 'function' ? self._src.start.call(self._src, c) : undefined;
  } catch (e) {
    SL().rsError(self, e);
    throw e;
  }
  Promise.resolve(started).then(
    function () {
      self._started = true;
      SL().rsPull(self);
    },
    function (e: Any) {
      SL().rsError(self, e);
    },
  );
}







/** Slow-path helpers, created on first use in a request (nested functions cost
 * nothing until their factory runs; top-level ones are cloned for every request). */
let slCache: Any = null;
function SL(): Any {
  if (slCache !== null) return slCache;
  function rsClose(s: Any): void {
    if (s._state !== 'readable') return;
    s._state = 'closed';
    const reqs = s._reqs;
    s._reqs = [];
    for (let i = 0; i < reqs.length; i++) reqs[i].res({ value: undefined, done: true });
    if (s._reader) s._reader._closedRes();
  }
  function rsError(s: Any, e: Any): void {
    if (s._state !== 'readable') return;
    s._state = 'errored';
    s._err = e;
    s._q = [];
    const reqs = s._reqs;
    s._reqs = [];
    for (let i = 0; i < reqs.length; i++) reqs[i].rej(e);
    if (s._reader) s._reader._closedRej(e);
  }
  function rsPull(s: Any): void {
    if (!s._started || s._state !== 'readable' || s._closeReq) return;
    if (!(s._reqs.length > 0 || s._hwm - s._q.length > 0)) return;
    if (typeof s._src.pull !== 'function') return;
    if (s._pulling) {
      s._pullAgain = true;
      return;
    }
    s._pulling = true;
    let r: Any;
    try {
      r = s._src.pull.call(s._src, s._c);
    } catch (e) {
      rsError(s, e);
      return;
    }
    Promise.resolve(r).then(
      function () {
        s._pulling = false;
        if (s._pullAgain) {
          s._pullAgain = false;
          rsPull(s);
        }
      },
      function (e: Any) {
        rsError(s, e);
      },
    );
  }
  function rsCancel(s: Any, reason: Any): Any {
    s._disturbed = true;
    if (s._state === 'closed') return Promise.resolve(undefined);
    if (s._state === 'errored') return Promise.reject(s._err);
    s._q = [];
    rsClose(s);
    try {
      const out = typeof s._src.cancel === 'function' ? s._src.cancel.call(s._src, reason) : undefined;
      return Promise.resolve(out).then(function () {
        return undefined;
      });
    } catch (e) {
      return Promise.reject(e);
    }
  }
  function ensureStream(): void {
    rsP = true;
    const p = ReadableStream.prototype as Any;
    Object.defineProperty(p, 'locked', {
      configurable: true,
      get: function () {
        return this._reader !== null;
      },
    });
    p.cancel = function (reason: Any) {
      if (this._reader) return Promise.reject(new TypeError('Cannot cancel a stream that already has a reader'));
      return rsCancel(this, reason);
    };
    p.getReader = function (opts: Any) {
      if (opts != null && opts.mode !== undefined) throw new RangeError('Only default readers are supported');
      if (this._reader) throw new TypeError('ReadableStream is locked');
      const s = this;
      let cres: Any;
      let crej: Any;
      const closed = new Promise(function (a, b) {
        cres = a;
        crej = b;
      });
      closed.catch(function () {});
      const reader: Any = {
        closed: closed,
        _closedRes: cres,
        _closedRej: crej,
        read: function () {
          if (reader._s === null) return Promise.reject(new TypeError('Reader is released'));
          s._disturbed = true;
          if (s._q.length) {
            const v = s._q.shift();
            if (s._closeReq && !s._q.length) rsClose(s);
            else rsPull(s);
            return Promise.resolve({ value: v, done: false });
          }
          if (s._state === 'closed') return Promise.resolve({ value: undefined, done: true });
          if (s._state === 'errored') return Promise.reject(s._err);
          return new Promise(function (res, rej) {
            s._reqs.push({ res: res, rej: rej });
            rsPull(s);
          });
        },
        releaseLock: function () {
          if (reader._s === null) return;
          const reqs = s._reqs;
          s._reqs = [];
          const e = new TypeError('Reader was released');
          for (let i = 0; i < reqs.length; i++) reqs[i].rej(e);
          if (s._state === 'readable') crej(e);
          reader._s = null;
          s._reader = null;
        },
        cancel: function (reason: Any) {
          if (reader._s === null) return Promise.reject(new TypeError('Reader is released'));
          return rsCancel(s, reason);
        },
        _s: s,
      };
      if (s._state === 'closed') cres(undefined);
      else if (s._state === 'errored') crej(s._err);
      this._reader = reader;
      return reader;
    };
    p.tee = function () {
      const reader = this.getReader();
      const branches: Any[] = [];
      let pending = 2;
      let reading = false;
      function mk(idx: number): Any {
        return new (ReadableStream as Any)({
          start: function (c: Any) {
            branches[idx] = c;
          },
          pull: function () {
            if (reading) return undefined;
            reading = true;
            return reader.read().then(
              function (r: Any) {
                reading = false;
                for (let i = 0; i < 2; i++) {
                  const b = branches[i];
                  if (b === null) continue;
                  if (r.done) b.close();
                  else b.enqueue(r.value);
                }
              },
              function (e: Any) {
                for (let i = 0; i < 2; i++) if (branches[i]) branches[i].error(e);
              },
            );
          },
          cancel: function (reason: Any) {
            branches[idx] = null;
            if (--pending === 0) return reader.cancel(reason);
            return undefined;
          },
        });
      }
      return [mk(0), mk(1)];
    };
  }

  slCache = { rsClose: rsClose, rsError: rsError, rsPull: rsPull, rsCancel: rsCancel, ensureStream: ensureStream };
  return slCache;
}
// ---------------------------------------------------------------- URL












export function URL(this: Any, url: Any, base?: Any): Any {
  if (!(this instanceof (URL as Any))) throw new TypeError("Failed to construct 'URL': Please use the 'new' operator");
  if (!urlP) UL().ensureURL();
  let b: Any = null;
  if (base !== undefined) b = base instanceof (URL as Any) ? base._u : UL().parseURL(String(base), null);
  this._u = UL().parseURL(String(url), b);
  this._sp = null;
}


// ---------------------------------------------------------------- URLSearchParams





export function URLSearchParams(this: Any, init?: Any): Any {
  if (!(this instanceof (URLSearchParams as Any))) throw new TypeError("Failed to construct 'URLSearchParams'");
  if (!uspP) UL().ensureUSP();
  this._url = null;
  let l: string[] = [];
  let i: number;
  if (init == null) {
    /* empty */
  } else if (init instanceof (URLSearchParams as Any)) l = init._l.slice(0);
  else if (typeof init === 'object' || typeof init === 'function') {
    let pairs: Any = null;
    if (Array.isArray(init)) pairs = init;
    else if (typeof init[Symbol.iterator] === 'function') {
      pairs = [];
      const it = init[Symbol.iterator]();
      for (let st = it.next(); !st.done; st = it.next()) pairs.push(st.value);
    }
    if (pairs) {
      for (i = 0; i < pairs.length; i++) {
        const p = pairs[i];
        if (p == null || typeof p !== 'object' || p.length !== 2) throw new TypeError('Each query pair must be an iterable [name, value] tuple');
        l.push(UL().usv(p[0]), UL().usv(p[1]));
      }
    } else {
      const keys = Object.keys(init);
      for (i = 0; i < keys.length; i++) l.push(UL().usv(keys[i]), UL().usv(init[keys[i]]));
    }
  } else {
    let s = UL().usv(init);
    if (s[0] === '?') s = s.slice(1);
    l = UL().parsePairs(s);
  }
  this._l = l;
}


/** Slow-path helpers, created on first use in a request (nested functions cost
 * nothing until their factory runs; top-level ones are cloned for every request). */
let ulCache: Any = null;
function UL(): Any {
  if (ulCache !== null) return ulCache;
  /** Default port of a special scheme, 0 for file:, undefined for non-special schemes. */
  function specialPort(protocol: string): number | undefined {
    switch (protocol) {
      case 'http:':
      case 'ws:':
        return 80;
      case 'https:':
      case 'wss:':
        return 443;
      case 'ftp:':
        return 21;
      case 'file:':
        return 0;
    }
    return undefined;
  }
  /** Percent-encodes what `keep` does not match, as UTF-8. */
  function pctEncode(s: string, set: string): string {
    if (s === '') return s;
    // Fast path (no regex): encodeURI leaves only ASCII alphanumerics and -_.!~*'();/?:@&=+$,#
    // alone, and none of those need encoding in these sets except ' (special query)
    // and the delimiters of the userinfo set.
    if (set !== 'user') {
      let plain = false;
      try {
        plain = encodeURI(s) === s;
      } catch (_e) {
        /* lone surrogate */
      }
      if (plain && (set !== 'squery' || s.indexOf("'") < 0)) return s;
    }
    const bad = encSet(set);
    if (!bad.test(s)) return s;
    let out = '';
    for (let i = 0; i < s.length; i++) {
      const ch = s[i];
      const code = s.charCodeAt(i);
      if (code >= 0xd800 && code <= 0xdbff && i + 1 < s.length) {
        out += encodeURIComponent(s.slice(i, i + 2));
        i++;
      } else if (code >= 0xd800 && code <= 0xdfff) out += '%EF%BF%BD';
      else if (bad.test(ch)) out += code < 0x80 ? '%' + (code < 16 ? '0' : '') + code.toString(16).toUpperCase() : encodeURIComponent(ch);
      else out += ch;
    }
    return out;
  }
  // WHATWG percent-encode sets, as "must encode" classes (plus non-ASCII), built
  // only when a slow-path URL needs them.
  function encSet(name: string): RegExp {
    switch (name) {
      case 'path':
        return /[\0-\x20"#<>?`{}\x7f-\uffff]/;
      case 'query':
        return /[\0-\x20"#<>\x7f-\uffff]/;
      case 'squery':
        return /[\0-\x20"#<>'\x7f-\uffff]/;
      case 'frag':
        return /[\0-\x20"<>`\x7f-\uffff]/;
      case 'user':
        return /[\0-\x20"#<>?`{}/:;=@[\\\]^|\x7f-\uffff]/;
    }
    return /[\0-\x1f\x7f-\uffff]/;
  }
  function normPath(segs: string[], special: boolean): string[] {
    const out: string[] = [];
    for (let i = 0; i < segs.length; i++) {
      const s = segs[i];
      const l = s.toLowerCase();
      const last = i === segs.length - 1;
      if (l === '..' || l === '.%2e' || l === '%2e.' || l === '%2e%2e') {
        if (out.length) out.pop();
        if (last) out.push('');
      } else if (l === '.' || l === '%2e') {
        if (last) out.push('');
      } else out.push(pctEncode(s, 'path'));
    }
    if (special && !out.length) out.push('');
    return out;
  }
  function parseHost(h: string, special: boolean): string {
    if (h === '') {
      if (special) throw new TypeError('Invalid URL');
      return '';
    }
    if (h[0] === '[') {
      if (h[h.length - 1] !== ']' || !/^\[[0-9a-fA-F:.]+\]$/.test(h)) throw new TypeError('Invalid URL');
      return h.toLowerCase();
    }
    if (!special) return pctEncode(h, 'c0');
    let d: string;
    try {
      d = decodeURIComponent(h);
    } catch (_e) {
      throw new TypeError('Invalid URL');
    }
    d = d.toLowerCase();
    if (/[\0\t\n\r #/:<>?@[\\\]^|%]/.test(d) || /[^\x00-\x7f]/.test(d)) throw new TypeError('Invalid URL');
    // IPv4 in the common dotted-decimal form; anything else numeric-looking is left as a name.
    return d;
  }
  /**
   * Parses an absolute URL, or `input` against `base`, into the record
   * { protocol, username, password, hostname, port, path (string), query (null|string), fragment }.
   */
  function parseURL(input: string, base: Any): Any {
    const fast = fastURL(input);
    if (fast !== null) return fast;
    let s = input.replace(/^[\0-\x20]+|[\0-\x20]+$/g, '').replace(/[\t\n\r]/g, '');
    const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*):/.exec(s);
    let rec: Any;
    if (m) {
      const protocol = m[1].toLowerCase() + ':';
      const special = specialPort(protocol) !== undefined;
      s = s.slice(m[0].length);
      if (special) s = s.replace(/\\/g, '/');
      if (special && base && base.protocol === protocol && s.slice(0, 2) !== '//') {
        return resolveRelative(s, base);
      }
      rec = { protocol: protocol, username: '', password: '', hostname: '', port: '', path: '', query: null, fragment: null, opaque: false };
      if (protocol === 'file:') {
        if (s.slice(0, 2) !== '//') s = '//' + s;
      } else if (special) s = s.replace(/^\/*/, '//');
      if (s.slice(0, 2) === '//') {
        s = s.slice(2);
        let end = s.search(/[/?#]/);
        if (end < 0) end = s.length;
        let auth = s.slice(0, end);
        s = s.slice(end);
        const at = auth.lastIndexOf('@');
        if (at >= 0) {
          const cred = auth.slice(0, at);
          auth = auth.slice(at + 1);
          const colon = cred.indexOf(':');
          rec.username = pctEncode(colon >= 0 ? cred.slice(0, colon) : cred, 'user');
          rec.password = colon >= 0 ? pctEncode(cred.slice(colon + 1), 'user') : '';
        }
        let portStr: string | null = null;
        if (auth[0] === '[') {
          const close = auth.indexOf(']');
          if (close < 0) throw new TypeError('Invalid URL');
          const rest = auth.slice(close + 1);
          if (rest !== '') {
            if (rest[0] !== ':') throw new TypeError('Invalid URL');
            portStr = rest.slice(1);
          }
          auth = auth.slice(0, close + 1);
        } else {
          const c = auth.indexOf(':');
          if (c >= 0) {
            portStr = auth.slice(c + 1);
            auth = auth.slice(0, c);
          }
        }
        if (portStr !== null && portStr !== '') {
          if (!/^[0-9]+$/.test(portStr)) throw new TypeError('Invalid URL');
          const port = parseInt(portStr, 10);
          if (port > 65535) throw new TypeError('Invalid URL');
          rec.port = specialPort(protocol) === port ? '' : String(port);
        }
        if (protocol === 'file:' && auth.toLowerCase() === 'localhost') auth = '';
        if (protocol !== 'file:' && special && auth === '') throw new TypeError('Invalid URL');
        rec.hostname = parseHost(auth, special && protocol !== 'file:');
      } else if (!special) {
        if (s[0] !== '/') rec.opaque = true;
      }
      splitRest(rec, s, special);
      return rec;
    }
    if (!base) throw new TypeError('Invalid URL');
    if (specialPort(base.protocol) !== undefined) s = s.replace(/\\/g, '/');
    if (s.slice(0, 2) === '//') return parseURL(base.protocol + s, null);
    return resolveRelative(s, base);
  }
  /**
   * The common case without regexes: http(s)://host[:port]/path[?query][#fragment]
   * where nothing needs percent-encoding, lower-casing or dot-segment removal.
   * Anything else (returns null) takes the full parser.
   */
  function fastURL(s: string): Any {
    let i: number;
    let protocol: string;
    if (s.slice(0, 7) === 'http://') {
      protocol = 'http:';
      i = 7;
    } else if (s.slice(0, 8) === 'https://') {
      protocol = 'https:';
      i = 8;
    } else return null;
    try {
      if (encodeURI(s) !== s) return null; // %, spaces, controls, non-ASCII, \ [ ] ^ | { } < > " `
    } catch (_e) {
      return null;
    }
    let end = s.length;
    const a = s.indexOf('/', i);
    const b = s.indexOf('?', i);
    const c = s.indexOf('#', i);
    if (a >= 0) end = a;
    if (b >= 0 && b < end) end = b;
    if (c >= 0 && c < end) end = c;
    let host = s.slice(i, end);
    if (host === '' || host.indexOf('@') >= 0) return null;
    let port = '';
    const colon = host.indexOf(':');
    if (colon >= 0) {
      port = host.slice(colon + 1);
      host = host.slice(0, colon);
      if (port !== '') {
        const n = parseInt(port, 10);
        if (String(n) !== port || n > 65535) return null;
        if (n === (protocol === 'http:' ? 80 : 443)) port = '';
      }
      if (host === '') return null;
    }
    if (host.toLowerCase() !== host) return null;
    let rest = s.slice(end);
    let fragment: string | null = null;
    let query: string | null = null;
    const h = rest.indexOf('#');
    if (h >= 0) {
      fragment = rest.slice(h + 1);
      rest = rest.slice(0, h);
    }
    const q = rest.indexOf('?');
    if (q >= 0) {
      query = rest.slice(q + 1);
      rest = rest.slice(0, q);
      if (query.indexOf("'") >= 0) return null;
    }
    if (rest === '') rest = '/';
    else if (rest.indexOf('/.') >= 0) return null;
    return { protocol: protocol, username: '', password: '', hostname: host, port: port, path: rest, query: query, fragment: fragment, opaque: false };
  }
  function resolveRelative(s: string, base: Any): Any {
    if (base.opaque && s[0] !== '#') throw new TypeError('Invalid URL');
    const rec: Any = {
      protocol: base.protocol,
      username: base.username,
      password: base.password,
      hostname: base.hostname,
      port: base.port,
      path: base.path,
      query: base.query,
      fragment: null,
      opaque: base.opaque,
    };
    const special = specialPort(rec.protocol) !== undefined;
    if (s === '') return rec;
    if (s[0] === '#') {
      rec.fragment = pctEncode(s.slice(1), 'frag');
      return rec;
    }
    if (s[0] === '?') {
      splitRest(rec, s, special, true);
      return rec;
    }
    if (s[0] !== '/') {
      const dir = base.path.slice(0, base.path.lastIndexOf('/') + 1);
      s = dir + s;
    }
    splitRest(rec, s, special);
    return rec;
  }
  function splitRest(rec: Any, s: string, special: boolean, keepPath?: boolean): void {
    const hash = s.indexOf('#');
    if (hash >= 0) {
      rec.fragment = pctEncode(s.slice(hash + 1), 'frag');
      s = s.slice(0, hash);
    } else rec.fragment = null;
    const q = s.indexOf('?');
    if (q >= 0) {
      rec.query = pctEncode(s.slice(q + 1), special ? 'squery' : 'query');
      s = s.slice(0, q);
    } else if (!keepPath) rec.query = null;
    if (keepPath) return;
    if (rec.opaque) rec.path = pctEncode(s, 'c0');
    else if (s === '' && !special) rec.path = '';
    else rec.path = normPath(s.split('/'), special).join('/').replace(/^(?!\/)/, '/');
  }
  function hostOf(rec: Any): string {
    return rec.hostname + (rec.port !== '' ? ':' + rec.port : '');
  }
  function hrefOf(rec: Any): string {
    let out = rec.protocol;
    if (rec.hostname !== '' || specialPort(rec.protocol) !== undefined) {
      out += '//';
      if (rec.username !== '' || rec.password !== '') out += rec.username + (rec.password !== '' ? ':' + rec.password : '') + '@';
      out += hostOf(rec);
    }
    out += rec.path;
    if (rec.query !== null) out += '?' + rec.query;
    if (rec.fragment !== null) out += '#' + rec.fragment;
    return out;
  }
  function ensureURL(): void {
    urlP = true;
    const p = URL.prototype as Any;
    function acc(name: string, get: Any, set?: Any): void {
      Object.defineProperty(p, name, { configurable: true, enumerable: true, get: get, set: set });
    }
    acc(
      'href',
      function (this: Any) {
        return hrefOf(this._u);
      },
      function (this: Any, v: Any) {
        this._u = parseURL(String(v), null);
        if (this._sp) this._sp._l = parsePairs(this._u.query || '');
      },
    );
    acc('origin', function (this: Any) {
      const u = this._u;
      return specialPort(u.protocol) !== undefined && u.protocol !== 'file:' ? u.protocol + '//' + hostOf(u) : 'null';
    });
    acc(
      'protocol',
      function (this: Any) {
        return this._u.protocol;
      },
      function (this: Any, v: Any) {
        const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*)/.exec(String(v));
        if (!m) return;
        const np = m[1].toLowerCase() + ':';
        if ((specialPort(np) !== undefined) !== (specialPort(this._u.protocol) !== undefined)) return;
        this._u.protocol = np;
        if (specialPort(np) === Number(this._u.port)) this._u.port = '';
      },
    );
    acc(
      'username',
      function (this: Any) {
        return this._u.username;
      },
      function (this: Any, v: Any) {
        if (this._u.hostname !== '') this._u.username = pctEncode(String(v), 'user');
      },
    );
    acc(
      'password',
      function (this: Any) {
        return this._u.password;
      },
      function (this: Any, v: Any) {
        if (this._u.hostname !== '') this._u.password = pctEncode(String(v), 'user');
      },
    );
    acc(
      'host',
      function (this: Any) {
        return hostOf(this._u);
      },
      function (this: Any, v: Any) {
        if (this._u.opaque) return;
        try {
          const r = parseURL(this._u.protocol + '//' + String(v), null);
          this._u.hostname = r.hostname;
          this._u.port = r.port;
        } catch (_e) {
          /* invalid host: ignored, as the standard says */
        }
      },
    );
    acc(
      'hostname',
      function (this: Any) {
        return this._u.hostname;
      },
      function (this: Any, v: Any) {
        if (this._u.opaque) return;
        try {
          this._u.hostname = parseURL(this._u.protocol + '//' + String(v).replace(/:.*/, ''), null).hostname;
        } catch (_e) {
          /* ignored */
        }
      },
    );
    acc(
      'port',
      function (this: Any) {
        return this._u.port;
      },
      function (this: Any, v: Any) {
        const s = String(v);
        if (s === '') {
          this._u.port = '';
          return;
        }
        const m = /^[0-9]+/.exec(s);
        if (!m || Number(m[0]) > 65535) return;
        const n = Number(m[0]);
        this._u.port = specialPort(this._u.protocol) === n ? '' : String(n);
      },
    );
    acc(
      'pathname',
      function (this: Any) {
        return this._u.path;
      },
      function (this: Any, v: Any) {
        if (this._u.opaque) return;
        const special = specialPort(this._u.protocol) !== undefined;
        let s = String(v);
        if (special) s = s.replace(/\\/g, '/');
        if (s[0] !== '/') s = '/' + s;
        this._u.path = normPath(s.split('/'), special).join('/').replace(/^(?!\/)/, '/');
      },
    );
    acc(
      'search',
      function (this: Any) {
        const q = this._u.query;
        return q === null || q === '' ? '' : '?' + q;
      },
      function (this: Any, v: Any) {
        let s = String(v);
        if (s[0] === '?') s = s.slice(1);
        this._u.query = s === '' ? null : pctEncode(s, specialPort(this._u.protocol) !== undefined ? 'squery' : 'query');
        if (this._sp) this._sp._l = parsePairs(s);
      },
    );
    acc('searchParams', function (this: Any) {
      if (!this._sp) {
        const sp = new (URLSearchParams as Any)(this._u.query || '');
        sp._url = this;
        this._sp = sp;
      }
      return this._sp;
    });
    acc(
      'hash',
      function (this: Any) {
        const f = this._u.fragment;
        return f === null || f === '' ? '' : '#' + f;
      },
      function (this: Any, v: Any) {
        let s = String(v);
        if (s[0] === '#') s = s.slice(1);
        this._u.fragment = s === '' ? null : pctEncode(s, 'frag');
      },
    );
    p.toString = function () {
      return hrefOf(this._u);
    };
    p.toJSON = p.toString;
  }
  /** Decodes application/x-www-form-urlencoded bytes leniently (bad escapes stay as they are). */
  function formDecode(s: string): string {
    if (s.indexOf('+') >= 0) s = s.replace(/\+/g, ' ');
    if (s.indexOf('%') < 0) return s;
    try {
      return decodeURIComponent(s);
    } catch (_e) {
      // Fall back to byte-wise decoding: UTF-8 of the text, escapes replaced by their bytes.
      const bytes: number[] = [];
      const enc = new TextEncoder().encode(s);
      for (let i = 0; i < enc.length; i++) {
        const c = enc[i];
        if (c === 0x25 && i + 2 < enc.length + 0 && /^[0-9a-fA-F]{2}$/.test(String.fromCharCode(enc[i + 1], enc[i + 2]))) {
          bytes.push(parseInt(String.fromCharCode(enc[i + 1], enc[i + 2]), 16));
          i += 2;
        } else bytes.push(c);
      }
      return new TextDecoder().decode(new Uint8Array(bytes));
    }
  }
  /** application/x-www-form-urlencoded byte serializer: keeps *-._ and alphanumerics, space -> +. */
  function formEncode(s: string): string {
    let e = encodeURIComponent(s);
    if (e.indexOf('%20') >= 0) e = e.split('%20').join('+');
    if (e.indexOf('!') >= 0 || e.indexOf("'") >= 0 || e.indexOf('(') >= 0 || e.indexOf(')') >= 0 || e.indexOf('~') >= 0) {
      e = e.replace(/[!'()~]/g, function (c: string) {
        return '%' + c.charCodeAt(0).toString(16).toUpperCase();
      });
    }
    return e;
  }
  function parsePairs(s: string): string[] {
    const l: string[] = [];
    if (s === '') return l;
    const parts = s.split('&');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === '') continue;
      const eq = part.indexOf('=');
      if (eq >= 0) l.push(formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1)));
      else l.push(formDecode(part), '');
    }
    return l;
  }
  function usv(s: Any): string {
    s = String(s);
    // Lone surrogates become U+FFFD, as USVString conversion does.
    return /[\ud800-\udfff]/.test(s) ? s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(^|[^\ud800-\udbff])[\udc00-\udfff]/g, function (m: string) {
      return m.length === 2 ? m[0] + '\ufffd' : '\ufffd';
    }) : s;
  }
  function ensureUSP(): void {
    uspP = true;
    const p = URLSearchParams.prototype as Any;
    function update(sp: Any): void {
      if (sp._url) {
        const s = sp.toString();
        sp._url._u.query = s === '' ? null : s;
      }
    }
    function pairs(l: string[]): Any[] {
      const out: Any[] = [];
      for (let i = 0; i < l.length; i += 2) out.push([l[i], l[i + 1]]);
      return out;
    }
    p.append = function (n: Any, v: Any) {
      this._l.push(usv(n), usv(v));
      update(this);
    };
    p.delete = function (n: Any, v: Any) {
      n = usv(n);
      const l = this._l;
      const withV = v !== undefined;
      if (withV) v = usv(v);
      for (let i = l.length - 2; i >= 0; i -= 2) if (l[i] === n && (!withV || l[i + 1] === v)) l.splice(i, 2);
      update(this);
    };
    p.get = function (n: Any) {
      n = usv(n);
      const l = this._l;
      for (let i = 0; i < l.length; i += 2) if (l[i] === n) return l[i + 1];
      return null;
    };
    p.getAll = function (n: Any) {
      n = usv(n);
      const l = this._l;
      const out: string[] = [];
      for (let i = 0; i < l.length; i += 2) if (l[i] === n) out.push(l[i + 1]);
      return out;
    };
    p.has = function (n: Any, v: Any) {
      n = usv(n);
      const l = this._l;
      const withV = v !== undefined;
      if (withV) v = usv(v);
      for (let i = 0; i < l.length; i += 2) if (l[i] === n && (!withV || l[i + 1] === v)) return true;
      return false;
    };
    p.set = function (n: Any, v: Any) {
      n = usv(n);
      v = usv(v);
      const l = this._l;
      let found = false;
      for (let i = 0; i < l.length; i += 2) {
        if (l[i] === n) {
          if (!found) {
            l[i + 1] = v;
            found = true;
          } else {
            l.splice(i, 2);
            i -= 2;
          }
        }
      }
      if (!found) l.push(n, v);
      update(this);
    };
    p.sort = function () {
      const ps = pairs(this._l);
      // Stable sort by UTF-16 code units (Array.prototype.sort stability is not guaranteed in njs).
      for (let i = 0; i < ps.length; i++) ps[i].push(i);
      ps.sort(function (a: Any, b: Any) {
        return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[2] - b[2];
      });
      const l: string[] = [];
      for (let j = 0; j < ps.length; j++) l.push(ps[j][0], ps[j][1]);
      this._l = l;
      update(this);
    };
    p.toString = function () {
      const l = this._l;
      let out = '';
      for (let i = 0; i < l.length; i += 2) out += (i ? '&' : '') + formEncode(l[i]) + '=' + formEncode(l[i + 1]);
      return out;
    };
    p.forEach = function (cb: Any, thisArg: Any) {
      const l = this._l;
      for (let i = 0; i < l.length; i += 2) cb.call(thisArg, l[i + 1], l[i], this);
    };
    p.entries = function () {
      return arrayIter(pairs(this._l));
    };
    p.keys = function () {
      const out: string[] = [];
      for (let i = 0; i < this._l.length; i += 2) out.push(this._l[i]);
      return arrayIter(out);
    };
    p.values = function () {
      const out: string[] = [];
      for (let i = 0; i < this._l.length; i += 2) out.push(this._l[i + 1]);
      return arrayIter(out);
    };
    p[Symbol.iterator] = p.entries;
    Object.defineProperty(p, 'size', {
      configurable: true,
      get: function () {
        return this._l.length / 2;
      },
    });
  }

  ulCache = { specialPort: specialPort, pctEncode: pctEncode, encSet: encSet, normPath: normPath, parseHost: parseHost, parseURL: parseURL, fastURL: fastURL, resolveRelative: resolveRelative, splitRest: splitRest, hostOf: hostOf, hrefOf: hrefOf, ensureURL: ensureURL, formDecode: formDecode, formEncode: formEncode, parsePairs: parsePairs, usv: usv, ensureUSP: ensureUSP };
  return ulCache;
}
