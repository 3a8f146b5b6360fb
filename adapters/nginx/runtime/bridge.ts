/**
 * The njs side of tsgi's nginx embedded mode: turns an nginx request into the
 * handler's Request, runs the tsgi pipeline (same semantics as @tsgi/core's
 * pipeline.ts, ported here because core's module builds undici-based classes
 * at load time) and writes the Response back through r.*.
 *
 * njs 0.7.9 gives each request its own VM, cloned from the state after module
 * load, and keeps it (with this module's variables) until the request is
 * freed, log phase included. So module-level `let`s below are per-request
 * state, and `log` (a js_set run in the log phase) sees what `content` left.
 *
 * Entry: `export default bridge(handler)` -> { content, fetch, auth, log }.
 */

import { Response, URL as URL_, lazyRequest, headerList, ReadableStream, copyBytes, isView } from './webapi.js';

type Any = any;

/** Largest single r.send()/r.return() payload (njs 0.7.9 truncates big sends, #825). */
const CHUNK = 65536;

// Per-request state (module variables live exactly as long as the request's VM).
let cur: Any = null; // the nginx request object of the js_content call
let curCtx: Any = null; // its Context
let t0 = 0; // pipeline start (ms)
let t1 = 0; // response end (ms)
let sent = -1; // body bytes written by the bridge, -1 = not written by us
let sentStr: Any = null; // a string body sent by r.return: its byte length is computed only if `log` asks
let envObj: Any = null;
let curMethod = ''; // r.method of the request being answered (read once: externals cost a native call)
// The handler and whether it has a log hook; set by bridge() as the module loads.
let H: Any = null;
let timed = false;






/** ctx.waitUntil: njs keeps the request (and its VM) alive while timers/fetches are pending. */
function waitUntil(p: Any): void {
  const r = cur;
  try {
    Promise.resolve(p).then(undefined, function (e: Any) {
      BX().errlog(r, 'request ' + (curCtx ? curCtx.id : '?') + ': waitUntil promise rejected', e);
    });
  } catch (_e) {
    /* never throws */
  }
}

function makeCtx(r: Any): Any {
  let id: Any = null;
  // id and env are getters: $request_id alone costs ~1 µs to generate.
  return {
    server: 'nginx',
    ip: r.remoteAddress,
    get id() {
      if (id === null) id = r.variables.request_id || '';
      return id;
    },
    user: undefined,
    get env() {
      return BX().env();
    },
    waitUntil: waitUntil,
  };
}

/** Absolute URL: scheme + Host header (keeps the port) + raw request URI, normalised like `new URL()`. */
function urlOf(r: Any): string {
  const v = r.variables;
  const ru = v.request_uri || '/';
  let raw: string;
  if (ru[0] !== '/') raw = ru;
  else {
    const host = r.headersIn.Host || v.host + (v.server_port ? ':' + v.server_port : '');
    raw = v.scheme + '://' + host + ru;
  }
  try {
    return new (URL_ as Any)(raw).href;
  } catch (_e) {
    return raw;
  }
}

/** Flat [lowerName, value, ...] from r.rawHeadersIn, repeats preserved. */
function headersOf(r: Any): string[] {
  const raw = r.rawHeadersIn;
  const l: string[] = [];
  for (let i = 0; i < raw.length; i++) l.push(String(raw[i][0]).toLowerCase(), String(raw[i][1]));
  return l;
}

