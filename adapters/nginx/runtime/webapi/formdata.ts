/**
 * Blob, File and FormData; FormData as a body is written as multipart/form-data
 * the way undici writes it, and `formData()` reads it back (and
 * application/x-www-form-urlencoded).
 *   Blob: bytes in `_bytes` (a Uint8Array nothing else holds), `size` and `type` as data fields.
 *   FormData: entries in `_entries` as a flat [name, value, ...] list, in insertion order.
 */
import type { BodyHolder } from '../types.js';
import { shared } from './shared.js';
import { headerInternals } from './headers.js';
import { bodyInternals } from './body.js';
import { URLSearchParams } from './url.js';

interface BlobObject {
  _bytes: Uint8Array;
  size: number;
  type: string;
  name?: string;
  lastModified?: number;
}

interface FormObject {
  _entries: (string | BlobObject)[];
}

type BlobCtor = new (parts?: unknown, options?: unknown) => BlobObject;
type FileCtor = new (parts: unknown, name: unknown, options?: unknown) => BlobObject;
type FormCtor = new () => FormObject;

let blobInstalled = false;
let formInstalled = false;

export interface FormInternals {
  installBlob(): void;
  installFormData(): void;
  initBlob(o: BlobObject, parts: unknown, options: unknown): void;
  /** FormData -> its multipart/form-data bytes and content type. */
  encode(fd: unknown): { bytes: Uint8Array; type: string };
  /** Body.formData(). */
  readForm(o: BodyHolder): Promise<unknown>;
  /** Body.blob(): a Blob of the body, typed by its Content-Type. */
  readBlob(o: BodyHolder): Promise<unknown>;
}

/** Blob: bytes in `_u` (a Uint8Array nothing else holds), `size` and `type` as data fields. */
export function Blob(this: BlobObject, parts?: unknown, options?: unknown): void {
  if (!(this instanceof (Blob as unknown as BlobCtor))) throw new TypeError("Failed to construct 'Blob': Please use the 'new' operator");
  formInternals().initBlob(this, parts, options);
}

export function File(this: BlobObject, parts: unknown, name: unknown, options?: { lastModified?: unknown }): void {
  if (!(this instanceof (File as unknown as FileCtor))) throw new TypeError("Failed to construct 'File': Please use the 'new' operator");
  if (arguments.length < 2) throw new TypeError("Failed to construct 'File': 2 arguments required");
  formInternals().initBlob(this, parts, options);
  this.name = String(name);
  this.lastModified = options != null && options.lastModified !== undefined ? Number(options.lastModified) : Date.now();
}

/** FormData: entries in `_e` as a flat [name, value, ...] list, in insertion order. */
export function FormData(this: FormObject, form?: unknown): void {
  if (!(this instanceof (FormData as unknown as FormCtor))) throw new TypeError("Failed to construct 'FormData': Please use the 'new' operator");
  if (form !== undefined) throw new TypeError("Failed to construct 'FormData': parameter 1 is not of type 'HTMLFormElement'");
  if (!formInstalled) formInternals().installFormData();
  this._entries = [];
}

/** Blob/File/FormData helpers and multipart encoding, built on first use in a request. */
let internals: FormInternals | null = null;

