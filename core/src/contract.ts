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
 *
 * A WebSocket upgrade request (`Upgrade: websocket`) to a handler with a
 * `websocket` member runs instead:
 *   1. `authenticate`, 2. `authorize` (a refusal answers the HTTP request as
 *   usual, e.g. 401; the socket is never opened),
 *   3. `upgrade` (optional; a Response refuses),
 *   4. the socket opens: `websocket.open`, then `message`s, then `close`
 *      (`fetch` is not called),
 *   5. `log` (status 101) when the socket has closed.
 * A handler without `websocket` gets upgrade requests through `fetch`, as plain
 * HTTP requests (the Upgrade header is ignored, as RFC 9110 7.8 allows).
 * nginx embedded mode cannot carry WebSocket: its build refuses such a handler.
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

/** One open WebSocket connection, as the `websocket` hooks see it. */
export interface Peer {
  /** The upgrade request's id (`ctx.id`): unique within the server's run. */
  readonly id: string;
  /** The upgrade request (headers, url; its body is empty); its `signal` aborts once the socket has closed. */
  readonly request: Request;
  /** The upgrade request's context: `user` from authenticate, `ip`, `server`, `waitUntil`. */
  readonly ctx: Context;
  /**
   * Bytes queued for this peer and not yet handed to the network. A handler
   * that sends a lot paces itself on this; past the server's limit (4 MiB by
   * default) `send` closes the socket with 1008 instead of buffering more.
   */
  readonly bufferedAmount: number;
  /**
   * Sends one message: a string as a text message, bytes (Uint8Array,
   * ArrayBuffer) as a binary one. Returns false when it was not sent: the
   * socket is closing or closed, or this send found the limit passed and
   * closed it with 1008.
   */
  send(data: string | Uint8Array | ArrayBuffer): boolean;
  /** Starts the closing handshake (code 1000 unless given; reason at most 123 UTF-8 bytes). */
  close(code?: number, reason?: string): void;
}

/** What `websocket.close` receives: the code and reason of the close frame (1005 with '' when none came; 1006 when the connection was cut). */
export interface CloseDetails {
  code: number;
  reason: string;
}

/**
 * WebSocket hooks (in the spirit of crossws). Each may return a promise; a
 * throw or rejection in `open` or `message` is logged, passed to `error` and
 * closes the socket with 1011; one in `close` or `error` is only logged.
 * Messages reach `message` in order; `message` is not awaited before the
 * next one is delivered.
 */
export interface WebSocketHooks {
  /** The socket is open: `peer.send` works from here on. */
  open?(peer: Peer): Awaitable<void>;
  /** One whole message (fragments reassembled): a string for a text message, a Uint8Array for a binary one. */
  message?(peer: Peer, message: string | Uint8Array): Awaitable<void>;
  /** The socket has closed (either side, or the connection was lost). Runs once per opened socket. */
  close?(peer: Peer, details: CloseDetails): Awaitable<void>;
  /** A protocol error from the client, or a throw in `open`/`message`. */
  error?(peer: Peer, error: unknown): Awaitable<void>;
}

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
  /**
   * On shutdown, after in-flight requests and `waitUntil` work have drained.
   * Open WebSockets count as in flight: they get close code 1001 when the
   * graceful timeout ends, before `close` runs.
   */
  close?(): Awaitable<void>;
  /** WebSocket hooks: with them, an `Upgrade: websocket` request that the hooks allow opens a socket. */
  websocket?: WebSocketHooks;
  /**
   * Runs for an upgrade request after `authenticate` and `authorize`: a
   * `Response` refuses the upgrade with it (the HTTP request is answered with
   * it); `undefined`/`null` accepts. Without it every upgrade request the
   * access hooks allow is accepted. Only consulted when `websocket` is set.
   */
  upgrade?(request: Request, ctx: Context): Awaitable<Response | null | undefined | void>;
}

/** Identity function that types a handler object. */
export function defineHandler<H extends Handler>(handler: H): H {
  return handler;
}