function requestOf(r: Any): Any {
  const m = r.method;
  curMethod = m;
  let body: Any = null;
  if (m !== 'GET' && m !== 'HEAD') {
    const b = r.requestBuffer; // undefined when the request has no body
    // A plain Uint8Array view (njs Buffers differ from Uint8Array in slice/buffer details).
    if (b !== undefined && b !== null) body = b.length === 0 ? new Uint8Array(0) : new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
  return lazyRequest(r, m, body, urlOf, headersOf);
}





// ---------------------------------------------------------------- writing the response



/** Writes headers into r.headersOut and the status (status -1: r.return sets it). */
function setHead(r: Any, status: number, l: string[], bodyLen: number): void {
  // Values were validated (no CR/LF/NUL) when the Headers/Response was built;
  // regex tests cost ~2 µs each in njs 0.7.9, so nothing is re-scanned here.
  const out = r.headersOut;
  let cookies: Any = null;
  for (let i = 0; i < l.length; i += 2) {
    const n = l[i];
    if (hopByHop(n)) continue;
    if (n === 'set-cookie') {
      if (cookies === null) cookies = [];
      cookies.push(l[i + 1]);
      continue;
    }
    // Duplicates other than Set-Cookie combine with ", " as Headers iteration does.
    let dup = false;
    for (let j = 0; j < i; j += 2) {
      if (l[j] === n) {
        dup = true;
        break;
      }
    }
    if (dup) out[n] = out[n] + ', ' + l[i + 1];
    else out[n] = l[i + 1];
  }
  if (cookies !== null) out['Set-Cookie'] = cookies;
  if (bodyLen >= 0) out['Content-Length'] = String(bodyLen);
  if (status >= 0) r.status = status;
}

function hopByHop(n: string): boolean {
  switch (n) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-connection':
    case 'transfer-encoding':
    case 'upgrade':
    case 'te':
    case 'trailer':
    case 'content-length':
      return true;
  }
  return false;
}



/** Sends `res` on r. Never throws: any failure becomes a bare 500 (or an ended response). */
function respond(r: Any, res: Any, ctx: Any): void {
  let headSent = false;
  try {
    const fb = res._b;
    const fs = res.status;
    if (typeof fb === 'string' && fb !== '' && fb.length <= 21845 && fs >= 200 && fs < 300 && fs !== 204 && res.type !== 'error') {
      // Hot path: small text body, 2xx: one r.return (at most 64 KB of UTF-8), which sets the status.
      setHead(r, -1, headerList(res), -1);
      headSent = true;
      if (curMethod === 'HEAD') sent = 0;
      else sentStr = fb;
      r.return(fs, fb);
      if (t0 > 0) t1 = Date.now();
      return;
    }
    if (!(res instanceof (Response as Any)) || res.type === 'error' || !(res.status >= 200)) {
      BX().errlog(r, 'request ' + ctx.id + ': unusable Response (Response.error() or bad status)');
      BX().fail500(r, false);
      return;
    }
    const status = res.status;
    const l = headerList(res);
    let b = res._b;
    const skip = BX().noBody(r.method, status);
    if (b instanceof (ReadableStream as Any)) {
      if (skip) {
        // HEAD/204/304: the body is never read; cancel it now so an endless stream stops.
        if (!b.locked) b.cancel(undefined).then(undefined, function () {});
        setHead(r, status, l, -1);
        headSent = true;
        sent = 0;
        r.sendHeader();
        r.finish();
        t1 = Date.now();
        return;
      }
      BX().pump(r, b, ctx, status, l);
      return;
    }
    if (b == null) b = '';
    let len: number;
    if (typeof b === 'string') {
      // Byte length decides the path; a UTF-8 string is at most 3 bytes per UTF-16 unit.
      if (b.length * 3 > CHUNK) {
        b = BX().utf8(b);
        len = b.length;
      } else len = -1;
    } else len = b.length;
    const redirect = status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
    if (!redirect && status !== 204 && status !== 304 && len !== 0 && len <= CHUNK && b !== '') {
      // Fast path: small non-empty body, non-redirect status (r.return takes a redirect's
      // body as its Location): one r.return(), nginx sets Content-Length.
      setHead(r, status, l, -1);
      headSent = true; // from here on a failure means the client is gone: never send again
      if (len < 0) {
        if (skip) sent = 0;
        else sentStr = b;
        r.return(status, b);
      } else {
        sent = skip ? 0 : len;
        // r.return reads a typed array's own bytes (offset and length honoured).
        r.return(status, b);
      }
      t1 = Date.now();
      return;
    }
    if (len < 0) {
      b = BX().utf8(b);
      len = b.length;
    }
    setHead(r, status, l, status === 204 || status === 304 ? -1 : len);
    headSent = true;
    r.sendHeader();
    sent = 0;
    if (!skip) {
      for (let off = 0; off < len; off += CHUNK) r.send(BX().byteString(b.subarray(off, Math.min(len, off + CHUNK))));
      sent = len;
    }
    r.finish();
    t1 = Date.now();
  } catch (e) {
    if (headSent) {
      // r.return/r.send failed: the client went away; nothing more can be sent.
      t1 = Date.now();
      return;
    }
    BX().errlog(r, 'request ' + ctx.id + ': cannot send the response', e);
    BX().fail500(r, false);
  }
}




