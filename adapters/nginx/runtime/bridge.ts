/**
 * The njs side of tsgi's nginx embedded mode: turns an nginx request into the
 * handler's Request, runs the tsgi pipeline (pipeline.ts, core's ported) and
 * writes the Response back through r.*.
 *
 * njs 0.7.9 runs this module's top level again for every request, in a VM of
 * that request's own, and keeps that VM until the request is freed, log phase
 * included. So the module variables below are the request's state, and `log`
 * (a js_set run in the log phase) sees what `content` left.
 *
 * Layout: the per-request state; the entry points nginx calls; writing the
 * response (respond, setHead, and pump for streams); helpers off the usual
 * request's path (coldPath()).
 *
 * Entry: `export default bridge(handler)` -> { content, plain, fetch, auth, log, check }.
 */

import {
  BAD_REQUEST_TEXT,
  FIRST_CHUNK_WAIT_MS,
  INTERNAL_ERROR_TEXT,
  MAX_RESPONSE_HEADERS,
  MAX_RESPONSE_HEADER_BYTES,
  PLAIN_TEXT_TYPE,
  contentLengthRule,
  headersFit,
  isAscii,
  isHopByHop,
  sendsBody,
} from '@tsgi/core/src/wire.js';
import { GATEWAY_TIMEOUT_TEXT, serverTimingValue } from '@tsgi/core/src/server-timing.js';
import type { Authority } from './incoming.js';
import { incoming } from './incoming.js';
import { fetchThen, pipeline } from './pipeline.js';
import type { HeaderList, NjsRequest, RuntimeContext, RuntimeHandler, RuntimeRequest, RuntimeResponse, RuntimeStream } from './types.js';
import { lazyRequest } from './webapi/request.js';
import { Response, installResponse } from './webapi/response.js';
import { ReadableStream } from './webapi/stream.js';
import { URL } from './webapi/url.js';
import { shared } from './webapi/shared.js';

type Res = RuntimeResponse;
type ResponseCtor = new (body?: unknown, init?: unknown) => Res;

/** Largest single r.send()/r.return() payload (njs 0.7.9 truncates big sends, #825). */
const CHUNK = 65536;

// ================================================================ per-request state
// Primitives and nulls only (each costs a few instructions to re-create per request).
let cur: NjsRequest = null as unknown as NjsRequest; // the request of the js_content call
let curCtx: RuntimeContext | null = null; // its context
let curMethod = ''; // r.method, read once (every read of an external is a native call)
let curReq: RuntimeRequest | null = null; // the handler's Request
let curAuthority: Authority | null = null; // authorityOf(): the request's authority and path, or its refusal
let vetted = 0; // 1: the config's map vetted the request line and Host in C, 2: it did not, 0: not asked yet
let t0 = 0; // pipeline start (ms), only when the handler has a log hook
let t1 = 0; // response end (ms)
let sent = -1; // body bytes the bridge wrote, -1: none written by us
let sentText: string | null = null; // a text body sent by r.return: its byte length is counted only if `log` asks
// The handler, set by bridge() as the module loads (so: again for every request).
let H: RuntimeHandler = null as unknown as RuntimeHandler;
// Operations (issue 12), build-time constants handed to bridge() (the rest of their state is coldPath()'s):
let deadlineMs = 0; // the request deadline (ms; 0: none; -1: it passed, whatever the handler answers later is dropped)
let timing = false; // Server-Timing
let deadline: ReturnType<typeof setTimeout> | null = null; // the deadline's timer, while an answer is awaited

// ================================================================ entry points

/**
 * Wraps a tsgi handler into the functions nginx calls:
 *   content(r) js_content: authenticate -> authorize -> fetch, writes the response
 *   plain(r)   the same, inside `if ($tsgi_plain_host)`: the request line and Host were vetted in C
 *   fetch(r)   js_content behind auth_request: fetch only, ctx.user from $tsgi_user
 *   auth(r)    js_content of an internal auth_request location: authenticate + authorize only
 *   log(r)     js_set handler for a variable used in log_format: runs `log`, returns ''
 *   check(r)   the build's load check: the handler's shape (and init on ?init=1)
 * The entry points are top-level declarations, not closures over `h`: a declaration is the
 * cheapest function for njs 0.7.9 to re-create per request.
 */
