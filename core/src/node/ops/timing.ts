/**
 * --server-timing's `auth` phase: the time a request spent in authenticate and
 * authorize, measured by a wrapper of the handler (a new object inheriting
 * from it, so `this` and every other member are the handler's own; the
 * handler itself is never changed) and read back by the request's Context.
 */
import type { Context, Handler } from '../../contract.js';
import type { RawResponse } from '../../response.js';
import { serverTimingValue } from '../../server-timing.js';

const spent = new WeakMap<Context, number>();

/** Milliseconds `ctx`'s request spent in authenticate/authorize; undefined when the handler has neither. */
export function authMs(ctx: Context): number | undefined {
  return spent.get(ctx);
}

/** The handler, with its access hooks timed per request (the handler itself when it has none). */
export function timedHandler(h: Handler): Handler {
  if (!h.authenticate && !h.authorize) return h;
  const time =
    <A extends unknown[], R>(fn: (this: Handler, req: Request, ctx: Context, ...rest: A) => R) =>
    async (req: Request, ctx: Context, ...rest: A): Promise<Awaited<R>> => {
      const t0 = performance.now();
      try {
        return await fn.call(h, req, ctx, ...rest);
      } finally {
        spent.set(ctx, (spent.get(ctx) ?? 0) + performance.now() - t0);
      }
    };
  const timed = Object.create(h) as Handler & Record<string, unknown>;
  if (h.authenticate) timed.authenticate = time(h.authenticate) as Handler['authenticate'];
  if (h.authorize) timed.authorize = time(h.authorize) as Handler['authorize'];
  return timed;
}

/**
 * The response as written under --server-timing: its headers plus `server-timing` with the queue
 * (arrival to admission), auth and fetch phases; `arrived` and `admitted` are performance.now() times.
 */
export function withServerTiming(raw: RawResponse, arrived: number, admitted: number, ctx: Context): RawResponse {
  const auth = authMs(ctx);
  const value = serverTimingValue({ queueMs: admitted - arrived, authMs: auth, fetchMs: performance.now() - admitted - (auth ?? 0) });
  return { ...raw, headers: [...raw.headers, 'server-timing', value] };
}
