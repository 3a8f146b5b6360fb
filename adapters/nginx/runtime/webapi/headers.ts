/**
 * Headers, and the header list every Request and Response keeps: a flat
 * [lowerName, value, ...] array in insertion order, as the Fetch standard
 * keeps it (`get` joins repeats with ", "; Set-Cookie stays apart).
 * Names must be tokens and values valid field values (core wire.ts isToken,
 * isFieldValue); a value with U+0080..U+00FF marks its list `_latin1`.
 */
import { isAscii, isFieldValue, isToken } from '@tsgi/core/src/wire.js';
import type { HeaderList, RuntimeHeaders } from '../types.js';
import { shared } from './shared.js';

// The prototype is installed on first use in a request (a primitive flag: reset when the module re-runs).
let installed = false;

/**
 * wire.ts isToken, with the common case answered by one native call: a loop
 * costs ~0.1 µs a character in njs 0.7.9, and encodeURIComponent leaves exactly
 * A-Z a-z 0-9 - _ . ! ~ * ' ( ) alone, all token characters but "(" and ")".
 */
export function isTokenQuick(n: string): boolean {
  if (n.length > 0 && encodeURIComponent(n) === n) return n.indexOf('(') < 0 && n.indexOf(')') < 0;
  return isToken(n);
}

/**
 * Normalizes (trims HTTP whitespace) and validates one header, then appends it
 * to `l` lower-cased. Top-level, not in headerInternals(): the text-Response
 * path uses it on every request. The usual names and values are answered by a
 * switch: each native call (test, toLowerCase) costs ~0.1 µs in njs 0.7.9.
 */
export function headerPush(l: HeaderList, name: unknown, value: unknown): void {
  const raw = typeof name === 'string' ? name : String(name);
  let n: string | null;
  switch (raw) {
    case 'content-type':
    case 'Content-Type':
      n = 'content-type';
      break;
    case 'cache-control':
    case 'Cache-Control':
      n = 'cache-control';
      break;
    case 'set-cookie':
    case 'Set-Cookie':
      n = 'set-cookie';
      break;
    case 'location':
    case 'Location':
      n = 'location';
      break;
    case 'etag':
    case 'ETag':
      n = 'etag';
      break;
    case 'x-powered-by':
      n = raw;
      break;
    default:
      if (!isTokenQuick(raw)) throw new TypeError('Invalid header name: "' + raw + '"');
      n = raw.toLowerCase();
  }
  let v = typeof value === 'string' ? value : String(value);
  switch (v) {
    // Common values are known to be valid: skip the native scans below.
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
        if (!isAscii(v)) l._latin1 = true;
      }
    }
  }
  l.push(n, v);
}

export function Headers(this: RuntimeHeaders, init?: unknown): void {
  if (!(this instanceof (Headers as unknown as new () => RuntimeHeaders))) {
    throw new TypeError("Failed to construct 'Headers': Please use the 'new' operator");
  }
  if (!installed) headerInternals().install();
  this._list = [];
  if (init != null) headerInternals().fill(this._list, init);
}

export interface HeaderInternals {
  /** Installs Headers.prototype. */
  install(): void;
  /** Validates and appends `init` (Headers, [[k, v]...], an iterable or a record) to a list. */
  fill(l: HeaderList, init: unknown): void;
  /** The values of `n` joined with ", ", or null. */
  getJoined(l: HeaderList, n: string): string | null;
  /** A copy of a list, its `_latin1` mark included. */
  copyList(l: HeaderList): HeaderList;
  hasName(l: HeaderList, n: string): boolean;
  /** A Headers object over an existing list (no copy). */
  over(l: HeaderList): RuntimeHeaders;
}

let internals: HeaderInternals | null = null;