export function bridge(h: RuntimeHandler, requestTimeoutMs?: number, serverTiming?: boolean): Record<string, (r: NjsRequest) => unknown> {
  H = h;
  if (requestTimeoutMs) deadlineMs = requestTimeoutMs;
  if (serverTiming) timing = true;
  return { content: content, plain: plainContent, fetch: fetchOnly, auth: authOnly, log: logHook, check: checkEntry };
}

/** js_content: authenticate -> authorize -> fetch, writes the response. */
function content(r: NjsRequest): void {
  startRequest(r);
  const req = requestOf(r);
  // A refused request line or Host was answered (400), before init and the handler.
  if (req === null) return;
  curReq = req;
  const ctx = curCtx!;
  if (typeof H.init === 'function') coldPath().afterInit(r, ctx, contentStep);
  else contentStep(ctx);
  // Not answered yet (an async handler): a deadline. Its timer is also what keeps njs from ending
  // the request at once (with 500) when the handler's promise never settles.
  if (deadlineMs > 0 && sent < 0 && sentText === null) {
    deadline = setTimeout(function () {
      coldPath().expire();
    }, deadlineMs);
  }
}

/** js_content inside `if ($tsgi_plain_host)` (the generated config): the config's map vetted
 * the request line and Host in C, so the bridge does not ask again. */
function plainContent(r: NjsRequest): void {
  vetted = 1;
  content(r);
}

function contentStep(ctx: RuntimeContext): void {
  let h = H;
  // The usual handler has no access hooks: fetch alone, its outcome straight to answer().
  if (!h.authenticate && !h.authorize) return fetchThen(h, curReq!, ctx, errorLog, answer);
  if (timing) h = coldPath().timedHandler();
  const out = pipeline().runPipeline(h, curReq!, ctx, errorLog);
  if (out instanceof (Response as unknown as ResponseCtor)) answer(out);
  else out.then(answer);
}

/** The pipeline's outcome, written to the client. */
function answer(res: Res): void {
  const ctx = curCtx!;
  if (ctx.user !== undefined) coldPath().setUserVar(cur, ctx.user);
  respond(cur, res, ctx);
}

/** js_content behind auth_request: fetch only, ctx.user from $tsgi_user. */
function fetchOnly(r: NjsRequest): void {
  const ctx = startRequest(r);
  let u: unknown;
  try {
    u = r.variables.tsgi_user;
  } catch (_e) {
    u = undefined;
  }
  if (typeof u === 'string' && u !== '') ctx.user = u;
  coldPath().afterInit(r, ctx, function (c: RuntimeContext) {
    const req = requestOf(r);
    if (req === null) return;
    curReq = req;
    fetchThen(H, req, c, errorLog, answer);
  });
  if (deadlineMs > 0 && sent < 0 && sentText === null) coldPath().arm();
}

/** js_content of an internal auth_request location: authenticate + authorize only (core runPhase
 * 'access'), answered with core's accessReply mapping. */
function authOnly(r: NjsRequest): void {
  const ctx = startRequest(r);
  coldPath().afterInit(r, ctx, function (c: RuntimeContext) {
    // auth_request subrequests carry no body and are GETs: the client's method is
    // $request_method (the main request's); the request line and headers are the client's too.
    // A refused request line or Host is a refusal with 400, which accessReply maps to 403.
    let out: Res | undefined | Promise<Res | undefined>;
    try {
      if ('status' in authorityOf(r)) out = pipeline().plainResponse(400, BAD_REQUEST_TEXT);
      else {
        const req = lazyRequest(r, String(r.variables.request_method || r.method), null, urlOf, headersOf);
        curReq = req; // its signal aborts at the deadline
        out = pipeline().runPhase(H, 'access', req, c, errorLog);
      }
    } catch (e) {
      errorLog('request ' + c.id + ': authenticate/authorize threw', e);
      out = pipeline().plainResponse(500, INTERNAL_ERROR_TEXT);
    }
    Promise.resolve(out).then(function (refused: Res | undefined) {
      coldPath().accessAnswer(r, refused, c);
    });
  });
  // At the deadline auth_request gets 504, which it turns into 500 (as with workers mode's own 504).
  if (deadlineMs > 0 && sent < 0) coldPath().arm();
}

