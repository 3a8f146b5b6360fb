/**
 * The body mixin Request and Response share: what a body is kept as, reading
 * it once (text/json/bytes/arrayBuffer/blob/formData), `.body` as a stream,
 * and copying it for clone().
 *   _body: null | string | Uint8Array | ReadableStream (the source, until `.body` is read)
 *   _used: consumed by text()/json()/...
 */
import type { BodyHolder, BodySource, HeaderList, RuntimeHeaders, RuntimeStream } from '../types.js';
import { shared } from './shared.js';
import { headerInternals } from './headers.js';
import { ReadableStream } from './stream.js';
import { URLSearchParams } from './url.js';
import { Blob, FormData, formInternals } from './formdata.js';

const TEXT_TYPE = 'text/plain;charset=UTF-8';

// One prototype for both, built once per request (a literal: in njs 0.7.9 a literal costs a
// fraction of the equivalent defineProperty calls).
let proto: object | null = null;

/** The prototype Request.prototype and Response.prototype inherit from: the body mixin and `headers`. */
export function bodyPrototype(): object {
  if (proto === null) {
    proto = {
      get body() {
        return bodyInternals().stream(this as BodyHolder);
      },
      get bodyUsed() {
        return bodyInternals().isUsed(this as BodyHolder);
      },
      // The same for both: the header list becomes a Headers object on first use.
      get headers() {
        return bodyInternals().headersOf(this as BodyHolder);
      },
      text: function (this: BodyHolder) {
        return bodyInternals().consume(this, false);
      },
      json: function (this: BodyHolder) {
        return bodyInternals().consume(this, false).then(JSON.parse);
      },
      bytes: function (this: BodyHolder) {
        return bodyInternals().consume(this, true);
      },
      arrayBuffer: function (this: BodyHolder) {
        return bodyInternals().consume(this, true).then(bodyInternals().toArrayBuffer);
      },
      blob: function (this: BodyHolder) {
        return formInternals().readBlob(this);
      },
      formData: function (this: BodyHolder) {
        return formInternals().readForm(this);
      },
    };
  }
  return proto;
}

type Stream = RuntimeStream & { _state: string };

export interface BodyInternals {
  /** Stores `body` as o._body; returns the default content type of its kind, or null. */
  store(o: BodyHolder, body: unknown): string | null;
  /** `.body`: the body as a stream (null for none). */
  stream(o: BodyHolder): RuntimeStream | null;
  isUsed(o: BodyHolder): boolean;
  /** Reads the whole body once: as text, or as bytes. */
  consume(o: BodyHolder, asBytes: false): Promise<string>;
  consume(o: BodyHolder, asBytes: true): Promise<Uint8Array>;
  toArrayBuffer(u: Uint8Array): ArrayBuffer;
  /** A stream that yields `bytes` (if any) as its one chunk, then closes. */
  streamOf(bytes: Uint8Array): RuntimeStream;
  /** Copies a body for clone(): tees a stream, shares an immutable source. */
  clone(from: BodyHolder, to: BodyHolder): void;
  /** The header list of a Request or Response without building its Headers object. */
  listOf(o: BodyHolder): HeaderList;
  /** `.headers`: turns the header list into a Headers object on first use. */
  headersOf(o: BodyHolder): RuntimeHeaders;
}

let internals: BodyInternals | null = null;