// ---------------------------------------------------------------- njs entry points

function startRequest(r: Any, timed: boolean): Any {
  cur = r;
  // Only `log` reads the duration: Date.now() is not free in njs 0.7.9.
  t0 = timed ? Date.now() : 0;
  t1 = 0;
  sent = -1;
  sentStr = null;
  const ctx = makeCtx(r);
  curCtx = ctx;
  return ctx;
}




// The settle callbacks of an async fetch: top-level (cloned with the module) rather than two
// closures per request; the request and its ctx are the module's per-request cur/curCtx.
function fetched(res: Any): void {
  const r = cur;
  const ctx = curCtx;
  const checked = res instanceof (Response as Any) ? res : BX().checkResponse(res, ctx, r);
  if (ctx.user !== undefined) BX().setUserVar(r, ctx.user);
  respond(r, checked, ctx);
}

function fetchFailed(e: Any): void {
  BX().errlog(cur, 'request ' + curCtx.id + ': fetch threw', e);
  BX().fail500(cur, false);
}

function contentStep(ctx: Any): void {
  const r = cur;
  const h = H;
  let out: Any;
  try {
    const req = requestOf(r);
    out = h.authenticate || h.authorize ? BX().runPipeline(h, req, ctx, r) : h.fetch(req, ctx);
  } catch (e) {
    BX().errlog(r, 'request ' + ctx.id + ': fetch threw', e);
    out = BX().plain(500, 'Internal Server Error\n');
  }
  if (out instanceof (Response as Any)) {
    if (ctx.user !== undefined) BX().setUserVar(r, ctx.user);
    respond(r, out, ctx);
    return;
  }
  // isThen/checkResponse inlined: the hot async path must not build BX().
  if (out !== null && typeof out === 'object' && typeof out.then === 'function') {
    // An async fetch returns a native promise: no Promise.resolve() wrapper needed.
    (out instanceof Promise ? out : Promise.resolve(out)).then(fetched, fetchFailed);
    return;
  }
  respond(r, BX().checkResponse(out, ctx, r), ctx);
}

/** js_content: authenticate -> authorize -> fetch, writes the response. */
function content(r: Any): void {
  const ctx = startRequest(r, timed);
  if (typeof H.init === 'function') BX().guarded(H, r, ctx, contentStep);
  else contentStep(ctx);
}

/** js_content behind auth_request: fetch only, ctx.user from $tsgi_user. */
function fetchOnly(r: Any): void {
  const h = H;
  const ctx = startRequest(r, timed);
  let u: Any;
  try {
    u = r.variables.tsgi_user;
  } catch (_e) {
    u = undefined;
  }
  if (typeof u === 'string' && u !== '') ctx.user = u;
  BX().guarded(h, r, ctx, function (c: Any) {
    let out: Any;
    try {
      out = BX().runFetch(h, requestOf(r), c, r);
    } catch (e) {
      BX().errlog(r, 'request ' + c.id + ': bridge failed', e);
      out = BX().plain(500, 'Internal Server Error\n');
    }
    BX().deliver(r, out, c);
  });
}

/** js_content of an internal auth_request location: authenticate + authorize only. */
function authOnly(r: Any): void {
  const h = H;
  const ctx = startRequest(r, timed);
  BX().guarded(h, r, ctx, function (c: Any) {
    let out: Any;
    try {
      // auth_request subrequests carry no body and are GETs: the client's method is
      // $request_method (the main request's); $request_uri and the headers are the client's too.
      out = BX().runAccess(h, lazyRequest(r, r.variables.request_method || r.method, null, urlOf, headersOf), c);
    } catch (e) {
      out = Promise.reject(e);
    }
    Promise.resolve(out).then(
      function (rej: Any) {
        BX().authReply(r, rej, c);
      },
      function (e: Any) {
        BX().errlog(r, 'request ' + c.id + ': authenticate/authorize threw', e);
        BX().fail500(r, false);
      },
    );
  });
}

