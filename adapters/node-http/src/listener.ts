import { STATUS_CODES, type IncomingMessage, type ServerResponse } from 'node:http';
import {
  BAD_REQUEST_TEXT,
  PLAIN_TEXT_TYPE,
  defaultErrorLogger,
  internalError,
  plainResponse,
  runAccess,
  runLog,
  runPipeline,
  toRawResponse,
  type ErrorLogger,
  type Handler,
  type ServerKind,
} from '@tsgi/core';
import { Lifecycle, RequestContext, initHandler } from '@tsgi/core/node';
import { NodeRequest, requestTarget, type RequestOptions } from './request.js';
import { clientGone, sendResponse } from './send.js';

export interface NodeAdapterOptions {
  /** Largest request body accepted, in bytes (default 10 MiB); larger gets 413. */
  maxBodySize?: number;
  /** What ctx.server reports (default 'node'; 'nginx' behind nginx workers mode). */
  server?: ServerKind;
  /** Behind a local proxy: ctx.ip from X-Real-IP, scheme from X-Forwarded-Proto. */
  trustProxy?: boolean;
  /** Honour `x-tsgi-phase: access` (run authenticate + authorize only), for nginx auth_request. */
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
  onError?: ErrorLogger;
}

export const DEFAULT_MAX_BODY = 10 * 1024 * 1024;

export type NodeListener = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Settles when init has run; rejects with its StartupError. */
  ready: Promise<void>;
  lifecycle: Lifecycle;
  handler: Handler;
  /** For other Node frameworks (the Fastify plugin): run the pipeline, reply yourself, then call done. */
  dispatch(req: IncomingMessage, res: ServerResponse): Dispatched | null;
  done(res: ServerResponse, request: NodeRequest, ctx: RequestContext, status: number, bytes: number, start: number): void;
  log: ErrorLogger;
  /** Set while the server drains: every response then carries `Connection: close`. */
  draining: boolean;
};

export interface Dispatched {
  request: NodeRequest;
  ctx: RequestContext;
  start: number;
  response: Response | Promise<Response>;
}

function clientIp(req: IncomingMessage, trustProxy: boolean): string {
  if (trustProxy) {
    const real = req.headers['x-real-ip'];
    if (typeof real === 'string' && real) return real;
  }
  return req.socket.remoteAddress ?? '';
}

