/**
 * One request on a Node http server, start to finish: the host's checks (400,
 * 413), the pipeline (core's runPipeline, or runPhase 'access' for nginx's
 * auth_request), the writer (send.ts), then the `log` hook and the in-flight
 * slot. `NodeHost` holds what every request of one listener shares;
 * `Exchange` is one request. toNodeListener (listener.ts) and the Fastify
 * mount (fastify.ts) both drive these.
 */
import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  BAD_REQUEST_TEXT,
  PLAIN_TEXT_TYPE,
  defaultErrorLogger,
  insideMount,
  mountPrefix,
  internalError,
  runLog,
  runPipeline,
  runPipelineThen,
  toRawResponse,
  type ErrorLogger,
  type Handler,
  type RawResponse,
  type ServerKind,
} from '@tsgi/core';
import { Deadlines, Lifecycle, runAccess, RequestContext, accessLogLine, initHandler, timedHandler, type Operations, type Timed, type Watched } from '@tsgi/core/node';
import { opsExpire, opsGate, opsWire } from './ops.js';
import { NodeRequest, requestTarget, type RequestOptions } from './request.js';
import { clientGone, sendResponse } from './send.js';

export interface NodeAdapterOptions {
  /** Largest request body accepted, in bytes (default 10 MiB); larger gets 413. */
  maxBodySize?: number;
  /** What ctx.server reports (default 'node'; 'nginx' behind nginx workers mode). */
  server?: ServerKind;
  /** Behind a local proxy: ctx.ip from X-Real-IP, scheme from X-Forwarded-Proto. */
  trustProxy?: boolean;
  /** Honour `x-tsgi-phase: access` (authenticate + authorize only, answered as core's accessReply), for nginx auth_request. */
  phases?: boolean;
  /** Scheme for request.url when not behind a trusted proxy (default: the connection's, https over TLS). */
  https?: boolean;
  /**
   * The request's authority (host[:port]) when the embedder has already decided it from what a
   * trusted proxy saw (nginx workers mode: the absolute-form target, Host, HTTP/1.0); default: Host.
   */
  authority?: (req: IncomingMessage) => string | undefined;
  /** Request headers (lower-case) the handler never sees: a trusted proxy's own (nginx workers mode). */
  hiddenHeaders?: readonly string[];
  /**
   * ctx.basePath, the mount prefix (`/app`; a trailing slash is dropped; default '': the root). A
   * string: a request outside it gets 404 without reaching the handler. A function: the embedder
   * has routed already and says what the prefix of this request is (nginx workers mode).
   */
  basePath?: string | ((req: IncomingMessage) => string);
  /** One access log line per request (core's accessLogLine, nginx's format) to this sink; default none. */
  accessLog?: (line: string) => void;
  onError?: ErrorLogger;
  /** The process's operations (issue 12: deadline, admission, probes, metrics, Server-Timing); one across reloads. */
  ops?: Operations;
}

export const DEFAULT_MAX_BODY = 10 * 1024 * 1024;
const NOT_FOUND_TEXT = 'Not Found\n';

/**
 * The path a mount prefix is matched on, as Apache and nginx match their locations: dot segments
 * resolved (as request.url shows them) and %XX decoded. Only a path that needs it pays.
 */
function mountPath(path: string): string {
  if (!path.includes('%') && !path.includes('/.')) return path;
  try {
    const p = new URL(`http://h${path}`).pathname;
    try {
      return decodeURIComponent(p);
    } catch {
      return p;
    }
  } catch {
    return path;
  }
}

/** Sends a response the host itself decided on. */
export function sendOwn(res: ServerResponse, status: number, text: string, close: boolean): void {
  if (res.headersSent) return;
  const headers = ['content-type', PLAIN_TEXT_TYPE, 'content-length', String(Buffer.byteLength(text))];
  if (close) headers.push('connection', 'close');
  res.writeHead(status, STATUS_CODES[status]!, headers);
  res.end(text);
}

// How much of a refused body we read and discard, and for how long, before cutting the connection.
const LINGER_BYTES = 64 * 1024 * 1024;
const LINGER_MS = 10_000;

/**
 * 413 for a body over the limit. Closing a socket with unread request data
 * makes the kernel send RST, which can destroy the 413 before the client reads
 * it; so, like nginx's lingering close, read and discard a bounded amount.
 * A declared length we are willing to drain keeps the connection alive.
 */
function refuseBody(req: IncomingMessage, res: ServerResponse, declared: number | undefined): void {
  const keep = declared !== undefined && declared <= LINGER_BYTES;
  sendOwn(res, 413, 'Payload Too Large\n', !keep);
  let seen = 0;
  const timer = setTimeout(() => req.socket.destroy(), LINGER_MS);
  timer.unref();
  req.on('data', (c: Buffer) => {
    seen += c.length;
    if (seen > LINGER_BYTES) req.socket.destroy();
  });
  req.once('end', () => clearTimeout(timer));
  req.once('close', () => clearTimeout(timer));
  req.resume();
}

