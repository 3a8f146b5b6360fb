/**
 * One Node worker of workers mode, on the Unix socket the supervisor passes
 * as fd 3. The supervisor keeps its own copy of that listening socket, so
 * connections that arrive while a crashed worker is being replaced wait in
 * the backlog instead of failing. Each connection's requests are read by
 * connection.ts; one that needs node:http (an upgrade, a streamed upload, a
 * rare framing) is handed to the node-http adapter on a server of its own.
 *
 * Bundled (with the handler, @tsgi/node-http and @tsgi/core) into the run's
 * temp dir by `tsgi nginx run --workers N`, and started as the unprivileged user.
 *
 * Only nginx may talk to it: a request must carry the per-start secret that
 * nginx's config adds (X-Tsgi-Secret), or it gets 403 before anything in it is
 * trusted. With it, the worker takes ctx.ip, the scheme, the request line and the
 * access phase from the headers nginx set, and hides its X-Tsgi-* headers from the handler.
 */
import { timingSafeEqual } from 'node:crypto';
import { ServerResponse, createServer, type IncomingMessage, type Server } from 'node:http';
import { createServer as createNetServer, type Server as NetServer, type Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { BAD_REQUEST_TEXT, FORBIDDEN_TEXT, PLAIN_TEXT_TYPE, assertHandler, defaultErrorLogger, requestAuthority, type ErrorLogger, type Handler } from '@tsgi/core';
import { EXIT_STARTUP, Operations, linkWorker, loadFailure, shutdown, startupReason, timedHandler, type OpsSettings, type ShutdownSteps } from '@tsgi/core/node';
import { refuseOnSocket, toNodeListener, type NodeListener } from '@tsgi/node-http';
import { NginxConnection, clientTarget } from './connection.js';
import type { NginxHost } from './exchange.js';

/** What the supervisor sends over IPC before the worker listens (never in the environment). */
export interface WorkerConfig {
  tsgi: 'config';
  /** The per-start secret nginx sends in X-Tsgi-Secret. */
  secret: string;
  /** host:port nginx listens on: the authority of an HTTP/1.0 request without Host. */
  authority: string;
  maxBody: number;
  /** Operations (issue 12): request-timeout, admission, recycling, health, metrics, Server-Timing. */
  ops?: Partial<OpsSettings>;
}

/** What a worker that cannot start tells the supervisor before it exits 78: the one line to print. */
export interface WorkerFailed {
  tsgi: 'failed';
  reason: string;
}

/** The headers nginx sets for the worker (config.ts proxyCommon); the handler never sees them. */
const PROXY_HEADERS = ['x-tsgi-secret', 'x-tsgi-request', 'x-tsgi-phase', 'x-tsgi-base-path'];

function configFromSupervisor(): Promise<WorkerConfig> {
  return new Promise((resolve) => {
    const on = (m: Partial<WorkerConfig>): void => {
      if (m?.tsgi !== 'config') return;
      process.off('message', on);
      resolve(m as WorkerConfig);
    };
    process.on('message', on);
  });
}

/** The supervisor prints the reason, once (decision 9: one line); the worker only exits 78. */
async function cannotStart(err: unknown): Promise<never> {
  const reason = startupReason(err);
  const send = process.send?.bind(process);
  if (send) await new Promise<void>((sent) => send({ tsgi: 'failed', reason } satisfies WorkerFailed, () => sent()));
  else console.error(`tsgi: ${reason}`);
  process.exit(EXIT_STARTUP);
}

/** The largest request head the worker reads: more than nginx forwards (config.ts httpPart). */
export const MAX_HEAD = 256 * 1024;

/** How long a response waits for the rest of a request body the handler did not read (HoldEndResponse). */
const HOLD_END_MS = 1_000;

/**
 * nginx 1.22, proxying an upload unbuffered (proxy_request_buffering off, so uploads stream), drops
 * keep-alive on the client's connection, without saying so, when the worker's answer ends before nginx
 * has read the whole request body (ngx_http_finalize_connection: reading_body). So the end of a response
 * waits until the request body has arrived (what nobody reads is discarded, as Node does after the
 * response anyway), up to HOLD_END_MS; after that it ends, and nginx closes that client connection.
 */
class HoldEndResponse extends ServerResponse {
  // node:http passes (req, { highWaterMark, ... }): handed on whole.
  constructor(...args: ConstructorParameters<typeof ServerResponse>) {
    super(...args);
    // nginx sends its own Date (proxy_hide_header's default list has Date): none to build and parse here.
    this.sendDate = false;
  }

  override end(...args: unknown[]): this {
    const req = this.req;
    const framed = req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined;
    if (!framed || req.complete || req.destroyed) return (super.end as (...a: unknown[]) => this)(...args);
    const go = (): void => {
      clearTimeout(timer);
      req.off('end', go);
      req.off('close', go);
      (super.end as (...a: unknown[]) => this)(...args);
    };
    const timer = setTimeout(go, HOLD_END_MS);
    req.once('end', go);
    req.once('close', go);
    if (req.readableFlowing === null) req.resume();
    return this;
  }
}

function refuse(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, ['content-type', PLAIN_TEXT_TYPE, 'content-length', String(Buffer.byteLength(text))]);
  res.end(text);
}