export function bodyInternals(): BodyInternals {
  if (internals !== null) return internals;
  const isStream = function (b: unknown): b is Stream {
    return b instanceof (ReadableStream as unknown as new () => Stream);
  };
  function store(o: BodyHolder, body: unknown): string | null {
    if (body == null) {
      o._body = null;
      return null;
    }
    if (typeof body === 'string') {
      o._body = body;
      return TEXT_TYPE;
    }
    if (body instanceof Uint8Array) {
      // Snapshot: later writes into the handler's array change nothing (as undici and core's Response).
      o._body = shared().copyBytes(body, 0, body.length);
      return null;
    }
    if (body instanceof ArrayBuffer) {
      o._body = new Uint8Array(body.slice(0));
      return null;
    }
    if (shared().isView(body)) {
      o._body = shared().copyBytes(body, 0, body.byteLength);
      return null;
    }
    if (isStream(body)) {
      if (body.locked || body._disturbed) throw new TypeError('Response body object should not be disturbed or locked');
      o._body = body;
      return null;
    }
    if (body instanceof (URLSearchParams as unknown as new () => object)) {
      o._body = String(body);
      return 'application/x-www-form-urlencoded;charset=UTF-8';
    }
    if (body instanceof (FormData as unknown as new () => object)) {
      const m = formInternals().encode(body);
      o._body = m.bytes;
      return m.type;
    }
    if (body instanceof (Blob as unknown as new () => { _bytes: Uint8Array; type: string })) {
      o._body = shared().copyBytes(body._bytes, 0, body._bytes.length);
      return body.type === '' ? null : body.type;
    }
    o._body = String(body);
    return TEXT_TYPE;
  }
  function stream(o: BodyHolder): RuntimeStream | null {
    const b = o._body;
    if (b == null) return null;
    if (isStream(b)) return b;
    const s = streamOf(typeof b === 'string' ? new TextEncoder().encode(b) : b) as Stream;
    if (o._used) {
      s._disturbed = true;
      s._state = 'closed';
    }
    o._body = s;
    return s;
  }
  function isUsed(o: BodyHolder): boolean {
    const b = o._body;
    return o._used === true || (isStream(b) && b._disturbed === true);
  }
  function consume(o: BodyHolder, asBytes: false): Promise<string>;
  function consume(o: BodyHolder, asBytes: true): Promise<Uint8Array>;
  function consume(o: BodyHolder, asBytes: boolean): Promise<string | Uint8Array> {
    if (isUsed(o)) return Promise.reject(new TypeError('Body is unusable: Body has already been read'));
    const b: BodySource = o._body;
    if (isStream(b) && b.locked) return Promise.reject(new TypeError('Body is unusable: Body is locked'));
    o._used = true;
    if (b == null) return Promise.resolve(asBytes ? new Uint8Array(0) : '');
    if (typeof b === 'string') return Promise.resolve(asBytes ? new TextEncoder().encode(b) : b);
    if (b instanceof Uint8Array) return Promise.resolve(asBytes ? shared().copyBytes(b, 0, b.length) : new TextDecoder().decode(b));
    const reader = b.getReader();
    const chunks: Uint8Array[] = [];
    function step(): Promise<string | Uint8Array> {
      return reader.read().then(function (res): string | Uint8Array | Promise<string | Uint8Array> {
        if (res.done) {
          const all = shared().concat(chunks);
          return asBytes ? all : new TextDecoder().decode(all);
        }
        const c = shared().chunkBytes(res.value);
        if (c === null) throw new TypeError('Received non-Uint8Array chunk');
        chunks.push(c);
        return step();
      });
    }
    return step();
  }
  function toArrayBuffer(u: Uint8Array): ArrayBuffer {
    return u.byteOffset === 0 && u.byteLength === u.buffer.byteLength ? (u.buffer as ArrayBuffer) : (shared().copyBytes(u, 0, u.byteLength).buffer as ArrayBuffer);
  }
  function streamOf(bytes: Uint8Array): RuntimeStream {
    return new (ReadableStream as unknown as new (src: object) => RuntimeStream)({
      start: function (c: { enqueue(x: Uint8Array): void; close(): void }) {
        if (bytes.length) c.enqueue(bytes);
        c.close();
      },
    });
  }
  function clone(from: BodyHolder, to: BodyHolder): void {
    if (isUsed(from)) throw new TypeError('Response.clone: Body has already been consumed.');
    const b = from._body;
    if (isStream(b)) {
      if (b.locked) throw new TypeError('Body is locked');
      const t = b.tee();
      from._body = t[0];
      to._body = t[1];
    } else to._body = b;
    to._used = false;
  }
  function listOf(o: BodyHolder): HeaderList {
    if (o._headers) return o._headers._list;
    // A bridge-made request builds its list on first use.
    if (!o._list) o._list = o._makeHeaders!(o._src!);
    return o._list;
  }
  function headersOf(o: BodyHolder): RuntimeHeaders {
    if (!o._headers) {
      o._headers = headerInternals().over(listOf(o));
      o._list = undefined;
    }
    return o._headers;
  }
  internals = {
    store: store,
    stream: stream,
    isUsed: isUsed,
    consume: consume,
    toArrayBuffer: toArrayBuffer,
    streamOf: streamOf,
    clone: clone,
    listOf: listOf,
    headersOf: headersOf,
  };
  return internals;
}
