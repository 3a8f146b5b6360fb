/**
 * AbortController and AbortSignal. In embedded mode request.signal aborts at
 * the request deadline only (bridge.ts): njs 0.7.9 tears the request's VM down
 * on a client abort without running JS (njs #955); handlers can still abort
 * signals of their own.
 */

interface Signal {
  aborted: boolean;
  reason: unknown;
  onabort: ((ev: unknown) => void) | null;
  /** Listeners as a flat [fn, once, ...] list. */
  _listeners: unknown[];
  _abort(reason: unknown): void;
}

// The prototype is filled on first use in a request (the methods are created only then).
let installed = false;

export function AbortSignal(this: Signal): void {
  if (!(this instanceof (AbortSignal as unknown as new () => Signal))) throw new TypeError('Illegal constructor');
  if (!installed) {
    installed = true;
    const p = AbortSignal.prototype as unknown as Signal & Record<string, unknown>;
    p.addEventListener = function (this: Signal, type: unknown, fn: unknown, opts: unknown) {
      if (type !== 'abort' || typeof fn !== 'function') return;
      for (let i = 0; i < this._listeners.length; i += 2) if (this._listeners[i] === fn) return;
      this._listeners.push(fn, opts != null && typeof opts === 'object' && (opts as { once?: unknown }).once === true);
    };
    p.removeEventListener = function (this: Signal, type: unknown, fn: unknown) {
      if (type !== 'abort') return;
      for (let i = 0; i < this._listeners.length; i += 2) if (this._listeners[i] === fn) this._listeners.splice(i, 2);
    };
    p.throwIfAborted = function (this: Signal) {
      if (this.aborted) throw this.reason;
    };
    p._abort = function (this: Signal, reason: unknown) {
      if (this.aborted) return;
      this.aborted = true;
      if (reason === undefined) {
        const e = new Error('This operation was aborted');
        e.name = 'AbortError';
        reason = e;
      }
      this.reason = reason;
      const ev = { type: 'abort', target: this };
      if (typeof this.onabort === 'function') this.onabort.call(this, ev);
      const ls = this._listeners.slice(0);
      this._listeners = [];
      for (let i = 0; i < ls.length; i += 2) {
        if (!ls[i + 1]) this._listeners.push(ls[i], false);
        (ls[i] as (ev: unknown) => void).call(this, ev);
      }
    };
  }
  this.aborted = false;
  this.reason = undefined;
  this.onabort = null;
  this._listeners = [];
}

export function AbortController(this: { signal: Signal }): void {
  if (!(this instanceof (AbortController as unknown as new () => object))) throw new TypeError("Failed to construct 'AbortController'");
  this.signal = new (AbortSignal as unknown as new () => Signal)();
  const p = AbortController.prototype as unknown as Record<string, unknown>;
  if (!p.abort) {
    p.abort = function (this: { signal: Signal }, reason: unknown) {
      this.signal._abort(reason);
    };
  }
}