/**
 * The secret check: timing-safe (the time does not tell where a guess differs; the length is no secret),
 * and without an allocation per request (the header is written into one scratch buffer).
 */
function secretCheck(secret: string): (got: string | string[] | undefined) => boolean {
  const want = Buffer.from(secret, 'latin1');
  const scratch = Buffer.alloc(want.length);
  return (got) =>
    typeof got === 'string' && got.length === want.length && scratch.write(got, 0, 'latin1') === want.length && timingSafeEqual(scratch, want);
}

/**
 * RFC 9112 3.2.2: for an absolute-form target the Host header is replaced by the target's authority
 * (what a proxy must do, and Apache does; nginx forwards the client's Host as it came).
 */
function replaceHost(req: IncomingMessage, authority: string): void {
  const raw = req.rawHeaders;
  let found = false;
  for (let i = 0; i < raw.length; i += 2) {
    if (raw[i]!.length === 4 && raw[i]!.toLowerCase() === 'host') {
      raw[i + 1] = authority;
      found = true;
    }
  }
  if (!found) raw.push('Host', authority);
  req.headers.host = authority;
}

/** What serves nginx's connections in one worker (runWorker listens and stops it; tests drive it directly). */
export interface WorkerServers {
  /** Accepts nginx's connections; connection.ts reads them. */
  direct: NetServer;
  /** The node-http adapter for the connections handed to it (upgrades, streamed uploads, rare framings). */
  server: Server;
  listener: NodeListener;
  host: NginxHost;
  /** Every connection nginx has open (a forced stop cuts them). */
  sockets: Set<Socket>;
}

/** The worker's servers for `handler`, once its init has run (rejects with init's StartupError). */
export async function workerServers(handler: Handler, cfg: WorkerConfig, ops: Operations | undefined, log: ErrorLogger): Promise<WorkerServers> {
  const fromSecret = secretCheck(cfg.secret);
  const listener = toNodeListener(handler, {
    ops,
    server: 'nginx',
    trustProxy: true,
    phases: true,
    maxBodySize: cfg.maxBody,
    // A request without Host came as HTTP/1.0 (nginx itself refuses an HTTP/1.1 one without Host, then
    // forwards as HTTP/1.1): nginx's own host:port. Otherwise node-http takes Host, as `serve` does.
    authority: (req) => (req.headers.host === undefined ? cfg.authority : undefined),
    hiddenHeaders: PROXY_HEADERS,
    // ctx.basePath: the prefix of the nginx location that routed the request (config.ts), read only
    // after the secret check; nginx sends none at the root (and replaces a client's own).
    basePath: (req) => {
      const b = req.headers['x-tsgi-base-path'];
      return typeof b === 'string' ? b : '';
    },
    onError: log,
  });
  await listener.ready;

  let warned = false;
  const fromNginx = (secret: string | string[] | undefined): boolean => {
    if (fromSecret(secret)) return true;
    if (!warned) {
      warned = true;
      log(
        `worker ${process.pid}: refused a request that did not come through nginx (no valid X-Tsgi-Secret); ` +
          'later ones are refused without a log line',
      );
    }
    return false;
  };

  /** The checks before the handler (the secret, an absolute-form target's authority): a refusal, or undefined. */
  const admit = (req: IncomingMessage): [number, string] | undefined => {
    if (!fromNginx(req.headers['x-tsgi-secret'])) return [403, FORBIDDEN_TEXT];
    const path = req.url ?? '/';
    const target = clientTarget(req.headers['x-tsgi-request'], path);
    if (target !== path) {
      // Absolute-form (rare): core's rule on the target as sent; its authority becomes Host (and so request.url).
      const host = req.headers.host;
      const where = requestAuthority(target, host === undefined ? [] : [host], true, cfg.authority);
      if ('status' in where) return [400, BAD_REQUEST_TEXT];
      replaceHost(req, where.authority);
    }
    return undefined;
  };
  const serve = (req: IncomingMessage, res: ServerResponse): void => {
    const refused = admit(req);
    if (refused) return refuse(res, refused[0], refused[1]);
    // Draining: answer, then close (Connection: close), so nginx does not keep the connection.
    if (host.draining) res.shouldKeepAlive = false;
    listener(req, res);
  };

  const server = createServer(
    {
      // No timeout: only nginx closes idle connections (its upstream keepalive_timeout, config.ts), so it
      // never sends a request on one we are closing; and no Keep-Alive header for nginx to parse and drop.
      keepAliveTimeout: 0,
      requestTimeout: 0,
      // No Host is fine: nginx forwards an HTTP/1.0 request without one as HTTP/1.1.
      requireHostHeader: false,
      // nginx bounds the head (config.ts: a request line of 32 KiB, 4 x 32 KiB of headers), and the line
      // comes twice (X-Tsgi-Request): the worker must not refuse what nginx accepted.
      maxHeaderSize: MAX_HEAD,
      ServerResponse: HoldEndResponse,
    },
    serve,
  );
  // An upgrade (config.ts: nginx's upgrade location passes Upgrade/Connection): the same checks, then node-http's websocket.ts.
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const refused = admit(req);
    if (refused) return refuseOnSocket(req, socket, refused[0], refused[1]);
    listener.upgrade(req, socket, head);
  });

  const host: NginxHost = {
    handler,
    pipeline: ops?.s.serverTiming ? timedHandler(handler) : handler,
    lifecycle: listener.lifecycle,
    ops,
    log,
    hasLog: typeof handler.log === 'function',
    draining: false,
  };
  const sockets = new Set<Socket>();
  const direct = createNetServer((socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
    new NginxConnection(socket, {
      host,
      fromNginx,
      maxHead: MAX_HEAD,
      maxBody: cfg.maxBody,
      handOff: (sock, read) => {
        // node:http reads what was read already first, then the rest as it comes.
        if (read.length > 0) sock.unshift(read);
        server.emit('connection', sock);
        sock.resume();
      },
    });
  });
  return { direct, server, listener, host, sockets };
}