/** js_set handler for a variable used in log_format: runs `log`, returns ''. */
function logHook(r: Any): string {
  const h = H;
  if (typeof h.log !== 'function') return '';
  try {
    const same = curCtx !== null; // content ran in this request's VM
    const ctx = same ? curCtx : makeCtx(r);
    const v = r.variables;
    const status = Number(v.status) || 0;
    let bytes = sentStr !== null ? BX().byteLen(sentStr) : sent >= 0 ? sent : Number(v.body_bytes_sent) || 0;
    if (BX().noBody(r.method, status)) bytes = 0;
    let user = ctx.user;
    if (user === undefined) {
      try {
        const vu = v.tsgi_user;
        if (typeof vu === 'string' && vu !== '') user = vu;
      } catch (_e) {
        /* no $tsgi_user */
      }
    }
    const dur = same && t1 > 0 ? t1 - t0 : Math.round(Number(v.request_time) * 1000);
    const entry = { method: r.method, url: urlOf(r), status: status, bytes: bytes, durationMs: dur, user: user };
    const out = h.log(entry, ctx);
    if (BX().isThen(out)) {
      Promise.resolve(out).then(undefined, function (e: Any) {
        BX().errlog(r, 'request ' + ctx.id + ': log threw', e);
      });
    }
  } catch (e) {
    BX().errlog(r, 'log threw', e);
  }
  return '';
}

/**
 * Wraps a tsgi handler into the functions nginx calls:
 *   content(r) js_content: authenticate -> authorize -> fetch, writes the response
 *   fetch(r)   js_content behind auth_request: fetch only, ctx.user from $tsgi_user
 *   auth(r)    js_content of an internal auth_request location: authenticate + authorize only
 *   log(r)     js_set handler for a variable used in log_format: runs `log`, returns ''
 * The entry points are top-level declarations, not closures over `h`: njs 0.7.9 re-runs the
 * module body for every request, and a declaration is the cheapest function to re-create.
 */
export function bridge(h: Any): Any {
  H = h;
  timed = typeof h.log === 'function';
  return { content: content, fetch: fetchOnly, auth: authOnly, log: logHook };
}


/** Helpers off the hot path, created on first use in a request (nested functions cost
 * nothing until their factory runs; top-level ones are cloned for every request). */