/** What Headers and the bodies need beyond the hot path, built on first use in a request. */
export function headerInternals(): HeaderInternals {
  if (internals !== null) return internals;
  function fill(l: HeaderList, init: unknown): void {
    let i: number;
    if (init instanceof (Headers as unknown as new () => RuntimeHeaders)) {
      const src = init._list;
      for (i = 0; i < src.length; i++) l.push(src[i]);
      if (src._latin1) l._latin1 = true;
      return;
    }
    if (typeof init !== 'object' && typeof init !== 'function') throw new TypeError('Headers init must be an object');
    const o = init as Record<string, unknown>;
    const pairs = shared().pairsOf(o, 'Headers init: each entry must be a [name, value] pair');
    if (pairs) {
      for (i = 0; i < pairs.length; i++) headerPush(l, pairs[i][0], pairs[i][1]);
      return;
    }
    const keys = Object.keys(o);
    for (i = 0; i < keys.length; i++) headerPush(l, keys[i], o[keys[i]]);
  }
  function getJoined(l: HeaderList, n: string): string | null {
    let out: string | null = null;
    for (let i = 0; i < l.length; i += 2) {
      if (l[i] === n) out = out === null ? l[i + 1] : out + ', ' + l[i + 1];
    }
    return out;
  }
  function copyList(l: HeaderList): HeaderList {
    const c: HeaderList = l.slice(0);
    if (l._latin1) c._latin1 = true;
    return c;
  }
  function hasName(l: HeaderList, n: string): boolean {
    for (let i = 0; i < l.length; i += 2) if (l[i] === n) return true;
    return false;
  }
  function over(l: HeaderList): RuntimeHeaders {
    const h = new (Headers as unknown as new () => RuntimeHeaders)();
    h._list = l;
    return h;
  }
  function lower(name: unknown): string {
    const raw = String(name);
    const n = isTokenQuick(raw) ? raw.toLowerCase() : null;
    if (n === null) throw new TypeError('Invalid header name: "' + String(name) + '"');
    return n;
  }
  function remove(l: HeaderList, n: string): void {
    for (let i = l.length - 2; i >= 0; i -= 2) if (l[i] === n) l.splice(i, 2);
  }
  // Sorted, combined view used by iteration (Set-Cookie stays one entry per value).
  function sorted(l: HeaderList): string[][] {
    const names: string[] = [];
    const seen: Record<string, boolean> = {};
    let i: number;
    for (i = 0; i < l.length; i += 2) {
      if (seen[l[i]] !== true) {
        seen[l[i]] = true;
        names.push(l[i]);
      }
    }
    names.sort();
    const out: string[][] = [];
    for (i = 0; i < names.length; i++) {
      const n = names[i];
      if (n === 'set-cookie') {
        for (let j = 0; j < l.length; j += 2) if (l[j] === n) out.push([n, l[j + 1]]);
      } else out.push([n, getJoined(l, n)!]);
    }
    return out;
  }
  function install(): void {
    installed = true;
    type H = RuntimeHeaders & Record<string, unknown>;
    const p = Headers.prototype as unknown as H;
    const iterate = shared().arrayIterator;
    p.append = function (this: H, name: unknown, value: unknown) {
      headerPush(this._list, name, value);
    };
    p.set = function (this: H, name: unknown, value: unknown) {
      const tmp: HeaderList = [];
      headerPush(tmp, name, value);
      const l = this._list;
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
      if (tmp._latin1) l._latin1 = true;
    };
    p.get = function (this: H, name: unknown) {
      return getJoined(this._list, lower(name));
    };
    p.has = function (this: H, name: unknown) {
      return hasName(this._list, lower(name));
    };
    p.delete = function (this: H, name: unknown) {
      remove(this._list, lower(name));
    };
    p.getSetCookie = function (this: H) {
      const out: string[] = [];
      const l = this._list;
      for (let i = 0; i < l.length; i += 2) if (l[i] === 'set-cookie') out.push(l[i + 1]);
      return out;
    };
    p.forEach = function (this: H, cb: (v: string, k: string, h: H) => void, thisArg: unknown) {
      const s = sorted(this._list);
      for (let i = 0; i < s.length; i++) cb.call(thisArg, s[i][1], s[i][0], this);
    };
    p.entries = function (this: H) {
      return iterate(sorted(this._list));
    };
    p.keys = function (this: H) {
      const s = sorted(this._list);
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) out.push(s[i][0]);
      return iterate(out);
    };
    p.values = function (this: H) {
      const s = sorted(this._list);
      const out: string[] = [];
      for (let i = 0; i < s.length; i++) out.push(s[i][1]);
      return iterate(out);
    };
    (p as unknown as Record<symbol, unknown>)[Symbol.iterator] = p.entries;
  }
  internals = { install: install, fill: fill, getJoined: getJoined, copyList: copyList, hasName: hasName, over: over };
  return internals;
}
