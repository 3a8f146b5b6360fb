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
 * Entry: `export default bridge(handler)` -> { content, plain, fetch, auth, log }.
 */

import { Response, URL as URL_, lazyRequest, headerList, ReadableStream, HB } from './webapi.js';
import {
  BAD_REQUEST_TEXT,
  FIRST_CHUNK_WAIT_MS,
  FORBIDDEN_TEXT,
  INTERNAL_ERROR_TEXT,
  MAX_RESPONSE_HEADERS,
  MAX_RESPONSE_HEADER_BYTES,
  PLAIN_TEXT_TYPE,
  contentLengthRule,
  headersFit,
  isAscii,
  isHopByHop,
  requestAuthority,
  sendsBody,
} from '../../../core/src/wire.js';
import { handlerProblem } from '../../../core/src/handler-shape.js';

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
let curAuth: Any = null; // authorityOf(): the request's authority and path, or its refusal
let curPlain = 0; // 1: the config's map vetted the request line and Host, 2: it did not, 0: not asked yet
let curReq: Any = null; // the handler's Request of `content`
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

/**
 * The request's authority and origin-form path (wire.ts requestAuthority), or
 * its refusal; once per request (each request has its own VM). A request the
 * config's map vetted in C (config.ts plainHostMap: an origin-form target and
 * a Host of plain characters) has its Host as authority; anything else gets
 * the full check.
 */
function authorityOf(r: Any): Any {
  if (curAuth !== null) return curAuth;
  if (curPlain === 0) curPlain = r.variables.tsgi_plain_host === '1' ? 1 : 2;
  curAuth = curPlain === 1 ? { authority: r.headersIn.Host, path: r.variables.request_uri } : BX().checkAuthority(r);
  return curAuth;
}

/** Absolute URL: the connection's scheme + the authority + the raw path, normalised like `new URL()`. */
function urlOf(r: Any): string {
  const a = authorityOf(r);
  const raw = r.variables.scheme + '://' + (a.status === 400 ? r.variables.host : a.authority) + (a.path || '/');
  try {
    return new (URL_ as Any)(raw).href;
  } catch (_e) {
    return raw;
  }
}

/**
 * Flat [lowerName, value, ...] from r.rawHeadersIn, repeats preserved. njs
 * hands header bytes over as byte strings (a byte per character as far as
 * charCodeAt goes, raw bytes when the string is written out); each byte
 * becomes the character of that code, as Node reads headers (latin1). One
 * join, one conversion and one split for the whole list: values never hold LF.
 */
function headersOf(r: Any): string[] {
  const raw = r.rawHeadersIn;
  let l: Any = [];
  for (let i = 0; i < raw.length; i++) l.push(String(raw[i][0]).toLowerCase(), String(raw[i][1]));
  if (l.length > 0) {
    const joined = l.join('\n');
    const text = typeof joined.fromBytes === 'function' ? joined.fromBytes() : joined;
    if (text !== joined) {
      l = text.split('\n');
      if (Buffer.byteLength(text) !== text.length) l._l1 = true;
    }
  }
  return l;
}

/** The handler's Request; null when the request line or Host is refused (the caller answers 400). */
function requestOf(r: Any): Any {
  const m = r.method;
  curMethod = m;
  // A request the config's map vetted (the `plain` entry knows it) needs no check: its URL stays lazy.
  if (curPlain === 0) curPlain = r.variables.tsgi_plain_host === '1' ? 1 : 2;
  const a = curPlain === 1 ? null : authorityOf(r);
  if (a !== null && a.status === 400) {
    try {
      r.log('[tsgi] request refused (400): ' + a.reason);
    } catch (_e) {
      /* logging is best effort */
    }
    return null;
  }
  let body: Any = null;
  if (m !== 'GET' && m !== 'HEAD') {
    const b = r.requestBuffer; // undefined when the request has no body
    // A plain Uint8Array view (njs Buffers differ from Uint8Array in slice/buffer details).
    if (b !== undefined && b !== null) body = b.length === 0 ? new Uint8Array(0) : new Uint8Array(b.buffer, b.byteOffset, b.length);
  }
  return lazyRequest(r, m, body, urlOf, headersOf);
}