/** js_set handler for a variable used in log_format: runs `log` (core runLog), returns ''. */
function logHook(r: NjsRequest): string {
  const h = H;
  if (typeof h.log !== 'function') return '';
  try {
    // A request refused with 400 before the handler is not logged to it.
    if ('status' in authorityOf(r)) return '';
    const same = curCtx !== null; // content ran in this request's VM
    const ctx = same ? curCtx! : startRequest(r);
    const v = r.variables;
    const status = Number(v.status) || 0;
    let bytes = sentText !== null ? coldPath().byteLength(sentText) : sent >= 0 ? sent : Number(v.body_bytes_sent) || 0;
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
    pipeline().runLog(h, entry, ctx, errorLog);
  } catch (e) {
    errorLog('log threw', e);
  }
  return '';
}

/**
 * js_content of the build's one-shot load check (src/build.ts): the module
 * loaded in njs itself (a throw at load never gets here), the handler's shape
 * (core handlerProblem), and `init` when asked (?init=1, as `tsgi nginx run`
 * starts). The answer is one line: `tsgi-check: ok` (200) or `tsgi-check: <problem>` (500).
 */
function checkEntry(r: NjsRequest): void {
  const problem = pipeline().handlerProblem(H);
  if (problem !== null) return r.return(500, 'tsgi-check: ' + problem);
  // njs has no WebSocket server: such a handler is refused (src/build.ts WEBSOCKET_PROBLEM words the one line).
  if ((H as { websocket?: unknown }).websocket !== undefined) return r.return(500, 'tsgi-check: websocket hooks');
  if (r.args.init !== '1') return r.return(200, 'tsgi-check: ok');
  const failed = function (e: unknown): void {
    const m = e && (e as Error).message !== undefined ? (e as Error).message : e;
    r.return(500, 'tsgi-check: init failed: ' + String(m).split('\n')[0]);
  };
  let p: unknown;
  try {
    p = coldPath().runInit();
  } catch (e) {
    return failed(e);
  }
  Promise.resolve(p).then(function () {
    r.return(200, 'tsgi-check: ok');
  }, failed);
}

// ================================================================ the request

/** The request's state and context (ctx), for every entry point. */
function startRequest(r: NjsRequest): RuntimeContext {
  cur = r;
  // Only `log` reads the duration: Date.now() is not free in njs 0.7.9.
  if (typeof H.log === 'function') t0 = Date.now();
  if (timing) coldPath().startTiming();
  // Every handler builds a Response: its prototype now saves moving the first one's.
  installResponse();
  let id: string | null = null;
  // id, env and ip are getters: $request_id alone costs ~1 µs to generate, and reading
  // r.remoteAddress (~1,000 instructions) costs more than the getter (~550) on a request that never asks.
  curCtx = {
    server: 'nginx',
    get ip() {
      return r.remoteAddress;
    },
    get id() {
      if (id === null) id = String(r.variables.request_id || '');
      return id;
    },
    user: undefined,
    get env() {
      return incoming().environment();
    },
    // The mounted location's `set $tsgi_base_path` (config.ts); read only when asked for.
    get basePath() {
      return String(r.variables.tsgi_base_path || '');
    },
    waitUntil: waitUntil,
  };
  return curCtx;
}

/** ctx.waitUntil: njs keeps the request (and its VM) alive while timers/fetches are pending,
 * so the work runs to completion; only a rejection needs handling. */
function waitUntil(p: unknown): void {
  const ctx = curCtx;
  try {
    Promise.resolve(p).then(undefined, function (e: unknown) {
      errorLog('request ' + (ctx ? ctx.id : '?') + ': waitUntil promise rejected', e);
    });
  } catch (_e) {
    /* never throws */
  }
}

/** The error log of the current request (core ErrorLogger). */
function errorLog(message: string, error?: unknown): void {
  let detail = '';
  if (error !== undefined) detail = ': ' + (error && (error as Error).stack ? (error as Error).stack : String(error));
  try {
    cur.error('[tsgi] ' + message + detail);
  } catch (_e) {
    /* the request may be gone */
  }
}

/**
 * The request's authority and origin-form path, or its refusal; once per
 * request. A request the config's map vetted (config.ts plainHostMap: an
 * origin-form target and a Host of plain characters) has its Host as
 * authority; anything else gets the full check (incoming.ts).
 */
