import type { Context, Handler, LogEntry, Peer, WebSocketHooks } from './contract.js';
import { FastResponse } from './response.js';
import { FORBIDDEN_TEXT, INTERNAL_ERROR_TEXT, PLAIN_TEXT_TYPE } from './wire.js';
import { handlerProblem } from './handler-shape.js';

export { accessReply } from './access-reply.js';

/** Where adapters send errors that must never reach the client. */
export type ErrorLogger = (message: string, error?: unknown) => void;

export const defaultErrorLogger: ErrorLogger = (message, error) => {
  console.error(`[tsgi] ${message}`, error ?? '');
};

/** The bare responses every server sends for pipeline outcomes. */
export function plainResponse(status: number, text: string, headers?: Record<string, string>): Response {
  return new FastResponse(text, {
    status,
    headers: { 'content-type': PLAIN_TEXT_TYPE, ...headers },
  }) as unknown as Response;
}

export const internalError = (): Response => plainResponse(500, INTERNAL_ERROR_TEXT);
export const forbidden = (): Response => plainResponse(403, FORBIDDEN_TEXT);

function isThenable<T>(v: unknown): v is PromiseLike<T> {
  return v !== null && typeof v === 'object' && typeof (v as PromiseLike<T>).then === 'function';
}

function checkResponse(value: unknown, ctx: Context, log: ErrorLogger): Response {
  // core's own Response (the one the loader injects), told without instanceof's walk up the prototype chain.
  if (value !== null && typeof value === 'object' && (value as { constructor?: unknown }).constructor === FastResponse) return value as Response;
  if (value instanceof Response) return value;
  log(`request ${ctx.id}: fetch returned ${value === null ? 'null' : typeof value}, not a Response`);
  return internalError();
}

function failed(ctx: Context, log: ErrorLogger, phase: string) {
  return (err: unknown): Response => {
    log(`request ${ctx.id}: ${phase} threw`, err);
    return internalError();
  };
}

/** Runs `fetch` alone; stays synchronous when the handler is. */
export function runFetch(h: Handler, req: Request, ctx: Context, log: ErrorLogger): Response | Promise<Response> {
  let out: unknown;
  try {
    out = h.fetch(req, ctx);
  } catch (err) {
    return failed(ctx, log, 'fetch')(err);
  }
  if (isThenable<unknown>(out)) {
    return Promise.resolve(out).then((v) => checkResponse(v, ctx, log), failed(ctx, log, 'fetch'));
  }
  return checkResponse(out, ctx, log);
}

/**
 * `authenticate` alone. Returns a Response when the request is rejected,
 * undefined to go on; sets `ctx.user` on `{ user }`. Throws what the hook throws.
 */
export async function runAuthenticate(h: Handler, req: Request, ctx: Context): Promise<Response | undefined> {
  if (!h.authenticate) return undefined;
  const out = await h.authenticate(req, ctx);
  if (out == null) return undefined;
  if (out instanceof Response) return out;
  if (typeof out === 'object' && typeof out.user === 'string') {
    ctx.user = out.user;
    return undefined;
  }
  throw new TypeError('authenticate must return { user: string }, a Response, null or undefined');
}

/** `authorize` alone: a Response when refused (403 for `false`), undefined when allowed. */
export async function runAuthorize(h: Handler, req: Request, ctx: Context): Promise<Response | undefined> {
  if (!h.authorize) return undefined;
  const out = await h.authorize(req, ctx);
  if (out === false) return forbidden();
  if (out == null || out === true) return undefined;
  if (out instanceof Response) return out;
  throw new TypeError('authorize must return a boolean, a Response, null or undefined');
}

/** The access phases (authenticate, then authorize) as one step. */
export async function runAccess(h: Handler, req: Request, ctx: Context): Promise<Response | undefined> {
  return (await runAuthenticate(h, req, ctx)) ?? (await runAuthorize(h, req, ctx));
}

/**
 * authenticate → authorize → fetch. Never throws or rejects: failures become a
 * bare 500 and go to `log`. Synchronous when the handler has no access hooks
 * and its fetch is synchronous.
 */
export function runPipeline(h: Handler, req: Request, ctx: Context, log: ErrorLogger): Response | Promise<Response> {
  if (!h.authenticate && !h.authorize) return runFetch(h, req, ctx, log);
  return runAccess(h, req, ctx).then(
    (rejected) => rejected ?? runFetch(h, req, ctx, log),
    failed(ctx, log, 'authenticate/authorize'),
  );
}

/**
 * runPipeline for a host that goes on with a callback: `then` gets the
 * Response (failures are the bare 500, logged) exactly once, synchronously when
 * the handler is. For an async fetch this is one promise step fewer than
 * `runPipeline(...).then(then)` (node-http's hot path).
 */
export function runPipelineThen(h: Handler, req: Request, ctx: Context, log: ErrorLogger, then: (res: Response) => void): void {
  if (h.authenticate || h.authorize) {
    void Promise.resolve(runPipeline(h, req, ctx, log)).then(then);
    return;
  }
  let out: unknown;
  try {
    out = h.fetch(req, ctx);
  } catch (err) {
    return then(failed(ctx, log, 'fetch')(err));
  }
  if (isThenable<unknown>(out)) {
    // A foreign thenable is adopted first, so `then` runs once whatever it does.
    (out instanceof Promise ? out : Promise.resolve(out)).then(
      (v) => then(checkResponse(v, ctx, log)),
      (err) => then(failed(ctx, log, 'fetch')(err)),
    );
    return;
  }
  then(checkResponse(out, ctx, log));
}

/** Which part of the pipeline a server asks for. */
export type Phase = 'full' | 'access' | 'authenticate' | 'authorize';