/** Sends a response the adapter itself decided on. */
function sendOwn(res: ServerResponse, status: number, text: string, close: boolean): void {
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

/**
 * The handler as a node:http request listener. init runs once; requests that
 * arrive earlier wait for it.
 */
export function toNodeListener(handler: Handler, options: NodeAdapterOptions = {}): NodeListener {
  const log = options.onError ?? defaultErrorLogger;
  const lifecycle = new Lifecycle(log);
  const kind: ServerKind = options.server ?? 'node';
  const maxBody = options.maxBodySize ?? DEFAULT_MAX_BODY;
  const trustProxy = options.trustProxy ?? false;
  const phases = options.phases ?? false;
  const decided = options.authority;
  const hasLog = typeof handler.log === 'function';
  const reqOpts: RequestOptions = {
    maxBodySize: maxBody,
    scheme: options.https === undefined ? undefined : options.https ? 'https' : 'http',
    trustProxy,
    hidden: options.hiddenHeaders?.length ? options.hiddenHeaders : undefined,
    onTooLarge: (r) => refuseBody(r._req, r._res, undefined),
  };
  let initialized = false;
  const ready = initHandler(handler, { server: kind, env: process.env }).then(() => {
    initialized = true;
  });
  ready.catch(() => {}); // reported by whoever awaits `ready`

  function finish(
    req: IncomingMessage,
    res: ServerResponse,
    request: NodeRequest,
    ctx: RequestContext,
    response: Response,
    start: number,
  ): void {
    if (res.headersSent || res.writableEnded || clientGone(res)) {
      // Already answered (413) or the client is gone: drop what the handler made.
      try {
        const raw = toRawResponse(response);
        if (raw.body instanceof ReadableStream) void raw.body.cancel().catch(() => {});
      } catch {
        // nothing to release
      }
      done(res, request, ctx, res.statusCode, 0, start);
      return;
    }
    let sent: number | Promise<number>;
    try {
      sent = sendResponse(res, toRawResponse(response), req.method === 'HEAD', listener.draining);
    } catch (err) {
      // A header the wire can't carry (CR/LF, bad name) or a bad status: never partly sent.
      log(`request ${ctx.id}: invalid response`, err);
      if (!res.headersSent) {
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        sent = sendResponse(res, toRawResponse(internalError()), req.method === 'HEAD', listener.draining);
      } else {
        res.destroy();
        sent = 0;
      }
    }
    if (typeof sent === 'number') done(res, request, ctx, res.statusCode, sent, start);
    else
      sent.then(
        (bytes) => done(res, request, ctx, res.statusCode, bytes, start),
        (err) => {
          log(`request ${ctx.id}: response stream failed`, err);
          if (!res.headersSent) {
            // Failed before its first chunk: nothing went out, so a clean 500 still can.
            void sendResponse(res, toRawResponse(internalError()), req.method === 'HEAD', listener.draining);
            return done(res, request, ctx, 500, 0, start);
          }
          done(res, request, ctx, res.statusCode, 0, start);
        },
      );
  }

  function done(res: ServerResponse, request: NodeRequest, ctx: RequestContext, status: number, bytes: number, start: number): void {
    lifecycle.end();
    if (!hasLog) return;
    const run = (): void =>
      runLog(
        handler,
        {
          method: request.method,
          url: request.url,
          status,
          bytes,
          durationMs: performance.now() - start,
          user: ctx.user,
        },
        ctx,
        log,
      );
    if (res.writableFinished || res.destroyed) run();
    else res.once('close', run);
  }

  /** Runs the pipeline; null when the adapter already answered (400, 413). */
  function dispatch(req: IncomingMessage, res: ServerResponse): Dispatched | null {
    // An embedder behind a trusted proxy (nginx workers mode) has checked the authority itself.
    const authority = decided?.(req);
    const target = authority !== undefined ? { authority, path: req.url ?? '/' } : requestTarget(req);
    if ('status' in target) {
      // A client error, not the server's: nothing is logged (the target may carry credentials).
      sendOwn(res, 400, BAD_REQUEST_TEXT, true);
      return null;
    }
    lifecycle.begin();
    const start = hasLog ? performance.now() : 0;
    const request = new NodeRequest(req, res, reqOpts, target.authority, target.path);
    const ctx = new RequestContext(kind, clientIp(req, trustProxy), lifecycle);
    const cl = req.headers['content-length'];
    if (cl !== undefined && Number(cl) > maxBody) {
      refuseBody(req, res, Number(cl));
      done(res, request, ctx, 413, 0, start);
      return null;
    }
    const response =
      phases && req.headers['x-tsgi-phase'] === 'access'
        ? accessOnly(request as unknown as Request, ctx)
        : runPipeline(handler, request as unknown as Request, ctx, log);
    return { request, ctx, start, response };
  }

  /** nginx auth_request: 200 (+ x-tsgi-user) to go on, or the rejecting response. */
  function accessOnly(request: Request, ctx: RequestContext): Promise<Response> {
    return runAccess(handler, request, ctx).then(
      (rejected) => rejected ?? plainResponse(200, '', ctx.user ? { 'x-tsgi-user': ctx.user } : {}),
      (err) => {
        log(`request ${ctx.id}: authenticate/authorize threw`, err);
        return internalError();
      },
    );
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const d = dispatch(req, res);
    if (!d) return;
    const out = d.response;
    if (out instanceof Promise) out.then((r) => finish(req, res, d.request, d.ctx, r, d.start));
    else finish(req, res, d.request, d.ctx, out, d.start);
  }

  const listener = ((req: IncomingMessage, res: ServerResponse): void => {
    if (initialized) return handle(req, res);
    ready.then(
      () => handle(req, res),
      () => sendOwn(res, 503, 'Service Unavailable\n', false),
    );
  }) as NodeListener;
  listener.ready = ready;
  listener.lifecycle = lifecycle;
  listener.handler = handler;
  listener.dispatch = dispatch;
  listener.done = done;
  listener.log = log;
  listener.draining = false;
  return listener;
}
