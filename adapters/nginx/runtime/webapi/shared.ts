/**
 * Helpers every Web API type uses, built on first use in a request (njs 0.7.9
 * re-creates every top-level function for every request; nested ones cost
 * nothing until their factory runs).
 *
 * The byte helpers work around njs 0.7.9 (README.md, "njs 0.7.9 behaviour"):
 * TypedArray.prototype.slice copies from the start of the underlying buffer
 * (it ignores the view's offset), String.bytesFrom(view) takes the whole
 * buffer, and ArrayBuffer.isView is false for a DataView. ArrayBuffer slice,
 * subarray, set() and TextDecoder are right: use only those.
 */

export interface SharedHelpers {
  /** Bytes start..end of the view `u`, copied into a Uint8Array over a buffer of exactly that size. */
  copyBytes(u: ArrayBufferView, start: number, end: number): Uint8Array;
  /** ArrayBuffer.isView, DataView included. */
  isView(x: unknown): x is ArrayBufferView;
  /** One Uint8Array holding every chunk of `list`, in order. */
  concat(list: Uint8Array[]): Uint8Array;
  /** A view over the bytes of any chunk kind a stream may carry, or null (strings: UTF-8). */
  chunkBytes(c: unknown): Uint8Array | null;
  /**
   * The [name, value] pairs of a sequence init (WebIDL sequence<sequence<ByteString>>: an array or
   * any iterable of pairs), null for a record; `what` names the refusal of an entry that is no pair.
   */
  pairsOf(init: object, what: string): unknown[][] | null;
  /** An iterator over an array (njs 0.7.9 has no generators). */
  arrayIterator<T>(a: T[]): Iterator<T> & Iterable<T>;
}

let helpers: SharedHelpers | null = null;

export function shared(): SharedHelpers {
  if (helpers !== null) return helpers;
  function copyBytes(u: ArrayBufferView, start: number, end: number): Uint8Array {
    return new Uint8Array(u.buffer.slice(u.byteOffset + start, u.byteOffset + end));
  }
  function isView(x: unknown): x is ArrayBufferView {
    return ArrayBuffer.isView(x) || x instanceof DataView;
  }
  function concat(list: Uint8Array[]): Uint8Array {
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
  function chunkBytes(c: unknown): Uint8Array | null {
    if (typeof c === 'string') return new TextEncoder().encode(c);
    if (c instanceof Uint8Array) return c;
    return isView(c) ? new Uint8Array(c.buffer, c.byteOffset, c.byteLength) : null;
  }
  function arrayIterator<T>(a: T[]): Iterator<T> & Iterable<T> {
    let i = 0;
    const it = {
      next: function (): IteratorResult<T> {
        return i < a.length ? { value: a[i++], done: false } : { value: undefined, done: true };
      },
    } as Iterator<T> & Iterable<T>;
    it[Symbol.iterator] = function () {
      return it;
    };
    return it;
  }
  function pairsOf(init: object, what: string): unknown[][] | null {
    const o = init as { [Symbol.iterator]?: () => Iterator<unknown> };
    let items: unknown[];
    if (Array.isArray(o)) items = o;
    else if (typeof o[Symbol.iterator] === 'function') {
      items = [];
      const it = o[Symbol.iterator]!();
      for (let s = it.next(); !s.done; s = it.next()) items.push(s.value);
    } else return null;
    for (let i = 0; i < items.length; i++) {
      const p = items[i] as unknown[] | null;
      if (p == null || typeof p !== 'object' || p.length !== 2) throw new TypeError(what);
    }
    return items as unknown[][];
  }
  helpers = { copyBytes: copyBytes, isView: isView, concat: concat, chunkBytes: chunkBytes, pairsOf: pairsOf, arrayIterator: arrayIterator };
  return helpers;
}
