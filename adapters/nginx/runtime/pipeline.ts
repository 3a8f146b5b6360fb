/**
 * The tsgi pipeline inside njs: a port of @tsgi/core's pipeline.ts (core's
 * module builds undici-based classes at load time and cannot load in njs).
 * Same semantics, same log messages; each function names the core function
 * it mirrors, and test/runtime-pipeline.test.ts feeds this port (in real njs)
 * and core (in Node) the same handlers and compares the outcomes. The
 * auth_request mapping (core accessReply) and the handler shape check (core
 * handlerProblem) are not ported but bundled from core.
 */
import { FORBIDDEN_TEXT, INTERNAL_ERROR_TEXT, PLAIN_TEXT_TYPE } from '@tsgi/core/src/wire.js';
import { accessReply } from '@tsgi/core/src/access-reply.js';
import { handlerProblem } from '@tsgi/core/src/handler-shape.js';
import type { ErrorLogger, RuntimeContext, RuntimeHandler, RuntimeRequest, RuntimeResponse } from './types.js';
import { Response } from './webapi/response.js';

type Res = RuntimeResponse;
type ResponseCtor = new (body?: unknown, init?: unknown) => Res;
export type Phase = 'full' | 'access' | 'authenticate' | 'authorize';
export interface PhaseDone {
  authenticate?: boolean;
  authorize?: boolean;
}

/** core plainResponse, internalError, forbidden: `@tsgi/core`'s in an njs bundle (pipeline() has them). */
export function plainResponse(status: number, text: string, headers?: Record<string, string>): Res {
  return pipeline().plainResponse(status, text, headers);
}
export function internalError(): Res {
  return pipeline().plainResponse(500, INTERNAL_ERROR_TEXT);
}
export function forbidden(): Res {
  return pipeline().plainResponse(403, FORBIDDEN_TEXT);
}

/**
 * core runFetch, with the outcome handed to `done` instead of returned, so the
 * usual request costs one promise callback in njs 0.7.9 rather than two:
 * `done` runs synchronously when fetch is synchronous, and gets a Response
 * always (a throw, a rejection or a non-Response becomes the bare 500, logged).
 */
export function fetchThen(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger, done: (res: Res) => void): void {
  let out: unknown;
  try {
    out = h.fetch(req, ctx);
  } catch (e) {
    done(pipeline().fetchFailed(e, ctx, log));
    return;
  }
  if (out instanceof (Response as unknown as ResponseCtor)) {
    done(out);
    return;
  }
  if (out !== null && typeof out === 'object' && typeof (out as PromiseLike<unknown>).then === 'function') {
    // An async fetch returns a native promise: no Promise.resolve() wrapper needed.
    const p = out instanceof Promise ? out : Promise.resolve(out);
    p.then(
      function (v: unknown) {
        done(v instanceof (Response as unknown as ResponseCtor) ? v : pipeline().notAResponse(v, ctx, log));
      },
      function (e: unknown) {
        done(pipeline().fetchFailed(e, ctx, log));
      },
    );
    return;
  }
  done(pipeline().notAResponse(out, ctx, log));
}

export interface Pipeline {
  /** core plainResponse: the bare responses tsgi itself sends. */
  plainResponse(status: number, text: string, headers?: Record<string, string>): Res;
  /** core checkResponse, for a value that is not a Response: logged, the bare 500. */
  notAResponse(v: unknown, ctx: RuntimeContext, log: ErrorLogger): Res;
  /** A fetch that threw or rejected: logged, the bare 500 (core runFetch's `failed`). */
  fetchFailed(e: unknown, ctx: RuntimeContext, log: ErrorLogger): Res;
  runFetch(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger): Res | Promise<Res>;
  runAuthenticate(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext): Promise<Res | undefined>;
  runAuthorize(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext): Promise<Res | undefined>;
  runPipeline(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger): Res | Promise<Res>;
  runPhase(h: RuntimeHandler, phase: Phase, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger, done?: PhaseDone): Res | undefined | Promise<Res | undefined>;
  runLog(h: RuntimeHandler, entry: unknown, ctx: RuntimeContext, log: ErrorLogger): void;
  /** core accessReply (bundled, not ported). */
  accessReply: typeof accessReply;
  /** core handlerProblem (bundled, not ported). */
  handlerProblem: typeof handlerProblem;
}

let built: Pipeline | null = null;