function authorityOf(r: NjsRequest): Authority {
  if (curAuthority !== null) return curAuthority;
  if (vetted === 0) vetted = r.variables.tsgi_plain_host === '1' ? 1 : 2;
  curAuthority =
    vetted === 1 ? { authority: String(r.headersIn.Host), path: String(r.variables.request_uri), absolute: false } : incoming().checkAuthority(r);
  return curAuthority;
}

/** Absolute URL: the connection's scheme + the authority + the raw path, normalised like `new URL()`. */
function urlOf(r: NjsRequest): string {
  const a = authorityOf(r);
  const raw = r.variables.scheme + '://' + ('status' in a ? String(r.variables.host) : a.authority + (a.path || '/'));
  try {
    return new (URL as unknown as new (u: string) => { href: string })(raw).href;
  } catch (_e) {
    return raw;
  }
}

/** The request's header list; Host is an absolute-form target's authority (RFC 9112 3.2.2). */
function headersOf(r: NjsRequest): HeaderList {
  const a = authorityOf(r);
  return incoming().headerList(r, 'status' in a || !a.absolute ? null : a.authority);
}

/** The handler's Request; null when the request was answered instead (400 for a refused
 * request line or Host, the bare 500 when it cannot be read). */
function requestOf(r: NjsRequest): RuntimeRequest | null {
  try {
    const m = r.method;
    curMethod = m;
    // A request the config's map vetted (the `plain` entry says so) needs no check: its URL stays lazy.
    if (vetted === 0) vetted = r.variables.tsgi_plain_host === '1' ? 1 : 2;
    if (vetted !== 1) {
      const a = authorityOf(r);
      if ('status' in a) {
        try {
          r.log('[tsgi] request refused (400): ' + a.reason);
        } catch (_e) {
          /* logging is best effort */
        }
        coldPath().refuse(r);
        return null;
      }
    }
    let body: Uint8Array | null = null;
    if (m !== 'GET' && m !== 'HEAD') {
      const b = r.requestBuffer; // undefined when the request has no body
      // A plain Uint8Array view (njs Buffers differ from Uint8Array in slice/buffer details).
      if (b !== undefined && b !== null) body = b.length === 0 ? new Uint8Array(0) : new Uint8Array(b.buffer, b.byteOffset, b.length);
    }
    return lazyRequest(r, m, body, urlOf, headersOf);
  } catch (e) {
    errorLog('request ' + curCtx!.id + ': cannot read the request', e);
    coldPath().fail500(r);
    return null;
  }
}

// ================================================================ writing the response

/**
 * Writes headers into r.headersOut (status -1: r.return sets it; bodyLen -1:
 * no Content-Length of ours; keepLength: the handler's Content-Length stays,
 * wire.ts contentLengthRule). Each name is written once, repeats joined with
 * ", " (Set-Cookie lines kept apart): one pass groups them in an object keyed
 * by name, so the work is linear in the number of headers (njs 0.7.9 has no
 * Map). Every r.headersOut store walks nginx's header list; the limits of
 * headersFit (checked before anything is written) bound that walk.
 */
function setHead(r: NjsRequest, status: number, l: HeaderList, bodyLen: number, keepLength: boolean): void {
  const out = r.headersOut as unknown as Record<string, unknown>;
  const n = l.length;
  const latin1 = l._latin1 === true;
  if (n === 2) {
    // One header (usually Content-Type, which needs no further look): nothing to group.
    const n0 = l[0];
    if (n0 === 'content-type' || (!isHopByHop(n0) && (n0 !== 'content-length' || keepLength))) out[n0] = latin1 ? coldPath().wireValue(l[1]) : l[1];
  } else if (n > 2) {
    const at: Record<string, number> = { __proto__: null } as unknown as Record<string, number>;
    const names: string[] = [];
    const vals: (string | string[])[] = [];
    for (let i = 0; i < n; i += 2) {
      const name = l[i];
      // Hop-by-hop names never; Content-Length only when the wire rule keeps the handler's.
      if (isHopByHop(name) || (name === 'content-length' && !keepLength)) continue;
      const k = at[name];
      if (k === undefined) {
        at[name] = names.length;
        names.push(name);
        vals.push(name === 'set-cookie' ? [l[i + 1]] : l[i + 1]);
      } else if (name === 'set-cookie') (vals[k] as string[]).push(l[i + 1]);
      else vals[k] = vals[k] + ', ' + l[i + 1];
    }
    for (let j = 0; j < names.length; j++) out[names[j]] = latin1 ? coldPath().wireValue(vals[j]) : vals[j];
  }
  if (bodyLen >= 0) out['Content-Length'] = String(bodyLen);
  if (status >= 0) r.status = status;
}