/** What every request of one listener shares: the handler, its options, its in-flight work. init runs once, at construction. */
export class NodeHost {
  readonly log: ErrorLogger;
  readonly lifecycle: Lifecycle;
  /** Settles when init has run; rejects with its StartupError. */
  readonly ready: Promise<void>;
  /** Set while the server drains: every response then carries `Connection: close`. */
  draining = false;
  readonly kind: ServerKind;
  readonly maxBody: number;
  readonly trustProxy: boolean;
  readonly phases: boolean;
  readonly hasLog: boolean;
  readonly accessLog: ((line: string) => void) | undefined;
  readonly requestOptions: RequestOptions;
  private initialized = false;
  private decided: ((req: IncomingMessage) => string | undefined) | undefined;
  readonly ops: Operations | undefined;
  /** What runs the pipeline: the handler, or (--server-timing) its access hooks timed. */
  readonly pipeline: Handler;
  /** The fixed mount prefix ('' at the root), or the embedder's per-request answer. */
  private readonly mount: string | ((req: IncomingMessage) => string);

  constructor(
    readonly handler: Handler,
    options: NodeAdapterOptions = {},
  ) {
    this.log = options.onError ?? defaultErrorLogger;
    this.lifecycle = new Lifecycle(this.log);
    this.kind = options.server ?? 'node';
    this.maxBody = options.maxBodySize ?? DEFAULT_MAX_BODY;
    this.trustProxy = options.trustProxy ?? false;
    this.phases = options.phases ?? false;
    this.decided = options.authority;
    this.mount = typeof options.basePath === 'function' ? options.basePath : mountPrefix(options.basePath ?? '');
    this.hasLog = typeof handler.log === 'function';
    this.ops = options.ops;
    this.pipeline = this.ops?.s.serverTiming ? timedHandler(handler) : handler;
    this.accessLog = options.accessLog;
    this.requestOptions = {
      maxBodySize: this.maxBody,
      scheme: options.https === undefined ? undefined : options.https ? 'https' : 'http',
      trustProxy: this.trustProxy,
      hidden: options.hiddenHeaders?.length ? options.hiddenHeaders : undefined,
      onTooLarge: (r) => refuseBody(r._src.req, r._src.res, undefined),
    };
    this.ready = initHandler(handler, { server: this.kind, env: process.env }).then(() => {
      this.initialized = true;
    });
    this.ready.catch(() => {}); // reported by whoever awaits `ready`
  }

  /** Starts one exchange; null when the host answered it already (400 for the target, 413 for a declared length). */
  open(req: IncomingMessage, res: ServerResponse): Exchange | null {
    // An embedder behind a trusted proxy (nginx workers mode) has checked the authority itself.
    const authority = this.decided?.(req);
    const target = requestTarget(req, authority);
    if ('status' in target) {
      // A client error, not the server's: nothing is logged (the target may carry credentials).
      sendOwn(res, 400, BAD_REQUEST_TEXT, true);
      this.logAccess(req, res, 400, BAD_REQUEST_TEXT.length, undefined, performance.now());
      return null;
    }
    let base: string;
    if (typeof this.mount === 'string') {
      base = this.mount;
      // Outside the mount: the server's 404, as Apache and nginx give for a URL outside the location.
      if (base !== '' && !insideMount(mountPath(target.path), base)) {
        sendOwn(res, 404, NOT_FOUND_TEXT, false);
        this.logAccess(req, res, 404, NOT_FOUND_TEXT.length, undefined, performance.now());
        return null;
      }
    } else base = this.mount(req);
    this.lifecycle.begin();
    const request = new NodeRequest({ req, res, opts: this.requestOptions, target });
    // The client's address is read from the socket only when asked for.
    const ctx = new RequestContext(this.kind, request, this.lifecycle, undefined, undefined, base);
    // A log hook runs once the client may be gone (and its address with the socket): read it now.
    if (this.hasLog) void ctx.ip;
    const x = new Exchange(this, req, res, request, ctx);
    const cl = target.length;
    const deadlines = this.ops?.deadlines;
    if (deadlines) x.deadline = deadlines.add(x);
    if (cl !== undefined && Number(cl) > this.maxBody) {
      refuseBody(req, res, Number(cl));
      x.end(413, 0);
      return null;
    }
    return x;
  }

  /** The access log line of a request, once its response has finished (or the client is gone). */
  logAccess(req: IncomingMessage, res: ServerResponse, status: number, bytes: number, user: string | undefined, start: number): void {
    const sink = this.accessLog;
    if (!sink) return;
    const write = (): void =>
      sink(
        accessLogLine({
          ip: req.socket.remoteAddress ?? '',
          user,
          method: req.method ?? '',
          target: req.url ?? '',
          httpVersion: req.httpVersion,
          status,
          bytes,
          referer: req.headers.referer,
          userAgent: req.headers['user-agent'],
          durationMs: performance.now() - start,
        }),
      );
    if (res.writableFinished || res.destroyed) write();
    else res.once('close', write);
  }