/** The rest of the pipeline, built on first use in a request (off the usual request's path). */
export function pipeline(): Pipeline {
  if (built !== null) return built;
  function plainResponse(status: number, text: string, headers?: Record<string, string>): Res {
    const h: Record<string, string> = { 'content-type': PLAIN_TEXT_TYPE };
    if (headers) {
      const keys = Object.keys(headers);
      for (let i = 0; i < keys.length; i++) h[keys[i]] = headers[keys[i]];
    }
    return new (Response as unknown as ResponseCtor)(text, { status: status, headers: h });
  }
  function fetchFailed(e: unknown, ctx: RuntimeContext, log: ErrorLogger): Res {
    log('request ' + ctx.id + ': fetch threw', e);
    return plainResponse(500, INTERNAL_ERROR_TEXT);
  }
  function notAResponse(v: unknown, ctx: RuntimeContext, log: ErrorLogger): Res {
    log('request ' + ctx.id + ': fetch returned ' + (v === null ? 'null' : typeof v) + ', not a Response');
    return plainResponse(500, INTERNAL_ERROR_TEXT);
  }
  const isResponse = function (v: unknown): v is Res {
    return v instanceof (Response as unknown as ResponseCtor);
  };
  function isThenable(v: unknown): v is PromiseLike<unknown> {
    return v !== null && typeof v === 'object' && typeof (v as PromiseLike<unknown>).then === 'function';
  }
  function failed(ctx: RuntimeContext, log: ErrorLogger, phase: string): (e: unknown) => Res {
    return function (e: unknown): Res {
      log('request ' + ctx.id + ': ' + phase + ' threw', e);
      return plainResponse(500, INTERNAL_ERROR_TEXT);
    };
  }
  /** core runFetch: fetch alone; stays synchronous when the handler is. */
  function runFetch(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger): Res | Promise<Res> {
    let out: unknown;
    try {
      out = h.fetch(req, ctx);
    } catch (e) {
      return failed(ctx, log, 'fetch')(e);
    }
    if (isThenable(out)) {
      return Promise.resolve(out).then(function (v: unknown) {
        return isResponse(v) ? v : notAResponse(v, ctx, log);
      }, failed(ctx, log, 'fetch'));
    }
    return isResponse(out) ? out : notAResponse(out, ctx, log);
  }
  /** core runAuthenticate: a Response rejects, `{ user }` sets ctx.user; throws what the hook throws. */
  async function runAuthenticate(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext): Promise<Res | undefined> {
    if (!h.authenticate) return undefined;
    const out = (await h.authenticate(req, ctx)) as { user?: unknown } | null | undefined;
    if (out == null) return undefined;
    if (isResponse(out)) return out;
    if (typeof out === 'object' && typeof out.user === 'string') {
      ctx.user = out.user;
      return undefined;
    }
    throw new TypeError('authenticate must return { user: string }, a Response, null or undefined');
  }
  /** core runAuthorize: a Response when refused (403 for `false`), undefined when allowed. */
  async function runAuthorize(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext): Promise<Res | undefined> {
    if (!h.authorize) return undefined;
    const out = await h.authorize(req, ctx);
    if (out === false) return plainResponse(403, FORBIDDEN_TEXT);
    if (out == null || out === true) return undefined;
    if (isResponse(out)) return out;
    throw new TypeError('authorize must return a boolean, a Response, null or undefined');
  }
  /** core runPipeline: authenticate → authorize → fetch; never throws; sync when the handler is. */
  function runPipeline(h: RuntimeHandler, req: RuntimeRequest, ctx: RuntimeContext, log: ErrorLogger): Res | Promise<Res> {
    if (!h.authenticate && !h.authorize) return runFetch(h, req, ctx, log);
    return runAuthenticate(h, req, ctx)
      .then(function (refused) {
        return refused != null ? refused : runAuthorize(h, req, ctx);
      })
      .then(function (refused) {
        return refused != null ? refused : runFetch(h, req, ctx, log);
      }, failed(ctx, log, 'authenticate/authorize'));
  }
  /** core runPhase: the pipeline whole ('full') or in part; never throws or rejects. */
  function runPhase(
    h: RuntimeHandler,
    phase: Phase,
    req: RuntimeRequest,
    ctx: RuntimeContext,
    log: ErrorLogger,
    done?: PhaseDone,
  ): Res | undefined | Promise<Res | undefined> {
    const did = done || {};
    if (phase === 'full' && !did.authenticate && !did.authorize) return runPipeline(h, req, ctx, log);
    const authn = phase !== 'authorize' && !did.authenticate;
    const authz = phase !== 'authenticate' && !did.authorize;
    const what = authn && authz ? 'authenticate/authorize' : authn ? 'authenticate' : 'authorize';
    const first: Promise<Res | undefined> = authn ? runAuthenticate(h, req, ctx) : Promise.resolve(undefined);
    const guarded = first
      .then(function (refused) {
        return refused != null ? refused : authz ? runAuthorize(h, req, ctx) : undefined;
      })
      .then(undefined, failed(ctx, log, what));
    if (phase !== 'full') return guarded;
    return guarded.then(function (refused) {
      return refused != null ? refused : runFetch(h, req, ctx, log);
    });
  }
  /** core runLog: runs the log hook; its errors are logged, never thrown. */
  function runLog(h: RuntimeHandler, entry: unknown, ctx: RuntimeContext, log: ErrorLogger): void {
    if (!h.log) return;
    try {
      const out = h.log(entry, ctx);
      if (isThenable(out)) {
        Promise.resolve(out).then(undefined, function (e: unknown) {
          log('request ' + ctx.id + ': log threw', e);
        });
      }
    } catch (e) {
      log('request ' + ctx.id + ': log threw', e);
    }
  }
  built = {
    plainResponse: plainResponse,
    notAResponse: notAResponse,
    fetchFailed: fetchFailed,
    runFetch: runFetch,
    runAuthenticate: runAuthenticate,
    runAuthorize: runAuthorize,
    runPipeline: runPipeline,
    runPhase: runPhase,
    runLog: runLog,
    accessReply: accessReply,
    handlerProblem: handlerProblem,
  };
  return built;
}