/** Sends `res` on r. Never throws: any failure becomes a bare 500 (or an ended response). */
function respond(r: NjsRequest, res: Res, ctx: RuntimeContext): void {
  if (deadlineMs !== 0) {
    // Answered after the deadline (504 sent, or the connection cut): dropped.
    if (deadlineMs < 0) return;
    if (deadline !== null) {
      clearTimeout(deadline);
      deadline = null;
    }
  }
  let headSent = false;
  try {
    if (timing) coldPath().timingHeader(r);
    const fb = res._body;
    const fs = res.status;
    const hl = res._headers ? res._headers._list : res._list!;
    // One short header (the usual Content-Type) is within the limits without counting.
    if ((hl.length !== 2 || hl[0].length + hl[1].length > 4096) && !headersFit(hl)) {
      errorLog('request ' + ctx.id + ': response headers over the limit (' + MAX_RESPONSE_HEADERS + ' lines, ' + MAX_RESPONSE_HEADER_BYTES + ' bytes)');
      coldPath().fail500(r);
      return;
    }
    if (typeof fb === 'string' && fb !== '' && fb.length <= 21845 && fs >= 200 && fs < 300) {
      // The usual response, a small text body with a 2xx: one r.return (at most 64 KB of UTF-8),
      // which sets the status. (Response.error() has status 0, and a 204 never has a body.)
      // A lone ASCII Content-Type goes straight out (setHead's first case, without the call).
      if (hl.length === 2 && hl[0] === 'content-type' && hl._latin1 !== true) r.headersOut['Content-Type'] = hl[1];
      else setHead(r, -1, hl, -1, false);
      headSent = true;
      if (curMethod === 'HEAD') sent = 0;
      else sentText = fb;
      r.return(fs, fb);
      if (t0 > 0) t1 = Date.now();
      return;
    }
    if (!(res instanceof (Response as unknown as ResponseCtor)) || res.type === 'error' || !(res.status >= 200)) {
      errorLog('request ' + ctx.id + ': unusable Response (Response.error() or bad status)');
      coldPath().fail500(r);
      return;
    }
    const status = res.status;
    const skip = !sendsBody(r.method, status);
    if (fb instanceof (ReadableStream as unknown as new () => RuntimeStream)) {
      if (skip) {
        // HEAD/204/304: the body is never read; cancel it now so an endless stream stops.
        if (!fb.locked) fb.cancel(undefined).then(undefined, function () {});
        setHead(r, status, hl, -1, contentLengthRule(status, false) === 'handler');
        headSent = true;
        sent = 0;
        r.sendHeader();
        r.finish();
        t1 = Date.now();
        return;
      }
      coldPath().pump(r, fb, ctx, status, hl);
      return;
    }
    let b: string | Uint8Array = fb == null ? '' : (fb as string | Uint8Array);
    let len: number;
    if (typeof b === 'string') {
      // Byte length decides the path; a UTF-8 string is at most 3 bytes per UTF-16 unit.
      if (b.length * 3 > CHUNK) {
        b = new TextEncoder().encode(b);
        len = b.length;
      } else len = -1;
    } else len = b.length;
    const redirect = status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
    const rule = contentLengthRule(status, true);
    if (!redirect && rule === 'server' && len !== 0 && len <= CHUNK && b !== '') {
      // A small non-empty body, not a redirect (r.return takes a redirect's body as its
      // Location): one r.return(), nginx sets Content-Length.
      setHead(r, status, hl, -1, false);
      headSent = true; // from here on a failure means the client is gone: never send again
      if (len < 0) {
        if (skip) sent = 0;
        else sentText = b as string;
      } else sent = skip ? 0 : len;
      // r.return reads a typed array's own bytes (offset and length honoured).
      r.return(status, b as string);
      t1 = Date.now();
      return;
    }
    const bytes = typeof b === 'string' ? new TextEncoder().encode(b) : b;
    len = bytes.length;
    setHead(r, status, hl, rule === 'server' ? len : -1, rule === 'handler');
    headSent = true;
    r.sendHeader();
    sent = 0;
    if (!skip) {
      for (let off = 0; off < len; off += CHUNK) r.send(coldPath().byteString(bytes.subarray(off, Math.min(len, off + CHUNK))));
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
    errorLog('request ' + ctx.id + ': cannot send the response', e);
    coldPath().fail500(r);
  }
}

// ================================================================ off the usual request's path

interface ColdPath {
  /** The bare 500 (wire.ts INTERNAL_ERROR_TEXT), before anything was sent. */
  fail500(r: NjsRequest): void;
  /** 400 for a request refused before the handler (wire.ts requestAuthority). */
  refuse(r: NjsRequest): void;
  /** Runs `step(ctx)` after `init` (if any); a throw or rejection ends in the bare 500. */
  afterInit(r: NjsRequest, ctx: RuntimeContext, step: (ctx: RuntimeContext) => void): void;
  /** init runs per request in embedded mode (njs builds a VM per request). */
  runInit(): unknown;
  setUserVar(r: NjsRequest, user: unknown): void;
  /** core accessReply's answer on r. */
  accessAnswer(r: NjsRequest, refused: Res | undefined, ctx: RuntimeContext): void;
  byteLength(s: string): number;
  /** A Uint8Array as something r.send accepts (njs 0.7.9's r.send rejects Buffers): a byte string. */
  byteString(u: Uint8Array): string;
  /** U+0080..U+00FF as one byte each (latin1, wire.ts). */
  wireValue(v: string | string[]): unknown;
  pump(r: NjsRequest, stream: RuntimeStream, ctx: RuntimeContext, status: number, l: HeaderList): void;
  /** Arms the request deadline (--request-timeout) from now. */
  arm(): void;
  /** The request deadline passed: request.signal aborts (TimeoutError), then 504, or a stream is cut. */
  expire(): void;
  /** --server-timing: the pipeline starts now. */
  startTiming(): void;
  /** --server-timing: the Server-Timing header (core serverTimingValue) into r.headersOut. */
  timingHeader(r: NjsRequest): void;
  /** --server-timing: the handler with its access hooks timed (core ops/timing.ts timedHandler). */
  timedHandler(): RuntimeHandler;
}

let cold: ColdPath | null = null;

/** What the usual request never needs, built on first use in a request (a nested function
 * costs nothing until its factory runs; a top-level one is re-created for every request). */
function coldPath(): ColdPath {
  if (cold !== null) return cold;
  let streamExpire: (() => boolean) | null = null; // a stream being pumped: cuts it at the deadline (false: its head has not left)
  let tStart = 0; // Server-Timing: when the request's pipeline started (ms)
  let authSpent = 0; // Server-Timing: ms spent in authenticate/authorize
  function arm(): void {
    deadline = setTimeout(expire, deadlineMs);
  }
  function startTiming(): void {
    tStart = Date.now();
  }
  function disarm(): void {
    if (deadline !== null) clearTimeout(deadline);
    deadline = null;
  }
  function fail500(r: NjsRequest): void {
    if (deadlineMs < 0) return;
    disarm();
    try {
      r.headersOut['Content-Type'] = PLAIN_TEXT_TYPE;
      sent = INTERNAL_ERROR_TEXT.length;
      r.return(500, INTERNAL_ERROR_TEXT);
    } catch (e) {
      errorLog('cannot send the error response', e);
    }
    t1 = Date.now();
  }
  function refuse(r: NjsRequest): void {
    respond(r, pipeline().plainResponse(400, BAD_REQUEST_TEXT), curCtx!);
  }
  function runInit(): unknown {
    const h = H;
    if (typeof h.init !== 'function') return undefined;
    return h.init({ server: 'nginx', env: incoming().environment() });
  }
  function afterInit(r: NjsRequest, ctx: RuntimeContext, step: (ctx: RuntimeContext) => void): void {
    let pending: unknown;
    try {
      pending = runInit();
    } catch (e) {
      errorLog('request ' + ctx.id + ': init threw', e);
      fail500(r);
      return;
    }
    if (pending !== null && typeof pending === 'object' && typeof (pending as PromiseLike<unknown>).then === 'function') {
      Promise.resolve(pending).then(
        function () {
          step(ctx);
        },
        function (e: unknown) {
          errorLog('request ' + ctx.id + ': init threw', e);
          fail500(r);
        },
      );
    } else step(ctx);
  }
  function setUserVar(r: NjsRequest, user: unknown): void {
    if (typeof user !== 'string') return;
    try {
      r.variables.tsgi_user = user;
    } catch (_e) {
      /* `js_var $tsgi_user;` not declared: the log hook still sees ctx.user */
    }
  }
  function accessAnswer(r: NjsRequest, refused: Res | undefined, ctx: RuntimeContext): void {
    if (deadlineMs < 0) return;
    disarm();
    sent = 0;
    try {
      const reply = pipeline().accessReply(refused, ctx.user);
      const out = r.headersOut as unknown as Record<string, string>;
      for (let i = 0; i < reply.headers.length; i += 2) out[reply.headers[i]] = reply.headers[i + 1];
      r.return(reply.status);
    } catch (e) {
      errorLog('request ' + ctx.id + ': cannot send the auth reply', e);
      fail500(r);
    }
  }
  function byteLength(s: string): number {
    return encodeURIComponent(s) === s ? s.length : new TextEncoder().encode(s).length;
  }
  function byteString(u: Uint8Array): string {
    // String.bytesFrom reads the view's whole buffer, so a partial view is copied out first.
    const v = u.byteOffset !== 0 || u.byteLength !== u.buffer.byteLength ? shared().copyBytes(u, 0, u.length) : u;
    return String.bytesFrom(v);
  }
  function wireValue(v: string | string[]): unknown {
    if (typeof v !== 'string') {
      const out: unknown[] = [];
      for (let i = 0; i < v.length; i++) out.push(wireValue(v[i]));
      return out;
    }
    if (isAscii(v)) return v;
    // r.headersOut takes a Uint8Array's bytes as they are.
    const u = new Uint8Array(v.length);
    for (let i = 0; i < v.length; i++) u[i] = v.charCodeAt(i);
    return u;
  }
  /**
   * Ends a response whose body failed after its head went out. A complete
   * response would pass truncated data off as whole, so the connection is cut:
   * an unhandled rejection makes njs 0.7.9 finalize the request with NGX_ERROR
   * (njs #658), which closes the connection without the chunked terminator.
   */
  function cut(ctx: RuntimeContext, e: unknown): void {
    errorLog('request ' + ctx.id + ': response stream failed after the head was sent; closing the connection', e);
    t1 = Date.now();
    Promise.reject(new Error('tsgi: response stream failed'));
  }
  /** The Content-Length a handler declared for a stream (wire.ts keeps it), or -1. */
  function declaredLength(l: HeaderList): number {
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
  function pump(r: NjsRequest, stream: RuntimeStream, ctx: RuntimeContext, status: number, l: HeaderList): void {
    let reader: ReturnType<RuntimeStream['getReader']>;
    try {
      reader = stream.getReader();
    } catch (e) {
      errorLog('request ' + ctx.id + ': response body stream is locked', e);
      fail500(r);
      return;
    }
    const want = declaredLength(l);
    let head = false;
    let over = false; // the response ended (cut, failed or finished): late callbacks do nothing
    sent = 0;
    // The deadline counts from the last progress (the head, a chunk sent), as request-timeout does on every host.
    function progress(): void {
      if (deadlineMs <= 0) return;
      disarm();
      arm();
    }
    streamExpire = function (): boolean {
      if (over) return true;
      over = true;
      stopTimer();
      reader.cancel(undefined).then(undefined, function () {});
      if (!head) return false;
      cut(ctx, new Error('request-timeout reached with no progress on the response'));
      return true;
    };
    progress();
    let timer: ReturnType<typeof setTimeout> | null = setTimeout(function () {
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
        setHead(r, status, l, want >= 0 ? -1 : bodyLen, want >= 0);
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
      disarm();
      reader.cancel(undefined).then(undefined, function () {});
      t1 = Date.now();
    }
    function failed(why: string, e: unknown): void {
      over = true;
      stopTimer();
      disarm();
      if (head) cut(ctx, e);
      else {
        errorLog('request ' + ctx.id + ': ' + why, e);
        fail500(r);
      }
    }
    function step(): void {
      reader.read().then(
        function (res) {
          if (over) return;
          if (res.done) {
            stopTimer();
            if (want >= 0 && sent !== want) return failed('response stream ended after ' + sent + ' of its declared ' + want + ' bytes', undefined);
            if (!head && !sendHead(0)) return;
            over = true;
            disarm();
            try {
              r.finish();
            } catch (_e) {
              /* the client is gone */
            }
            t1 = Date.now();
            return;
          }
          const c = shared().chunkBytes(res.value);
          if (c === null) {
            const bad = new TypeError('stream chunk is not a Uint8Array');
            reader.cancel(bad).then(undefined, function () {});
            return failed('response stream chunk is not a Uint8Array', bad);
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
          progress();
          step();
        },
        function (e: unknown) {
          if (!over) failed('response stream failed before its head was sent', e);
        },
      );
    }
    step();
  }
  function expire(): void {
    deadline = null;
    if (deadlineMs <= 0) return;
    // core ops timeoutError's reason and message (njs 0.7.9 has no DOMException: an Error named TimeoutError).
    const why = 'request-timeout (' + deadlineMs / 1000 + ' s) reached';
    deadlineMs = -1;
    const r = cur;
    const reason = new Error(why);
    reason.name = 'TimeoutError';
    if (curReq !== null) {
      try {
        (curReq as unknown as { signal: { _abort(reason: unknown): void } }).signal._abort(reason);
      } catch (e) {
        errorLog('request ' + curCtx!.id + ': an abort listener threw', e);
      }
    }
    const s = streamExpire;
    if (s !== null && s()) return;
    errorLog('request ' + curCtx!.id + ': ' + why + ' before the response: 504');
    try {
      r.headersOut['Content-Type'] = PLAIN_TEXT_TYPE;
      sentText = GATEWAY_TIMEOUT_TEXT;
      r.return(504, GATEWAY_TIMEOUT_TEXT);
    } catch (_e) {
      /* the client is gone */
    }
    t1 = Date.now();
  }
  function timingHeader(r: NjsRequest): void {
    const h = H;
    // No queue of its own: nginx runs js_content as soon as it has read the request (0, so the header has one shape on every host).
    const auth = h.authenticate || h.authorize ? authSpent : undefined;
    r.headersOut['Server-Timing'] = serverTimingValue({ queueMs: 0, authMs: auth, fetchMs: Date.now() - tStart - authSpent });
  }
  function timedHook(hook: (req: RuntimeRequest, ctx: RuntimeContext) => unknown): (req: RuntimeRequest, ctx: RuntimeContext) => unknown {
    return function (req: RuntimeRequest, ctx: RuntimeContext): unknown {
      const t = Date.now();
      const spent = function (): void {
        authSpent += Date.now() - t;
      };
      let out: unknown;
      try {
        out = hook.call(H, req, ctx);
      } catch (e) {
        spent();
        throw e;
      }
      if (out === null || typeof out !== 'object' || typeof (out as PromiseLike<unknown>).then !== 'function') {
        spent();
        return out;
      }
      return Promise.resolve(out).then(
        function (v: unknown) {
          spent();
          return v;
        },
        function (e: unknown) {
          spent();
          throw e;
        },
      );
    };
  }
  function timedHandler(): RuntimeHandler {
    const h = H;
    // A new object inheriting from the handler (`this` and every other member are its own; the handler is never changed).
    const t = { __proto__: h } as unknown as RuntimeHandler;
    if (h.authenticate) t.authenticate = timedHook(h.authenticate);
    if (h.authorize) t.authorize = timedHook(h.authorize);
    return t;
  }
  cold = {
    arm: arm,
    expire: expire,
    startTiming: startTiming,
    timingHeader: timingHeader,
    timedHandler: timedHandler,
    fail500: fail500,
    refuse: refuse,
    afterInit: afterInit,
    runInit: runInit,
    setUserVar: setUserVar,
    accessAnswer: accessAnswer,
    byteLength: byteLength,
    byteString: byteString,
    wireValue: wireValue,
    pump: pump,
  };
  return cold;
}