  /** A whole node:http exchange (toNodeListener); requests that arrive before init has run wait for it. */
  serve(req: IncomingMessage, res: ServerResponse): void {
    if (this.ops && !opsGate(this, this.ops, req, res)) return;
    if (!this.initialized) {
      this.ready.then(
        () => this.serve(req, res),
        () => sendOwn(res, 503, 'Service Unavailable\n', false),
      );
      return;
    }
    const x = this.open(req, res);
    if (!x) return;
    if (this.phases && req.headers['x-tsgi-phase'] === 'access') {
      void x.access().then((r) => x.send(r));
      return;
    }
    // No promise step between the handler's answer and the writer (the hot path).
    runPipelineThen(this.pipeline, x.request as unknown as Request, x.ctx, this.log, (r) => x.send(r));
  }
}

/** One request: its Request and Context, the pipeline run, the response written, then the log hook. */
export class Exchange implements Timed {
  readonly start: number;
  /** end() ran (a request-timeout may end it before the handler answers). */
  private ended = false;
  /** Its entry under the request deadline (core's Deadlines), when one is set. */
  deadline: Watched | undefined = undefined;

  constructor(
    readonly host: NodeHost,
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly request: NodeRequest,
    readonly ctx: RequestContext,
  ) {
    this.start = host.hasLog || host.accessLog ? performance.now() : 0;
  }

  /** Bytes read and written on its connection: what the deadline counts as progress. */
  progress(): number {
    const socket = this.req.socket;
    return socket.bytesRead + socket.bytesWritten;
  }

  expire(ms: number): void {
    opsExpire(this, ms);
  }

  /** The handler's answer (Fastify, and the access run); never rejects (failures are the bare 500, logged). */
  run(): Response | Promise<Response> {
    const host = this.host;
    if (host.phases && this.req.headers['x-tsgi-phase'] === 'access') return this.access();
    return runPipeline(host.pipeline, this.request as unknown as Request, this.ctx, host.log);
  }

  /** nginx auth_request: authenticate + authorize alone, answered as embedded nginx answers (core's accessReply). */
  access(): Promise<Response> {
    return runAccess(this.host.handler, this.request as unknown as Request, this.ctx, this.host.log);
  }

  /**
   * What to write for `response`, or undefined when nothing may be written (the
   * host answered already, 413 mid-body, or the client is gone): its stream is
   * cancelled. A response no host can send is logged and becomes the bare 500.
   */
  wire(response: Response): RawResponse | undefined {
    const res = this.res;
    if (res.headersSent || res.writableEnded || clientGone(res)) {
      try {
        const raw = toRawResponse(response);
        if (raw.body instanceof ReadableStream) void raw.body.cancel().catch(() => {});
      } catch {
        // nothing to release
      }
      return undefined;
    }
    try {
      return toRawResponse(response);
    } catch (err) {
      this.host.log(`request ${this.ctx.id}: invalid response`, err);
      return toRawResponse(internalError());
    }
  }

  /** Writes the response on node:http (send.ts), then ends the exchange. */
  send(response: Response): void {
    const { res, host } = this;
    let raw = this.wire(response);
    if (!raw) return this.end(res.statusCode, 0);
    if (host.ops) raw = opsWire(this, host.ops, raw);
    const isHead = this.req.method === 'HEAD';
    let sent: number | Promise<number>;
    try {
      sent = sendResponse(res, raw, isHead, host.draining);
    } catch (err) {
      // A header the wire can't carry (CR/LF, bad name) or a bad status: never partly sent.
      host.log(`request ${this.ctx.id}: invalid response`, err);
      if (!res.headersSent) {
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        sent = sendResponse(res, toRawResponse(internalError()), isHead, host.draining);
      } else {
        res.destroy();
        sent = 0;
      }
    }
    if (typeof sent === 'number') return this.end(res.statusCode, sent);
    sent.then(
      (bytes) => this.end(res.statusCode, bytes),
      (err) => {
        host.log(`request ${this.ctx.id}: response stream failed`, err);
        if (!res.headersSent) {
          // Failed before its first chunk: nothing went out, so a clean 500 still can.
          void sendResponse(res, toRawResponse(internalError()), isHead, host.draining);
          return this.end(500, 0);
        }
        this.end(res.statusCode, 0);
      },
    );
  }

  /** Frees the in-flight slot, then runs the `log` hook once the response is finished (or the client gone). */
  end(status: number, bytes: number): void {
    // A request-timeout ended it already; the handler's late answer ends nothing twice.
    if (this.ended) return;
    this.ended = true;
    const host = this.host;
    host.lifecycle.end();
    if (this.deadline) Deadlines.remove(this.deadline);
    if (host.accessLog) host.logAccess(this.req, this.res, status, bytes, this.ctx.user, this.start);
    if (!host.hasLog) return;
    const run = (): void =>
      runLog(
        host.handler,
        {
          method: this.request.method,
          url: this.request.url,
          status,
          bytes,
          durationMs: performance.now() - this.start,
          user: this.ctx.user,
        },
        this.ctx,
        host.log,
      );
    const res = this.res;
    if (res.writableFinished || res.destroyed) run();
    else res.once('close', run);
  }
}