// ---------------------------------------------------------------- writing the response

/**
 * Writes headers into r.headersOut (status -1: r.return sets it; bodyLen -1:
 * no Content-Length of ours; keepLength: the handler's Content-Length stays,
 * wire.ts contentLengthRule). Each name is written once, repeats joined with
 * ", " (Set-Cookie lines kept apart): one pass groups them in an object keyed
 * by name, so the work is linear in the number of headers (njs 0.7.9 has no
 * Map). Every r.headersOut store walks nginx's header list; the limits of
 * headersFit (checked before anything is written) bound that walk.
 */
function setHead(r: Any, status: number, l: Any, latin1: boolean, bodyLen: number, keepLength: boolean): void {
  const out = r.headersOut;
  const n = l.length;
  if (n === 2) {
    // One header (usually Content-Type, which needs no further look): nothing to group.
    const n0 = l[0];
    if (n0 === 'content-type' || (!isHopByHop(n0) && (n0 !== 'content-length' || keepLength))) out[n0] = latin1 ? BX().wireValue(l[1]) : l[1];
  } else if (n > 2) {
    const at: Any = { __proto__: null };
    const names: string[] = [];
    const vals: Any[] = [];
    for (let i = 0; i < n; i += 2) {
      const name = l[i];
      // Hop-by-hop names never; Content-Length only when the wire rule keeps the handler's.
      if (isHopByHop(name) || (name === 'content-length' && !keepLength)) continue;
      const k = at[name];
      if (k === undefined) {
        at[name] = names.length;
        names.push(name);
        vals.push(name === 'set-cookie' ? [l[i + 1]] : l[i + 1]);
      } else if (name === 'set-cookie') vals[k].push(l[i + 1]);
      else vals[k] = vals[k] + ', ' + l[i + 1];
    }
    for (let j = 0; j < names.length; j++) out[names[j]] = latin1 ? BX().wireValue(vals[j]) : vals[j];
  }
  if (bodyLen >= 0) out['Content-Length'] = String(bodyLen);
  if (status >= 0) r.status = status;
}