/** Blob/File/FormData prototypes and multipart/form-data, built on first use in a request. */
export function formInternals(): FormInternals {
  if (internals !== null) return internals;
  const CRLF = '\r\n';
  function enc(s: string): Uint8Array {
    return new TextEncoder().encode(s);
  }
  const concat = shared().concat;
  const copyBytes = shared().copyBytes;
  const isView = shared().isView;
  /** A Blob type: lower-cased, '' unless every character is printable ASCII. */
  function blobType(t: unknown): string {
    if (t === undefined) return '';
    const v = String(t);
    for (let i = 0; i < v.length; i++) {
      const c = v.charCodeAt(i);
      if (c < 0x20 || c > 0x7e) return '';
    }
    return v.toLowerCase();
  }
  function installBlob(): void {
    blobInstalled = true;
    type B = BlobObject & Record<string, unknown>;
    const p = Blob.prototype as unknown as B;
    p.text = function (this: B) {
      return Promise.resolve(new TextDecoder().decode(this._bytes));
    };
    p.bytes = function (this: B) {
      return Promise.resolve(copyBytes(this._bytes, 0, this._bytes.length));
    };
    p.arrayBuffer = function (this: B) {
      return Promise.resolve(copyBytes(this._bytes, 0, this._bytes.length).buffer);
    };
    p.slice = function (this: B, start: unknown, end: unknown, type: unknown) {
      const n = this._bytes.length;
      let a = start === undefined ? 0 : Math.trunc(Number(start)) || 0;
      let b = end === undefined ? n : Math.trunc(Number(end)) || 0;
      a = a < 0 ? Math.max(n + a, 0) : Math.min(a, n);
      b = b < 0 ? Math.max(n + b, 0) : Math.min(b, n);
      return blobOf(copyBytes(this._bytes, a, Math.max(a, b)), blobType(type));
    };
    p.stream = function (this: B) {
      return bodyInternals().streamOf(copyBytes(this._bytes, 0, this._bytes.length));
    };
    // File.prototype inherits Blob.prototype (both objects already exist: they are only extended).
    Object.setPrototypeOf(File.prototype, Blob.prototype);
  }
  function initBlob(o: BlobObject, parts: unknown, options: unknown): void {
    if (!blobInstalled) installBlob();
    const list: Uint8Array[] = [];
    if (parts !== undefined) {
      const seq = parts as { [Symbol.iterator]?: () => Iterator<unknown> } | null;
      if (seq === null || typeof seq !== 'object' || typeof seq[Symbol.iterator] !== 'function') {
        throw new TypeError("Failed to construct 'Blob': The provided value cannot be converted to a sequence.");
      }
      const it = seq[Symbol.iterator]!();
      for (let st = it.next(); !st.done; st = it.next()) {
        const x = st.value;
        if (x instanceof (Blob as unknown as BlobCtor)) list.push(x._bytes);
        else if (x instanceof ArrayBuffer) list.push(new Uint8Array(x.slice(0)));
        else if (isView(x)) list.push(copyBytes(x, 0, x.byteLength));
        else list.push(enc(String(x)));
      }
    }
    o._bytes = list.length === 1 ? copyBytes(list[0], 0, list[0].length) : concat(list);
    o.size = o._bytes.length;
    o.type = options != null ? blobType((options as { type?: unknown }).type) : '';
  }
  /** A Blob over bytes nobody else holds (no copy). */
  function blobOf(u: Uint8Array, type: string): BlobObject {
    const b = new (Blob as unknown as BlobCtor)();
    b._bytes = u;
    b.size = u.length;
    b.type = type;
    return b;
  }
  function fileOf(u: Uint8Array, name: string, type: string): BlobObject {
    const f = new (File as unknown as FileCtor)([], name, { type: type });
    f._bytes = u;
    f.size = u.length;
    return f;
  }
  /** FormData's value conversion: strings, or Files (a Blob becomes a File named "blob"). */
  function entryValue(value: unknown, filename: unknown, n: number): string | BlobObject {
    if (!(value instanceof (Blob as unknown as BlobCtor))) {
      if (n > 2) throw new TypeError("Failed to execute 'append' on 'FormData': parameter 2 is not of type 'Blob'.");
      return String(value);
    }
    const isFile = value instanceof (File as unknown as FileCtor);
    if (isFile && filename === undefined) return value;
    const f = fileOf(value._bytes, filename !== undefined ? String(filename) : isFile ? value.name! : 'blob', value.type);
    if (isFile) f.lastModified = value.lastModified;
    return f;
  }
  function installFormData(): void {
    formInstalled = true;
    if (!blobInstalled) installBlob();
    type F = FormObject & Record<string, unknown>;
    const p = FormData.prototype as unknown as F;
    function pairs(e: unknown[]): unknown[][] {
      const out: unknown[][] = [];
      for (let i = 0; i < e.length; i += 2) out.push([e[i], e[i + 1]]);
      return out;
    }
    p.append = function (this: F, name: unknown, value: unknown, filename: unknown) {
      if (arguments.length < 2) throw new TypeError("Failed to execute 'append' on 'FormData': 2 arguments required");
      this._entries.push(String(name), entryValue(value, filename, arguments.length));
    };
    p.set = function (this: F, name: unknown, value: unknown, filename: unknown) {
      if (arguments.length < 2) throw new TypeError("Failed to execute 'set' on 'FormData': 2 arguments required");
      const n = String(name);
      const v = entryValue(value, filename, arguments.length);
      const e = this._entries;
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
    p.get = function (this: F, name: unknown) {
      const n = String(name);
      for (let i = 0; i < this._entries.length; i += 2) if (this._entries[i] === n) return this._entries[i + 1];
      return null;
    };
    p.getAll = function (this: F, name: unknown) {
      const n = String(name);
      const out: unknown[] = [];
      for (let i = 0; i < this._entries.length; i += 2) if (this._entries[i] === n) out.push(this._entries[i + 1]);
      return out;
    };
    p.has = function (this: F & { get(n: unknown): unknown }, name: unknown) {
      return this.get(name) !== null;
    };
    p.delete = function (this: F, name: unknown) {
      const n = String(name);
      const e = this._entries;
      for (let i = e.length - 2; i >= 0; i -= 2) if (e[i] === n) e.splice(i, 2);
    };
    p.forEach = function (this: F, fn: (v: unknown, k: unknown, fd: F) => void, thisArg: unknown) {
      const l = pairs(this._entries);
      for (let i = 0; i < l.length; i++) fn.call(thisArg, l[i][1], l[i][0], this);
    };
    p.entries = function (this: F) {
      return shared().arrayIterator(pairs(this._entries));
    };
    p.keys = function (this: F) {
      const out: unknown[] = [];
      for (let i = 0; i < this._entries.length; i += 2) out.push(this._entries[i]);
      return shared().arrayIterator(out);
    };
    p.values = function (this: F) {
      const out: unknown[] = [];
      for (let i = 1; i < this._entries.length; i += 2) out.push(this._entries[i]);
      return shared().arrayIterator(out);
    };
    (p as unknown as Record<symbol, unknown>)[Symbol.iterator] = p.entries;
  }
  // ---- multipart/form-data (RFC 7578), as undici writes and reads it
  function escapeName(s: string): string {
    return s.replace(/\r/g, '%0D').replace(/\n/g, '%0A').replace(/"/g, '%22');
  }
  function unescapeName(s: string | undefined): string | undefined {
    return s === undefined ? s : s.replace(/%0D/gi, '\r').replace(/%0A/gi, '\n').replace(/%22/g, '"');
  }
  function encode(x: unknown): { bytes: Uint8Array; type: string } {
    const fd = x as FormObject;
    let boundary = '----tsgi-formdata-';
    for (let i = 0; i < 3; i++) boundary += String(Math.random()).slice(2, 10);
    const list: Uint8Array[] = [];
    const e = fd._entries;
    for (let i = 0; i < e.length; i += 2) {
      const v = e[i + 1];
      let head = '--' + boundary + CRLF + 'Content-Disposition: form-data; name="' + escapeName(e[i] as string) + '"';
      if (typeof v === 'string') {
        // Line breaks in values become CRLF, as undici and browsers send them.
        list.push(enc(head + CRLF + CRLF + v.replace(/\r?\n|\r/g, CRLF) + CRLF));
        continue;
      }
      head += '; filename="' + escapeName(v.name!) + '"' + CRLF + 'Content-Type: ' + (v.type || 'application/octet-stream') + CRLF + CRLF;
      list.push(enc(head), v._bytes, enc(CRLF));
    }
    list.push(enc('--' + boundary + '--' + CRLF));
    return { bytes: concat(list), type: 'multipart/form-data; boundary=' + boundary };
  }
  /** Index of `pat` (bytes) in `u` from `from`, or -1. */
  function find(u: Uint8Array, pat: Uint8Array, from: number): number {
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
  function param(v: string, key: string): string | undefined {
    const re = new RegExp('(?:^|;)\\s*' + key + '\\s*=\\s*(?:"([^"]*)"|([^;\\s]*))', 'i');
    const m = re.exec(v);
    if (m === null) return undefined;
    return m[1] !== undefined ? m[1] : m[2];
  }
  function parseMultipart(u: Uint8Array, boundary: string): FormObject {
    const bad = 'Failed to parse body as FormData.';
    const fd = new (FormData as unknown as FormCtor)();
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
      let disp: string | undefined;
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
      fd._entries.push(name, filename === undefined ? new TextDecoder().decode(content) : fileOf(content, filename, blobType(type || 'text/plain')));
      p = end + next.length;
    }
  }
  /** The body's MIME type as Body.blob() reports it: lower-cased, no blanks around ";". */
  function mimeOf(o: BodyHolder): string {
    const ct = headerInternals().getJoined(bodyInternals().listOf(o), 'content-type');
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
  function readForm(o: BodyHolder): Promise<unknown> {
    const mime = mimeOf(o);
    const essence = mime.split(';')[0];
    if (essence === 'multipart/form-data') {
      // Boundaries are case-sensitive: read it from the original header, not the lower-cased mime.
      const raw = headerInternals().getJoined(bodyInternals().listOf(o), 'content-type')!;
      const b = param(raw.slice(raw.indexOf(';')), 'boundary');
      if (b === undefined || b === '') return Promise.reject(new TypeError('Failed to parse body as FormData: no boundary.'));
      return bodyInternals()
        .consume(o, true)
        .then(function (u: Uint8Array) {
          return parseMultipart(u, b);
        });
    }
    if (essence === 'application/x-www-form-urlencoded') {
      return bodyInternals()
        .consume(o, false)
        .then(function (text: string) {
          const fd = new (FormData as unknown as FormCtor)();
          new (URLSearchParams as unknown as new (t: string) => { forEach(f: (v: string, k: string) => void): void })(text).forEach(function (v: string, k: string) {
            fd._entries.push(k, v);
          });
          return fd;
        });
    }
    return Promise.reject(new TypeError('Content-Type was not one of "multipart/form-data" or "application/x-www-form-urlencoded".'));
  }
  function readBlob(o: BodyHolder): Promise<unknown> {
    const type = mimeOf(o);
    return bodyInternals()
      .consume(o, true)
      .then(function (u: Uint8Array) {
        return blobOf(u, type);
      });
  }
  internals = { installBlob: installBlob, installFormData: installFormData, initBlob: initBlob, encode: encode, readForm: readForm, readBlob: readBlob };
  return internals;
}

