/**
 * Request, and the bridge's lazy request (nothing read from nginx until the
 * handler asks: `.url` and `.headers` are built on first use).
 */
import type { HeaderList, NjsRequest, RuntimeRequest } from '../types.js';
import { headerInternals, headerPush, isTokenQuick } from './headers.js';
import { bodyInternals, bodyPrototype } from './body.js';
import { URL } from './url.js';
import { AbortSignal } from './abort.js';

let installed = false;

type Req = RuntimeRequest & Record<string, unknown>;
type RequestCtor = new (input: unknown, init?: unknown) => Req;

export function Request(this: Req, input: unknown, init?: unknown): Req | void {
  if (!(this instanceof (Request as unknown as RequestCtor))) {
    throw new TypeError("Failed to construct 'Request': Please use the 'new' operator");
  }
  if (!installed) {
    installRequest();
    return new (Request as unknown as RequestCtor)(input, init);
  }
  const from = input instanceof (Request as unknown as RequestCtor) ? input : null;
  const o = (init != null ? init : {}) as { method?: unknown; headers?: unknown; body?: unknown; signal?: unknown };
  this._url = from ? from.url : new (URL as unknown as new (u: string) => { href: string })(String(input)).href;
  let method = from ? from.method : 'GET';
  if (o.method !== undefined) {
    method = String(o.method);
    if (!isTokenQuick(method)) throw new TypeError("'" + method + "' is not a valid HTTP method.");
    const up = method.toUpperCase();
    if (up === 'CONNECT' || up === 'TRACE' || up === 'TRACK') throw new TypeError("'" + method + "' HTTP method is unsupported.");
    if (up === 'DELETE' || up === 'GET' || up === 'HEAD' || up === 'OPTIONS' || up === 'POST' || up === 'PUT') method = up;
  }
  this.method = method;
  const h: HeaderList = [];
  if (o.headers !== undefined) headerInternals().fill(h, o.headers);
  else if (from) {
    const fl = bodyInternals().listOf(from);
    for (let i = 0; i < fl.length; i++) h.push(fl[i]);
    if (fl._latin1) h._latin1 = true;
  }
  this._list = h;
  this._signal = o.signal != null ? o.signal : from ? from._signal : null;
  let ct: string | null = null;
  if (o.body != null) {
    ct = bodyInternals().store(this, o.body);
  } else if (from && from._body != null) {
    if (bodyInternals().isUsed(from)) throw new TypeError('Cannot construct a Request with a Request object that has already been used.');
    this._body = from._body;
    from._used = true;
  } else this._body = null;
  if (this._body != null && (method === 'GET' || method === 'HEAD')) {
    throw new TypeError('Request with GET/HEAD method cannot have body.');
  }
  if (ct !== null && !headerInternals().hasName(h, 'content-type')) headerPush(h, 'content-type', ct);
}

function installRequest(): void {
  installed = true;
  Request.prototype = {
    __proto__: bodyPrototype(),
    constructor: Request,
    get url() {
      const self = this as unknown as Req;
      if (self._url === undefined) self._url = self._makeUrl!(self._src!);
      return self._url;
    },
    get signal() {
      const self = this as unknown as Req;
      if (!self._signal) self._signal = new (AbortSignal as unknown as new () => object)();
      return self._signal;
    },
    clone: function (this: Req) {
      const c = Object.create(Request.prototype) as Req;
      c.method = this.method;
      c._url = this.url;
      c._list = headerInternals().copyList(bodyInternals().listOf(this));
      c._signal = this._signal;
      bodyInternals().clone(this, c);
      return c;
    },
  };
}

/**
 * A Request that reads nothing up front: `makeUrl(src)` and `makeHeaders(src)`
 * (a flat header list) run on first `.url` / `.headers`. The bridge's; `body`
 * is null or bytes.
 */
export function lazyRequest(
  src: NjsRequest,
  method: string,
  body: Uint8Array | null,
  makeUrl: (src: NjsRequest) => string,
  makeHeaders: (src: NjsRequest) => HeaderList,
): Req {
  if (!installed) installRequest();
  // One literal (cheaper than Object.create + stores in njs); _url/_list/_headers/_signal/_used start undefined.
  return { __proto__: Request.prototype, method: method, _src: src, _makeUrl: makeUrl, _makeHeaders: makeHeaders, _body: body } as unknown as Req;
}
