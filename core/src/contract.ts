/**
 * The tsgi handler contract. Every adapter (Node http, Apache mod_tsgi, nginx njs
 * embedded and workers mode) honours exactly these semantics; @tsgi/conformance
 * checks them over HTTP.
 *
 * A handler module's default export is an object with a `fetch` method. A plain
 * `{ fetch }` object (a Hono app, for one) works unchanged; `defineHandler()`
 * only adds types.
 *
 * Per request the adapter runs, in order:
 *   1. `authenticate` (optional)
 *   2. `authorize`    (optional)
 *   3. `fetch`
 *   4. `log`          (optional, after the response has finished)
 * A hook that rejects ends the pipeline with its response; `log` still runs.
 * Any throw or rejection in hooks 1–3 gives a bare `500 Internal Server Error`
 * whose body never carries the error's message or stack; the error goes to the
 * server's error log.
 */

/** Which server runs the handler. */
export type ServerKind = 'node' | 'apache' | 'nginx';

/** Per-request context, the second argument of every hook. */
export interface Context {
  /** The server running the handler. */
  readonly server: ServerKind;
  /** Client address as the server sees it (Apache: after mod_remoteip; nginx: $remote_addr). */
  readonly ip: string;
  /** The authenticated user: set from `authenticate`'s `{ user }`, or by the server's own auth (Apache). */
  user: string | undefined;
  /** Request id, unique within the server's run (Apache: its UNIQUE_ID or log id when present). */
  readonly id: string;
  /** Process environment as the handler may see it (nginx embedded: only variables listed with `env`). */
  readonly env: Readonly<Record<string, string | undefined>>;
  /**
   * The URL path the handler is mounted at, without a trailing slash: `''` at
   * the root, `'/app'` under `--location /app` (Apache `<Location /app>`, nginx
   * `location /app/`), like WSGI's SCRIPT_NAME. `request.url` stays the URL the
   * client asked for (prefix included): a router strips the prefix itself, e.g.
   * `new Hono().basePath(ctx.basePath)`. Requests outside the prefix never
   * reach the handler (the server answers 404).
   */
  readonly basePath: string;
  /**
   * Keep work going after the response: the promise is awaited before shutdown
   * (or, in nginx embedded mode, before the request's VM is released). Never
   * throws; a rejection is logged.
   */
  waitUntil(promise: PromiseLike<unknown>): void;
}

/** What `init` receives: the process-level part of the context. */
export interface InitContext {
  readonly server: ServerKind;
  readonly env: Readonly<Record<string, string | undefined>>;
}

/** `authenticate` accepts a request by returning the user name. */
export interface Authenticated {
  user: string;
}

/** One finished request, as `log` receives it. */
export interface LogEntry {
  method: string;
  /** Absolute request URL. */
  url: string;
  status: number;
  /** Response body bytes sent (0 for HEAD, 204, 304). */
  bytes: number;
  /** From the start of the pipeline to the end of the response. */
  durationMs: number;
  user: string | undefined;
}

type Awaitable<T> = T | Promise<T>;

export interface Handler {
  /** Required. Produce the response; a `Response` or a promise of one. */
  fetch(request: Request, ctx: Context): Awaitable<Response>;
  /**
   * `{ user }` accepts and sets `ctx.user`; a `Response` rejects with it (a 401
   * with `WWW-Authenticate`, say); `undefined`/`null` has no opinion and the
   * request continues unauthenticated.
   */
  authenticate?(request: Request, ctx: Context): Awaitable<Authenticated | Response | null | undefined | void>;
  /**
   * Runs after `authenticate`. `true`/`undefined` allows; `false` gives a bare
   * 403; a `Response` rejects with it.
   */
  authorize?(request: Request, ctx: Context): Awaitable<boolean | Response | null | undefined | void>;
  /** After the response has finished. Errors are logged, never sent. */
  log?(entry: LogEntry, ctx: Context): Awaitable<void>;
  /**
   * Once per process before the first request; requests wait for it. A failing
   * `init` is a start-up error. (nginx embedded mode: once per request, since
   * njs 0.7.9 builds a VM per request.)
   */
  init?(ctx: InitContext): Awaitable<void>;
  /** On shutdown, after in-flight requests and `waitUntil` work have drained. */
  close?(): Awaitable<void>;
}

/** Identity function that types a handler object. */
export function defineHandler<H extends Handler>(handler: H): H {
  return handler;
}