/** Sends `res` on r. Never throws: any failure becomes a bare 500 (or an ended response). */
function respond(r: Any, res: Any, ctx: Any): void {
  let headSent = false;
  try {
    const fb = res._b;
    const fs = res.status;
    const hl = res._hd ? res._hd._l : res._h; // headerList(res), without the call
    const latin1 = hl._l1 === true;
    // One short header (the usual Content-Type) is within the limits without counting.
    if ((hl.length !== 2 || hl[0].length + hl[1].length > 4096) && !headersFit(hl)) {
      BX().errlog(r, 'request ' + ctx.id + ': response headers over the limit (' + MAX_RESPONSE_HEADERS + ' lines, ' + MAX_RESPONSE_HEADER_BYTES + ' bytes)');
      BX().fail500(r, false);
      return;
    }
    if (typeof fb === 'string' && fb !== '' && fb.length <= 21845 && fs >= 200 && fs < 300) {
      // Hot path: small text body, 2xx: one r.return (at most 64 KB of UTF-8), which sets the status.
      // (Response.error() has status 0, and a 204 never has a body: neither gets here.)
      setHead(r, -1, hl, latin1, -1, false);
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
    let b = res._b;
    const skip = !sendsBody(r.method, status);
    if (b instanceof (ReadableStream as Any)) {
      if (skip) {
        // HEAD/204/304: the body is never read; cancel it now so an endless stream stops.
        if (!b.locked) b.cancel(undefined).then(undefined, function () {});
        setHead(r, status, hl, latin1, -1, contentLengthRule(status, false) === 'handler');
        headSent = true;
        sent = 0;
        r.sendHeader();
        r.finish();
        t1 = Date.now();
        return;
      }
      BX().pump(r, b, ctx, status, hl);
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
    const rule = contentLengthRule(status, true);
    if (!redirect && rule === 'server' && len !== 0 && len <= CHUNK && b !== '') {
      // Fast path: small non-empty body, non-redirect status (r.return takes a redirect's
      // body as its Location): one r.return(), nginx sets Content-Length.
      setHead(r, status, hl, latin1, -1, false);
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
    setHead(r, status, hl, latin1, rule === 'server' ? len : -1, rule === 'handler');
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
  const req = curReq;
  let out: Any;
  try {
    out = h.authenticate || h.authorize ? BX().runPipeline(h, req, ctx, r) : h.fetch(req, ctx);
  } catch (e) {
    BX().errlog(r, 'request ' + ctx.id + ': fetch threw', e);
    out = BX().err500();
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
  let req: Any;
  try {
    req = requestOf(r);
  } catch (e) {
    BX().errlog(r, 'request ' + ctx.id + ': cannot read the request', e);
    BX().fail500(r, false);
    return;
  }
  // A refused request line or Host: 400 before init and the handler.
  if (req === null) return BX().refuse(r, ctx);
  curReq = req;
  if (typeof H.init === 'function') BX().guarded(H, r, ctx, contentStep);
  else contentStep(ctx);
}

/**
 * js_content inside `if ($tsgi_plain_host)` (the generated config): content for a
 * request the config's map vetted in C, so the bridge does not ask again.
 */
function plainContent(r: Any): void {
  curPlain = 1;
  content(r);
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
      const req = requestOf(r);
      if (req === null) return BX().refuse(r, c);
      out = BX().runFetch(h, req, c, r);
    } catch (e) {
      BX().errlog(r, 'request ' + c.id + ': bridge failed', e);
      out = BX().err500();
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
      // $request_method (the main request's); the request line and headers are the client's too.
      // A refused request line or Host is a rejection with 400 (auth_request passes on 401/403 only).
      if (authorityOf(r).status === 400) out = BX().plain(400, BAD_REQUEST_TEXT);
      else out = BX().runAccess(h, lazyRequest(r, r.variables.request_method || r.method, null, urlOf, headersOf), c);
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
    // A request refused with 400 before the handler is not logged to it.
    if (authorityOf(r).status === 400) return '';
    const same = curCtx !== null; // content ran in this request's VM
    const ctx = same ? curCtx : makeCtx(r);
    const v = r.variables;
    const status = Number(v.status) || 0;
    let bytes = sentStr !== null ? BX().byteLen(sentStr) : sent >= 0 ? sent : Number(v.body_bytes_sent) || 0;
    if (!sendsBody(r.method, status)) bytes = 0;
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
 * js_content of the build's one-shot load check (src/build.ts): the module
 * loaded in njs itself (a throw at load never gets here), the handler's shape,
 * and `init` when asked (?init=1, as `tsgi nginx run` starts). The answer is
 * one line: `tsgi-check: ok` (200) or `tsgi-check: <problem>` (500).
 */
function checkEntry(r: Any): void {
  const problem = handlerProblem(H);
  if (problem !== null) return r.return(500, 'tsgi-check: ' + problem);
  if (r.args.init !== '1') return r.return(200, 'tsgi-check: ok');
  const failed = function (e: Any): void {
    r.return(500, 'tsgi-check: init failed: ' + String(e && e.message !== undefined ? e.message : e).split('\n')[0]);
  };
  let p: Any;
  try {
    p = BX().runInit(H);
  } catch (e) {
    return failed(e);
  }
  Promise.resolve(p).then(function () {
    r.return(200, 'tsgi-check: ok');
  }, failed);
}

/**
 * Wraps a tsgi handler into the functions nginx calls:
 *   content(r) js_content: authenticate -> authorize -> fetch, writes the response
 *   plain(r)   the same, inside `if ($tsgi_plain_host)`: the request line and Host were vetted in C
 *   fetch(r)   js_content behind auth_request: fetch only, ctx.user from $tsgi_user
 *   auth(r)    js_content of an internal auth_request location: authenticate + authorize only
 *   log(r)     js_set handler for a variable used in log_format: runs `log`, returns ''
 *   check(r)   the build's load check: the handler's shape (and init on ?init=1)
 * The entry points are top-level declarations, not closures over `h`: njs 0.7.9 re-runs the
 * module body for every request, and a declaration is the cheapest function to re-create.
 */
export function bridge(h: Any): Any {
  H = h;
  timed = typeof h.log === 'function';
  return { content: content, plain: plainContent, fetch: fetchOnly, auth: authOnly, log: logHook, check: checkEntry };
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
    return new (Response as Any)(text, { status: status, headers: { 'content-type': PLAIN_TEXT_TYPE } });
  }
  function err500(): Any {
    return plain(500, INTERNAL_ERROR_TEXT);
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
    return err500();
  }
  function runFetch(h: Any, req: Any, ctx: Any, r: Any): Any {
    let out: Any;
    try {
      out = h.fetch(req, ctx);
    } catch (e) {
      errlog(r, 'request ' + ctx.id + ': fetch threw', e);
      return err500();
    }
    if (isThen(out)) {
      return Promise.resolve(out).then(
        function (v: Any) {
          return checkResponse(v, ctx, r);
        },
        function (e: Any) {
          errlog(r, 'request ' + ctx.id + ': fetch threw', e);
          return err500();
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
      if (ok === false) return plain(403, FORBIDDEN_TEXT);
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
        return err500();
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
    if (u.byteOffset !== 0 || u.byteLength !== u.buffer.byteLength) u = HB().copyBytes(u, 0, u.length);
    return (String as Any).bytesFrom(u);
  }
  function utf8(s: string): Any {
    return new TextEncoder().encode(s);
  }
  function fail500(r: Any, headSent: boolean): void {
    try {
      if (!headSent) {
        r.headersOut['Content-Type'] = PLAIN_TEXT_TYPE;
        sent = INTERNAL_ERROR_TEXT.length;
        r.return(500, INTERNAL_ERROR_TEXT);
      } else r.finish();
    } catch (e) {
      errlog(r, 'cannot send the error response', e);
    }
    t1 = Date.now();
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
  /** The Content-Length a handler declared for a stream (wire.ts keeps it), or -1. */
  function declaredLength(l: Any): number {
    for (let i = 0; i < l.length; i += 2) {
      if (l[i] !== 'content-length') continue;
      const v = l[i + 1];
      // Only a plain decimal is kept; anything else is dropped (the stream goes out chunked).
      return /^[0-9]{1,15}$/.test(v) ? Number(v) : -1;
    }
    return -1;
  }
  /**
   * Streams a ReadableStream body. The head goes out with the first chunk or
   * after FIRST_CHUNK_WAIT_MS, whichever comes first (wire.ts): a stream that
   * fails before that gets a bare 500, one that waits (SSE) gets its head
   * promptly. Then one r.send per chunk (<= 64 KB each), then r.finish. A
   * declared Content-Length is kept, and a stream that delivers another count
   * is cut (a bare 500 if the head has not left).
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
    const want = declaredLength(l);
    let head = false;
    let over = false; // the response ended (cut, failed or finished): late callbacks do nothing
    sent = 0;
    let timer: Any = setTimeout(function () {
      timer = null;
      if (!head && !over) sendHead(-1);
    }, FIRST_CHUNK_WAIT_MS);
    function stopTimer(): void {
      if (timer !== null) clearTimeout(timer);
      timer = null;
    }
    /** false when the client is gone. */
    function sendHead(bodyLen: number): boolean {
      head = true;
      try {
        setHead(r, status, l, (l as Any)._l1 === true, want >= 0 ? -1 : bodyLen, want >= 0);
        r.sendHeader();
        return true;
      } catch (_e) {
        gone();
        return false;
      }
    }
    function gone(): void {
      // The client is gone: stop the source.
      over = true;
      stopTimer();
      reader.cancel(undefined).then(undefined, function () {});
      t1 = Date.now();
    }
    function failed(why: string, e: Any): void {
      over = true;
      stopTimer();
      if (head) cut(r, ctx, e);
      else {
        errlog(r, 'request ' + ctx.id + ': ' + why, e);
        fail500(r, false);
      }
    }
    function step(): void {
      reader.read().then(
        function (res: Any) {
          if (over) return;
          if (res.done) {
            stopTimer();
            if (want >= 0 && sent !== want) return failed('response stream ended after ' + sent + ' of its declared ' + want + ' bytes', undefined);
            if (!head && !sendHead(0)) return;
            over = true;
            try {
              r.finish();
            } catch (_e) {
              /* the client is gone */
            }
            t1 = Date.now();
            return;
          }
          let c = res.value;
          if (typeof c === 'string') c = utf8(c);
          else if (!(c instanceof Uint8Array)) c = HB().isView(c) ? new Uint8Array(c.buffer, c.byteOffset, c.byteLength) : null;
          if (c === null) {
            reader.cancel(new TypeError('stream chunk is not a Uint8Array')).then(undefined, function () {});
            return failed('response stream chunk is not a Uint8Array', new TypeError('stream chunk is not a Uint8Array'));
          }
          if (want >= 0 && sent + c.length > want) {
            reader.cancel(undefined).then(undefined, function () {});
            return failed('response stream delivers more than its declared ' + want + ' bytes', undefined);
          }
          stopTimer();
          if (!head && !sendHead(-1)) return;
          try {
            for (let off = 0; off < c.length; off += CHUNK) r.send(byteString(c.subarray(off, Math.min(c.length, off + CHUNK))));
          } catch (_e) {
            return gone();
          }
          sent += c.length;
          step();
        },
        function (e: Any) {
          if (!over) failed('response stream failed before its head was sent', e);
        },
      );
    }
    step();
  }
  /** U+0080..U+00FF as one byte each (latin1, wire.ts): r.headersOut takes a Uint8Array's bytes as they are. */
  function wireValue(v: Any): Any {
    if (typeof v !== 'string') {
      const out: Any[] = [];
      for (let i = 0; i < v.length; i++) out.push(wireValue(v[i]));
      return out;
    }
    if (isAscii(v)) return v;
    const u = new Uint8Array(v.length);
    for (let i = 0; i < v.length; i++) u[i] = v.charCodeAt(i);
    return u;
  }
  /**
   * wire.ts requestAuthority on the request line and Host: an absolute-form
   * target's authority wins over Host, userinfo or a malformed authority is
   * refused. $request_uri drops an absolute-form target's authority, so the
   * target comes from the request line.
   */
  function checkAuthority(r: Any): Any {
    const v = r.variables;
    const line: string = v.request || '';
    const sp = line.indexOf(' ');
    const end = line.lastIndexOf(' ');
    const target = end > sp ? line.slice(sp + 1, end) : line.slice(sp + 1);
    const host = r.headersIn.Host; // nginx itself refuses a second Host line
    const http10 = r.httpVersion !== '1.1';
    let fallback = '';
    if (host === undefined && http10) {
      // HTTP/1.0 without Host: the server's own address.
      const addr: string = v.server_addr || '127.0.0.1';
      fallback = (addr.indexOf(':') >= 0 ? '[' + addr + ']' : addr) + ':' + v.server_port;
    }
    return requestAuthority(target, host === undefined ? [] : [host], http10, fallback);
  }
  /** A request refused before the handler (wire.ts requestAuthority): 400. */
  function refuse(r: Any, ctx: Any): void {
    respond(r, plain(400, BAD_REQUEST_TEXT), ctx);
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

  bxCache = { errlog: errlog, plain: plain, isThen: isThen, env: env, checkResponse: checkResponse, runFetch: runFetch, runPipeline: runPipeline, runInit: runInit, byteString: byteString, utf8: utf8, fail500: fail500, err500: err500, byteLen: byteLen, cut: cut, pump: pump, wireValue: wireValue, refuse: refuse, checkAuthority: checkAuthority, guarded: guarded, deliver: deliver, setUserVar: setUserVar, authReply: authReply, runAccess: runAccess };
  return bxCache;
}