/**
 * `load` imports the handler module (the bundle's lazy import of it), so a module that throws while
 * loading is a start-up failure like a missing fetch or a failing init, reported the same way.
 */
export async function runWorker(load: () => Promise<unknown>, where: string): Promise<void> {
  // Listening before anything awaits: the supervisor sends the config right after spawning us.
  const config = configFromSupervisor();
  // The supervisor gone before we listen: nothing to drain.
  const orphaned = (): never => process.exit(0);
  process.once('disconnect', orphaned);
  let handler: Handler;
  try {
    let mod: unknown;
    try {
      mod = await load();
    } catch (err) {
      throw loadFailure(where, err);
    }
    handler = assertHandler(mod, where);
  } catch (err) {
    return cannotStart(err);
  }
  const cfg = await config;
  const log = defaultErrorLogger;
  const ops = cfg.ops ? new Operations(cfg.ops) : undefined;
  const link = ops ? linkWorker(ops) : undefined;
  let servers: WorkerServers;
  try {
    servers = await workerServers(handler, cfg, ops, log);
  } catch (err) {
    return cannotStart(err);
  }
  const { direct, server, listener, host, sockets } = servers;
  let stopping = false;
  direct.listen({ fd: 3 }, () => {
    if (ops) ops.ready = true;
    process.send?.({ tsgi: 'ready' });
  });

  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    host.draining = true;
    if (ops) ops.draining = true;
    const deadline = Date.now() + (Number(process.env.TSGI_GRACEFUL_MS) || 10_000);
    const timeLeft = (): number => Math.max(0, deadline - Date.now());
    const steps: ShutdownSteps = {
      // Stop accepting (new connections wait in the supervisor's copy of the socket for our successor),
      // but keep the open ones: closing an idle one could cut a request nginx is writing on it.
      // net.Server#close calls back once nginx has closed every connection (within its keepalive_timeout,
      // or after the Connection: close answer to the next request on it), handed-off ones included.
      stopAccepting: async () => {
        const closed = new Promise<boolean>((r) => direct.close(() => r(true)));
        const late = new Promise<false>((r) => setTimeout(() => r(false), timeLeft()).unref());
        if (!(await Promise.race([closed, late]))) log('worker shutdown: nginx still holds connections at the graceful timeout');
        // The drain gets what is left of the one graceful timeout.
        steps.timeoutMs = timeLeft();
      },
      lifecycle: listener.lifecycle,
      timeoutMs: timeLeft(),
      forceClose: async () => {
        // Open WebSockets had the graceful timeout: now they get 1001 (the tunnels through nginx end with them).
        await listener.closeSockets();
        server.closeAllConnections();
        for (const socket of sockets) socket.destroy();
      },
      handler,
      log,
    };
    await shutdown(steps);
    // The last counters reach the supervisor before we go.
    await link?.final();
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  // nginx is stopping gracefully and waits for its tunnels: no new upgrades, and the open sockets get 1001 in time.
  process.on('message', (m: { tsgi?: string; afterMs?: number }) => {
    if (m?.tsgi !== 'sockets-going-away') return;
    listener.draining = true;
    setTimeout(() => void listener.closeSockets(), m.afterMs ?? 0).unref();
  });
  // Ctrl-C reaches the whole process group; the supervisor decides when workers stop.
  process.on('SIGINT', () => {});
  process.off('disconnect', orphaned);
  process.on('disconnect', () => void stop());
}
