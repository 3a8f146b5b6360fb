/**
 * Response. Status, statusText, headers and body are taken at construction
 * (a snapshot: changing the init or the bytes later changes nothing, as
 * undici and core's fast Response do). `status`, `statusText` and `ok` are
 * plain data fields (getters cost ~0.35 µs each to install in njs 0.7.9); the
 * defaults (200, '', true) sit on the prototype.
 */
import { isReasonPhrase } from '@tsgi/core/src/wire.js';
import type { HeaderList, RuntimeResponse } from '../types.js';
import { headerInternals, headerPush } from './headers.js';
import { bodyInternals, bodyPrototype } from './body.js';
import { URL } from './url.js';

const TEXT_TYPE = 'text/plain;charset=UTF-8';

let installed = false;

type Res = RuntimeResponse & Record<string, unknown>;
type ResponseCtor = new (body?: unknown, init?: unknown) => Res;

export function Response(this: Res, body?: unknown, init?: unknown): void {
  if (!(this instanceof (Response as unknown as ResponseCtor))) {
    throw new TypeError("Failed to construct 'Response': Please use the 'new' operator");
  }
  if (!installed) {
    // `this` still has the pre-install prototype: move it to the installed one.
    installResponse();
    Object.setPrototypeOf(this, Response.prototype);
  }
  if (typeof body === 'string') {
    if (init === undefined) {
      // The common `new Response(text)`: nothing to validate; status, statusText and ok
      // come from the prototype (each own property costs ~50 ns in njs 0.7.9).
      this._list = ['content-type', TEXT_TYPE];
      this._body = body;
      return;
    }
    // `new Response(text, { status, headers: { name: 'value' } })` without the helper
    // factories (building them costs more than the whole response); anything unusual
    // (a statusText, a Headers or array init, a status to check) takes the full path.
    const i = init as { status?: unknown; statusText?: unknown; headers?: unknown } | null;
    const st = i !== null && typeof i === 'object' && i.statusText === undefined ? i.status : 0;
    const hi = st !== 0 ? (i!.headers as Record<string, unknown> | null | undefined) : null;
    if (
      (st === undefined || (typeof st === 'number' && st >= 200 && st <= 599 && Math.floor(st) === st && st !== 204 && st !== 205 && st !== 304)) &&
      (hi == null || (typeof hi === 'object' && (hi as { [Symbol.iterator]?: unknown })[Symbol.iterator] === undefined))
    ) {
      // A record (WebIDL: any object without @@iterator): the same pushes, in the same order,
      // as the full path makes.
      const h: HeaderList = [];
      let ct = false;
      if (hi != null) {
        const keys = Object.keys(hi);
        for (let k = 0; k < keys.length; k++) {
          headerPush(h, keys[k], hi[keys[k]]);
          if (h[h.length - 2] === 'content-type') ct = true;
        }
      }
      if (!ct) h.push('content-type', TEXT_TYPE);
      if (st !== undefined && st !== 200) {
        this.status = st as number;
        this.ok = (st as number) < 300;
      }
      this._list = h;
      this._body = body;
      return;
    }
  }
  let status = 200;
  let statusText = '';
  const h: HeaderList = [];
  if (init != null) {
    if (typeof init !== 'object') throw new TypeError('Response init must be an object');
    const o = init as { status?: unknown; statusText?: unknown; headers?: unknown };
    if (o.status !== undefined) {
      status = Number(o.status);
      if (!(status >= 200 && status <= 599 && Math.floor(status) === status)) {
        throw new RangeError('init["status"] must be in the range of 200 to 599, inclusive.');
      }
    }
    if (o.statusText !== undefined) {
      statusText = String(o.statusText);
      if (!isReasonPhrase(statusText)) throw new TypeError('Invalid statusText');
    }
    if (o.headers != null) headerInternals().fill(h, o.headers);
  }
  this.status = status;
  this.statusText = statusText;
  this.ok = status >= 200 && status < 300;
  this._list = h;
  const ct = bodyInternals().store(this, body);
  if (this._body != null && (status === 204 || status === 205 || status === 304)) {
    throw new TypeError('Response with null body status cannot have body');
  }
  if (ct !== null && !headerInternals().hasName(h, 'content-type')) headerPush(h, 'content-type', ct);
}

/** Installs Response.prototype (once per request: the bridge calls it before the handler runs). */
export function installResponse(): void {
  if (installed) return;
  installed = true;
  Response.prototype = {
    __proto__: bodyPrototype(),
    constructor: Response,
    // Defaults the hot constructors leave out of the instance.
    status: 200,
    statusText: '',
    ok: true,
    type: 'default',
    url: '',
    redirected: false,
    clone: function (this: Res) {
      const c = Object.create(Response.prototype) as Res;
      c.status = this.status;
      c.statusText = this.statusText;
      c.ok = this.ok;
      if (this.type !== 'default') c.type = this.type;
      c._list = headerInternals().copyList(bodyInternals().listOf(this));
      bodyInternals().clone(this, c);
      return c;
    },
  };
}

// Statics are declared functions assigned once: in njs 0.7.9 a declaration costs less per
// request than a function expression.
(Response as unknown as Record<string, unknown>).json = responseJson;
(Response as unknown as Record<string, unknown>).redirect = responseRedirect;
(Response as unknown as Record<string, unknown>).error = responseError;

function responseJson(data: unknown, init?: unknown): Res {
  const s = JSON.stringify(data);
  if (s === undefined) throw new TypeError('Value is not JSON serializable');
  const res = new (Response as unknown as ResponseCtor)(s, init);
  const l = res._list!;
  for (let i = 0; i < l.length; i += 2) {
    if (l[i] === 'content-type' && l[i + 1] === TEXT_TYPE) l.splice(i, 2);
  }
  if (!headerInternals().hasName(l, 'content-type')) l.push('content-type', 'application/json');
  return res;
}

function responseRedirect(url: unknown, status?: unknown): Res {
  const st = status === undefined ? 302 : status;
  if (st !== 301 && st !== 302 && st !== 303 && st !== 307 && st !== 308) throw new RangeError('Invalid status code ' + String(st));
  const href = new (URL as unknown as new (u: string) => { href: string })(String(url)).href;
  const res = new (Response as unknown as ResponseCtor)(null, { status: st });
  headerPush(res._list!, 'location', href);
  return res;
}

function responseError(): Res {
  const res = new (Response as unknown as ResponseCtor)(null);
  res.status = 0;
  res.ok = false;
  res.type = 'error';
  return res;
}