let bxCache: Any = null;
function BX(): Any {
  if (bxCache !== null) return bxCache;
  function errlog(r: Any, msg: string, err?: Any): void {
    let detail = '';
    if (err !== undefined) detail = ': ' + (err && err.stack ? err.stack : String(err));
    try {
      r.error('[tsgi] ' + msg + detail);
    } catch (_e) {
      /* the request may be gone */
    }
  }
  function plain(status: number, text: string): Any {
    return new (Response as Any)(text, { status: status, headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  }
  function isThen(v: Any): boolean {
    return v !== null && typeof v === 'object' && typeof v.then === 'function';
  }
  function env(): Any {
    if (envObj === null) {
      envObj = {};
      try {
        const pe = (globalThis as Any).process ? (globalThis as Any).process.env : null;
        if (pe) {
          const keys = Object.keys(pe);
          for (let i = 0; i < keys.length; i++) envObj[keys[i]] = pe[keys[i]];
        }
      } catch (_e) {
        /* no process object */
      }
    }
    return envObj;
  }
  // ---------------------------------------------------------------- pipeline (port of @tsgi/core pipeline.ts)

  function checkResponse(v: Any, ctx: Any, r: Any): Any {
    if (v instanceof (Response as Any)) return v;
    errlog(r, 'request ' + ctx.id + ': fetch returned ' + (v === null ? 'null' : typeof v) + ', not a Response');
    return plain(500, 'Internal Server Error\n');
  }
  function runFetch(h: Any, req: Any, ctx: Any, r: Any): Any {
    let out: Any;
    try {
      out = h.fetch(req, ctx);
    } catch (e) {
      errlog(r, 'request ' + ctx.id + ': fetch threw', e);
      return plain(500, 'Internal Server Error\n');
    }
    if (isThen(out)) {
      return Promise.resolve(out).then(
        function (v: Any) {
          return checkResponse(v, ctx, r);
        },
        function (e: Any) {
          errlog(r, 'request ' + ctx.id + ': fetch threw', e);
          return plain(500, 'Internal Server Error\n');
        },
      );
    }
    return checkResponse(out, ctx, r);
  }
  /** authenticate then authorize: resolves to a rejecting Response or undefined. Rejects on throw. */
  async function runAccess(h: Any, req: Any, ctx: Any): Promise<Any> {
    if (h.authenticate) {
      const out = await h.authenticate(req, ctx);
      if (out != null) {
        if (out instanceof (Response as Any)) return out;
        if (typeof out === 'object' && typeof out.user === 'string') ctx.user = out.user;
        else throw new TypeError('authenticate must return { user: string }, a Response, null or undefined');
      }
    }
    if (h.authorize) {
      const ok = await h.authorize(req, ctx);
      if (ok === false) return plain(403, 'Forbidden\n');
      if (ok == null || ok === true) return undefined;
      if (ok instanceof (Response as Any)) return ok;
      throw new TypeError('authorize must return a boolean, a Response, null or undefined');
    }
    return undefined;
  }

  /** authenticate -> authorize -> fetch; never throws; sync when the handler is. */
  function runPipeline(h: Any, req: Any, ctx: Any, r: Any): Any {
    if (!h.authenticate && !h.authorize) return runFetch(h, req, ctx, r);
    return runAccess(h, req, ctx).then(
      function (rejected: Any) {
        return rejected != null ? rejected : runFetch(h, req, ctx, r);
      },
      function (e: Any) {
        errlog(r, 'request ' + ctx.id + ': authenticate/authorize threw', e);
        return plain(500, 'Internal Server Error\n');
      },
    );
  }
  /** init runs per request in embedded mode (njs builds a VM per request). */
  function runInit(h: Any): Any {
    if (typeof h.init !== 'function') return undefined;
    return h.init({ server: 'nginx', env: env() });
  }
  /** A Uint8Array as something r.send accepts (njs 0.7.9's r.send rejects Buffers): a byte string.
   * String.bytesFrom reads the view's whole buffer, so a partial view is copied out first. */
  function byteString(u: Any): string {
    if (u.byteOffset !== 0 || u.byteLength !== u.buffer.byteLength) u = copyBytes(u, 0, u.length);
    return (String as Any).bytesFrom(u);
  }
  function utf8(s: string): Any {
    return new TextEncoder().encode(s);
  }
  function fail500(r: Any, headSent: boolean): void {
    try {
      if (!headSent) {
        r.headersOut['Content-Type'] = 'text/plain;charset=UTF-8';
        sent = 22;
        r.return(500, 'Internal Server Error\n');
      } else r.finish();
    } catch (e) {
      errlog(r, 'cannot send the error response', e);
    }
    t1 = Date.now();
  }
  function noBody(method: string, status: number): boolean {
    return method === 'HEAD' || status === 204 || status === 304 || (status >= 100 && status < 200);
  }
  function byteLen(s: string): number {
    return encodeURIComponent(s) === s ? s.length : utf8(s).length;
  }
  /**
   * Ends a response whose body failed after its head went out. A complete
   * response would pass truncated data off as whole, so the connection is cut:
   * an unhandled rejection makes njs 0.7.9 finalize the request with NGX_ERROR
   * (njs #658), which closes the connection without the chunked terminator.
   */
  function cut(r: Any, ctx: Any, e: Any): void {
    errlog(r, 'request ' + ctx.id + ': response stream failed after the head was sent; closing the connection', e);
    t1 = Date.now();
    Promise.reject(new Error('tsgi: response stream failed'));
  }
  /**
   * Streams a ReadableStream body: the head goes out with the first chunk (so a
   * stream that fails before its first byte still gets a bare 500), then one
   * r.send per chunk (<= 64 KB each), then r.finish.
   */
  function pump(r: Any, stream: Any, ctx: Any, status: number, l: string[]): void {
    let reader: Any;
    try {
      reader = stream.getReader();
    } catch (e) {
      errlog(r, 'request ' + ctx.id + ': response body stream is locked', e);
      fail500(r, false);
      return;
    }
    let head = false;
    sent = 0;
    function step(): void {
      reader.read().then(
        function (res: Any) {
          let c: Any;
          if (!res.done) {
            c = res.value;
            if (typeof c === 'string') c = utf8(c);
            else if (!(c instanceof Uint8Array)) {
              if (isView(c)) c = new Uint8Array(c.buffer, c.byteOffset, c.byteLength);
              else c = null;
            }
            if (c === null) {
              reader.cancel(new TypeError('stream chunk is not a Uint8Array')).then(undefined, function () {});
              if (head) cut(r, ctx, new TypeError('stream chunk is not a Uint8Array'));
              else {
                errlog(r, 'request ' + ctx.id + ': response stream chunk is not a Uint8Array');
                fail500(r, false);
              }
              return;
            }
          }
          try {
            if (!head) {
              setHead(r, status, l, res.done ? 0 : -1);
              head = true;
              r.sendHeader();
            }
            if (res.done) {
              r.finish();
              t1 = Date.now();
              return;
            }
            for (let off = 0; off < c.length; off += CHUNK) r.send(byteString(c.subarray(off, Math.min(c.length, off + CHUNK))));
            sent += c.length;
          } catch (_e) {
            // The client is gone: stop the source.
            reader.cancel(undefined).then(undefined, function () {});
            t1 = Date.now();
            return;
          }
          step();
        },
        function (e: Any) {
          if (head) cut(r, ctx, e);
          else {
            errlog(r, 'request ' + ctx.id + ': response stream failed before its first chunk', e);
            fail500(r, false);
          }
        },
      );
    }
    step();
  }
  /** Runs `step(ctx)` after `init` (if any); any throw ends in a bare 500. */
  function guarded(h: Any, r: Any, ctx: Any, step: Any): void {
    let pending: Any;
    try {
      pending = runInit(h);
    } catch (e) {
      errlog(r, 'request ' + ctx.id + ': init threw', e);
      fail500(r, false);
      return;
    }
    if (isThen(pending)) {
      Promise.resolve(pending).then(
        function () {
          step(ctx);
        },
        function (e: Any) {
          errlog(r, 'request ' + ctx.id + ': init threw', e);
          fail500(r, false);
        },
      );
    } else step(ctx);
  }
  function deliver(r: Any, out: Any, ctx: Any): void {
    if (isThen(out)) {
      out.then(
        function (res: Any) {
          respond(r, res, ctx);
        },
        function (e: Any) {
          errlog(r, 'request ' + ctx.id + ': pipeline failed', e);
          fail500(r, false);
        },
      );
    } else respond(r, out, ctx);
  }
  function setUserVar(r: Any, user: Any): void {
    if (typeof user !== 'string') return;
    try {
      r.variables.tsgi_user = user;
    } catch (_e) {
      /* `js_var $tsgi_user;` not declared: the log hook still sees ctx.user */
    }
  }
  /**
   * auth_request understands 2xx (allow), 401 and 403; anything else becomes a 500.
   * So: allowed -> 204 with X-Tsgi-User; 401 -> 401 (WWW-Authenticate is copied
   * to the client by auth_request); every other rejection -> 403, with the
   * handler's status in X-Tsgi-Status for configs that want to map it back.
   */
  function authReply(r: Any, rej: Any, ctx: Any): void {
    try {
      if (rej == null) {
        if (typeof ctx.user === 'string') r.headersOut['X-Tsgi-User'] = ctx.user;
        r.return(204);
        return;
      }
      const st = rej.status;
      const l = headerList(rej);
      for (let i = 0; i < l.length; i += 2) {
        if (l[i] === 'www-authenticate') r.headersOut['WWW-Authenticate'] = l[i + 1];
      }
      r.headersOut['X-Tsgi-Status'] = String(st);
      r.return(st === 401 ? 401 : 403);
    } catch (e) {
      errlog(r, 'request ' + ctx.id + ': cannot send the auth reply', e);
      fail500(r, false);
    }
  }

  bxCache = { errlog: errlog, plain: plain, isThen: isThen, env: env, checkResponse: checkResponse, runFetch: runFetch, runPipeline: runPipeline, runInit: runInit, byteString: byteString, utf8: utf8, fail500: fail500, noBody: noBody, byteLen: byteLen, cut: cut, pump: pump, guarded: guarded, deliver: deliver, setUserVar: setUserVar, authReply: authReply, runAccess: runAccess };
  return bxCache;
}