/** Hooks the server already ran for this request (Apache: TsgiAuthenticate/TsgiAuthorize on a tsgi location). */
export interface PhaseDone {
  authenticate?: boolean;
  authorize?: boolean;
}

/**
 * The pipeline, whole or in part, for every host:
 * - 'full': authenticate → authorize → fetch (less the hooks in `done`); a Response.
 * - 'access': authenticate → authorize alone (nginx auth_request, Apache's
 *   access phases); 'authenticate' or 'authorize': that hook alone. A Response
 *   when the request is refused, undefined when it may go on (`ctx.user` holds
 *   what authenticate returned).
 * Never throws or rejects: a throw becomes the bare 500 and goes to `log`.
 * Synchronous when the handler is (runPipeline).
 */
export function runPhase(
  h: Handler,
  phase: Phase,
  req: Request,
  ctx: Context,
  log: ErrorLogger,
  done: PhaseDone = {},
): Response | undefined | Promise<Response | undefined> {
  if (phase === 'full' && !done.authenticate && !done.authorize) return runPipeline(h, req, ctx, log);
  const authn = phase !== 'authorize' && !done.authenticate;
  const authz = phase !== 'authenticate' && !done.authorize;
  const access = (async (): Promise<Response | undefined> =>
    (authn ? await runAuthenticate(h, req, ctx) : undefined) ?? (authz ? await runAuthorize(h, req, ctx) : undefined))();
  const what = authn && authz ? 'authenticate/authorize' : authn ? 'authenticate' : 'authorize';
  const guarded = access.catch(failed(ctx, log, what));
  if (phase !== 'full') return guarded;
  return guarded.then((rejected) => rejected ?? runFetch(h, req, ctx, log));
}

/**
 * A WebSocket upgrade request's pipeline: authenticate → authorize → the
 * handler's `upgrade` hook (instead of fetch). A Response refuses (answer the
 * HTTP request with it, open no socket); undefined accepts (`ctx.user` holds
 * what authenticate returned). Never rejects: a throw is the bare 500, logged
 * with `log`. The host runs the handler's `log` hook once the socket has
 * closed (or with the refusal's status once that answer is sent). `done`: the
 * hooks the server already ran (Apache's TsgiAuthenticate/TsgiAuthorize).
 */
export async function runUpgrade(h: Handler, req: Request, ctx: Context, log: ErrorLogger, done: PhaseDone = {}): Promise<Response | undefined> {
  try {
    const refused =
      (done.authenticate ? undefined : await runAuthenticate(h, req, ctx)) ?? (done.authorize ? undefined : await runAuthorize(h, req, ctx));
    if (refused) return refused;
    if (!h.upgrade) return undefined;
    const out = await h.upgrade(req, ctx);
    if (out == null) return undefined;
    if (out instanceof Response) return out;
    throw new TypeError('upgrade must return a Response, null or undefined');
  } catch (err) {
    return failed(ctx, log, 'authenticate/authorize/upgrade')(err);
  }
}

/** True for a request asking to upgrade to WebSocket (an `Upgrade` header naming the `websocket` token). */
export function isWebSocketUpgrade(upgrade: string | null | undefined): boolean {
  if (!upgrade) return false;
  const parts = upgrade.split(',');
  for (let i = 0; i < parts.length; i++) if (parts[i]!.trim().toLowerCase() === 'websocket') return true;
  return false;
}

/**
 * Runs one `websocket` hook for `peer`. Never throws or rejects: a failure is
 * logged; for `open` and `message` it is also handed to the `error` hook and
 * `failed` runs (the host closes the socket with 1011).
 */
export function runSocketHook<K extends keyof WebSocketHooks>(
  hooks: WebSocketHooks,
  name: K,
  peer: Peer,
  arg: Parameters<NonNullable<WebSocketHooks[K]>>[1],
  log: ErrorLogger,
  failed: () => void,
): void {
  const fn = hooks[name] as ((p: Peer, a: unknown) => unknown) | undefined;
  if (!fn) return;
  const onError = (err: unknown): void => {
    log(`request ${peer.id}: websocket.${name} threw`, err);
    if (name !== 'open' && name !== 'message') return;
    runSocketHook(hooks, 'error', peer, err, log, () => {});
    failed();
  };
  try {
    const out = fn.call(hooks, peer, arg);
    if (isThenable(out)) Promise.resolve(out).catch(onError);
  } catch (err) {
    onError(err);
  }
}

/** Runs the `log` hook; its errors are logged, never thrown. */
export function runLog(h: Handler, entry: LogEntry, ctx: Context, log: ErrorLogger): void {
  if (!h.log) return;
  try {
    const out = h.log(entry, ctx);
    if (isThenable(out)) Promise.resolve(out).catch((err) => log(`request ${ctx.id}: log threw`, err));
  } catch (err) {
    log(`request ${ctx.id}: log threw`, err);
  }
}

/** Checks a loaded module's default export; the message is what the CLI prints. */
export function assertHandler(mod: unknown, where: string): Handler {
  const m = mod as { default?: unknown } | null;
  let h = (m && typeof m === 'object' && 'default' in m ? m.default : m) as Partial<Handler> | null | undefined;
  // A TS/ESM module compiled to CommonJS (no "type": "module") arrives as { default: { default: handler } }.
  const inner = (h as { default?: Partial<Handler> } | null)?.default;
  if (h && typeof h.fetch !== 'function' && inner && typeof inner.fetch === 'function') h = inner;
  const problem = handlerProblem(h);
  if (problem !== null) throw new Error(`${where}: ${problem}`);
  return h as Handler;
}
