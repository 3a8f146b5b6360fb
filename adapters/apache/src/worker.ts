/**
 * The Node worker process that mod_tsgi's Apache parent spawns and supervises
 * (PROTOCOL.md, "Worker process contract"): it accepts Apache children's
 * connections on the inherited listening socket (fd 3), admits each REQUEST
 * (max-inflight, queue-timeout), runs the handler's pipeline or one phase of
 * it through core's runPhase, has respond.ts write the answer, and drains on
 * SIGTERM or max-requests with core's shutdown(). Each connection's socket is
 * its Connection's (connection.ts): the worker never touches one.
 *
 * Run as `node dist/worker.js` (the handler comes from TSGI_HANDLER), or as
 * one bundle (core's bundleWorker) whose entry calls runWorker — what
 * `tsgi apache run` generates, so an unprivileged worker reads one file.
 */
import { closeSync, existsSync, readFileSync, realpathSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { pathToFileURL } from 'node:url';
import { BAD_REQUEST_TEXT, assertHandler, plainResponse, runLog, runPhase, runUpgrade, type ErrorLogger, type Handler, type Phase as PipelinePhase, type PhaseDone, type RawResponse, type WebSocketHooks } from '@tsgi/core';
import {
  EXIT_STARTUP,
  Lifecycle,
  Operations,
  RequestContext,
  StartupError,
  WebSocketKit,
  authMs,
  handshakeRefusal,
  initHandler,
  loadFailure,
  loadHandler,
  serverTimingValue,
  shutdown,
  startupReason,
  timedHandler,
  type Probe,
  type RestartReason,
} from '@tsgi/core/node';
import { Connection, type ConnectionHost, type Exchange } from './connection.js';
import { Phase, type RequestMsg } from './protocol.js';
import { ApacheRequest, requestTarget, requestUrl, type BodySource } from './request.js';
import { Peers, drainFlagPath } from './peers.js';
import { respond, type Responder } from './respond.js';

export interface WorkerOptions {
  /** Daemon name, for log lines. */
  daemon: string;
  listenFd: number;
  /** The per-start secret HELLO must carry. */
  secret: Buffer;
  /** Recycle after this many requests (0 = never). */
  maxRequests: number;
  /** Refuse with ERROR 503 beyond this many requests in flight (0 = no limit). */
  maxInflight: number;
  /** Refuse with ERROR 503 when a request waited longer than this before reaching us (0 = off). */
  queueTimeoutMs: number;
  /** mod_tsgi's request-timeout (it sends ABORT reason 2 at it): what the TimeoutError says. */
  requestTimeoutMs: number;
  gracefulTimeoutMs: number;
  /** Recycle after a response when the V8 heap used exceeds this many bytes (0 = never). */
  maxHeapBytes?: number;
  /** Probe paths this worker answers itself (core's Operations), and whether metrics go to every client. */
  healthPath?: string;
  metricsPath?: string;
  metricsPublic?: boolean;
  /** Add Server-Timing (queue, auth, fetch) to every response. */
  serverTiming?: boolean;
  /** Where the workers share their metrics (peers.ts); none: each worker's metrics are its own. */
  opsDir?: string;
  /** The drain flag (peers.ts drainFlagPath): once it exists, the health path answers 503. */
  drainFlag?: string;
  /** max-body: also the largest WebSocket message (0 = no limit). */
  maxBody?: number;
}

const num = (v: string | undefined, dflt: number): number => {
  const n = Number(v);
  return v !== undefined && v !== '' && Number.isFinite(n) && n >= 0 ? n : dflt;
};

/** Reads the worker settings mod_tsgi passes (environment + the secret pipe). */
export function optionsFromEnv(env: NodeJS.ProcessEnv = process.env): WorkerOptions {
  const listenFd = num(env.TSGI_LISTEN_FD, 3);
  const secretFd = num(env.TSGI_SECRET_FD, 4);
  let hex: string;
  try {
    hex = readFileSync(secretFd, 'latin1').trim();
    closeSync(secretFd);
  } catch (err) {
    throw new StartupError(`cannot read the secret from fd ${secretFd} (is this worker started by mod_tsgi?): ${(err as Error).message}`);
  }
  if (!/^[0-9a-f]{64}$/.test(hex)) throw new StartupError(`bad secret on fd ${secretFd}: expected 64 hex characters`);
  return {
    daemon: env.TSGI_DAEMON ?? 'tsgi',
    listenFd,
    secret: Buffer.from(hex, 'hex'),
    maxRequests: num(env.TSGI_MAX_REQUESTS, 0),
    maxInflight: num(env.TSGI_MAX_INFLIGHT, 0),
    queueTimeoutMs: num(env.TSGI_QUEUE_TIMEOUT, 0) * 1000,
    requestTimeoutMs: num(env.TSGI_REQUEST_TIMEOUT, 60) * 1000,
    gracefulTimeoutMs: num(env.TSGI_GRACEFUL_TIMEOUT, 15) * 1000,
    maxHeapBytes: num(env.TSGI_MAX_HEAP, 0),
    healthPath: env.TSGI_HEALTH || undefined,
    metricsPath: env.TSGI_METRICS || undefined,
    metricsPublic: env.TSGI_METRICS_PUBLIC === '1',
    serverTiming: env.TSGI_SERVER_TIMING === '1',
    opsDir: env.TSGI_OPS_DIR || undefined,
    drainFlag: env.TSGI_HANDLER ? drainFlagPath(env.TSGI_HANDLER) : undefined,
    maxBody: num(env.TSGI_MAX_BODY, 0),
  };
}

/** The pipeline part each REQUEST phase asks for, by phase code (LOG runs apart: it answers nothing). */
const PHASES: readonly PipelinePhase[] = ['full', 'authenticate', 'authorize'];
/** The hooks Apache already ran, by the AUTHN_DONE/AUTHZ_DONE flag bits (flags >> 2): one shared object each. */
const DONE: readonly PhaseDone[] = [{}, { authenticate: true }, { authorize: true }, { authenticate: true, authorize: true }].map((d) => Object.freeze(d));

/** The least time a drain past its deadline still gives waitUntil work (the parent SIGKILLs at graceful-timeout + 2 s). */
const LAST_WAIT_MS = 1000;

export class Worker implements ConnectionHost, Responder {
  readonly lifecycle: Lifecycle;
  readonly log: ErrorLogger;
  readonly secret: Buffer;
  readonly requestTimeoutMs: number;
  draining = false;
  private conns = new Set<Connection>();
  private server: Server | null = null;
  private served = 0;
  private hasLog: boolean;
  /** Resolves the wait for the connections to go (stopAccepting), when the last one closed. */
  private connsGone: (() => void) | null = null;
  /**
   * Core's Operations for what the worker does itself (probes, metrics, Server-Timing, max-heap); undefined
   * when none is asked for. mod_tsgi has the deadline; admission and max-requests stay the worker's own checks.
   */
  readonly ops: Operations | undefined;
  /** The handler as the pipeline runs it (its access hooks timed for Server-Timing). */
  private readonly pipeline: Handler;
  /** The requests already counted by the metrics (a timed-out one whose handler answers late counts once). */
  private readonly counted = new WeakSet<ApacheRequest>();
  /** Probes in flight: answered, never counted. */
  private readonly probes = new WeakSet<ApacheRequest>();
  private probing = 0;
  /** The other workers' counters, for the metrics path (peers.ts). */
  private peers: Peers | undefined;
  /** The runner's drain flag was seen (drainFlagged). */
  private announced = false;
  /** The WebSocket sockets this worker carries through mod_tsgi's tunnel (core's kit). */
  private readonly sockets: WebSocketKit;

  constructor(
    readonly handler: Handler,
    readonly opts: WorkerOptions,
  ) {
    const tag = `[tsgi ${opts.daemon} worker pid ${process.pid}]`;
    this.log = (message, error) => {
      if (error === undefined) console.error(`${tag} ${message}`);
      else console.error(`${tag} ${message}:`, error);
    };
    this.secret = opts.secret;
    this.requestTimeoutMs = opts.requestTimeoutMs;
    this.lifecycle = new Lifecycle(this.log);
    this.hasLog = typeof handler.log === 'function';
    const o = opts;
    if (o.maxHeapBytes || o.healthPath || o.metricsPath || o.serverTiming) {
      const ops = new Operations({
        requestTimeoutMs: 0,
        maxInflight: 0,
        maxRequests: 0,
        maxHeapBytes: o.maxHeapBytes ?? 0,
        healthPath: o.healthPath,
        metricsPath: o.metricsPath,
        metricsPublic: o.metricsPublic ?? false,
        serverTiming: o.serverTiming ?? false,
      });
      ops.ready = true; // a Worker exists once init has run
      ops.onRecycle = (why) => {
        this.log(`recycled: ${why}; draining (mod_tsgi starts a new worker)`);
        void this.drain('recycle');
      };
      this.ops = ops;
      if (o.metricsPath) {
        const peers = (this.peers = Peers.open(o.opsDir, ops));
        if (peers) ops.poolMetrics = () => Promise.resolve(peers.metrics(this.drainFlagged()));
      }
    }
    this.pipeline = o.serverTiming ? timedHandler(handler) : handler;
    this.sockets = new WebSocketKit({ maxPayload: o.maxBody ?? 0, log: this.log });
  }

  listen(): Promise<void> {
    return new Promise((resolve, reject) => {
      const server = (this.server = createServer((sock) => this.accept(sock)));
      server.once('error', reject);
      server.listen({ fd: this.opts.listenFd }, () => {
        server.off('error', reject);
        server.on('error', (err) => this.log('listening socket failed', err));
        resolve();
      });
    });
  }

  private accept(sock: Socket): void {
    if (this.draining) {
      sock.destroy();
      return;
    }
    this.conns.add(new Connection(sock, this));
  }

  closed(c: Connection): void {
    this.conns.delete(c);
    if (this.conns.size === 0) this.connsGone?.();
  }

  /** One REQUEST frame: admission, then the phase it asks for. */
  request(conn: Connection, m: RequestMsg, body: BodySource | null): void {
    if (m.phase === Phase.LOG) {
      this.logPhase(m);
      return;
    }
    const o = this.opts;
    const ops = this.ops;
    if (ops?.probes && m.phase === Phase.FULL) {
      const probe = ops.probe(m.uri);
      // Before admission: a probe is never shed.
      if (probe) {
        this.probe(conn, m, body, probe);
        return;
      }
    }
    if (o.maxInflight > 0 && this.lifecycle.inflight >= o.maxInflight) {
      this.refuse(conn, body, `${this.lifecycle.inflight} requests in flight (max ${o.maxInflight})`, m);
      return;
    }
    if (o.queueTimeoutMs > 0 && Date.now() - m.startUs / 1000 > o.queueTimeoutMs) {
      this.refuse(conn, body, `request waited longer than queue-timeout (${o.queueTimeoutMs / 1000} s)`, m);
      return;
    }
    const target = requestTarget(m);
    this.lifecycle.begin();
    const refused = 'status' in target;
    const ctx = new RequestContext('apache', m.clientIp, this.lifecycle, m.id || undefined, m.user || undefined, m.basePath);
    const req = new ApacheRequest(m, body, refused ? { authority: 'localhost', path: '/' } : target, ctx, this.hasLog || ops?.counts ? performance.now() : 0);
    conn.begin(req);
    if (refused) {
      // Refused before any hook runs, as Node and nginx refuse it while parsing.
      this.log(`request ${ctx.id}: ${target.reason} (400)`);
      respond(conn, req, plainResponse(400, BAD_REQUEST_TEXT), this);
      return;
    }
    const hooks = this.handler.websocket;
    if (m.upgrade && hooks) {
      this.upgrade(conn, req, hooks);
      return;
    }
    const out = runPhase(this.pipeline, PHASES[m.phase]!, req as unknown as Request, ctx, this.log, DONE[(m.flags >> 2) & 3]);
    // runPhase never rejects; a synchronous handler answers without a promise hop.
    if (out instanceof Promise) void out.then((res) => this.answer(conn, req, res));
    else this.answer(conn, req, out);
  }

  /**
   * A WebSocket upgrade mod_tsgi can tunnel (PROTOCOL.md, "WebSocket tunnel"):
   * the handshake checks every Node host makes (core's handshakeRefusal), then
   * authenticate, authorize and the upgrade hook; a refusal is an ordinary
   * response. Accepted: TUNNEL, and ws takes the connection; the request holds
   * its in-flight slot until the socket closes, then `log` runs with 101.
   */
  private upgrade(conn: Connection, req: ApacheRequest, hooks: WebSocketHooks): void {
    const m = req._m;
    const headers = headerRecord(m.headers);
    const no = this.draining
      ? { status: 503, text: 'Service Unavailable\n', headers: {} }
      : handshakeRefusal(m.method, headers['sec-websocket-key'], headers['sec-websocket-version'], m.hasBody);
    if (no) {
      respond(conn, req, plainResponse(no.status, no.text, no.headers), this);
      return;
    }
    void runUpgrade(this.pipeline, req as unknown as Request, req._ctx, this.log, DONE[(m.flags >> 2) & 3]).then((refused) => {
      if (refused) return respond(conn, req, refused, this);
      if (!conn.writable(req)) return this.finished(conn, req, 499, 0);
      let close: (() => Promise<void>) | undefined;
      let timer: NodeJS.Timeout | undefined;
      // Apache's child is stopping: the socket keeps working for graceful-timeout, then gets 1001.
      const stream = conn.tunnel(() => {
        timer ??= setTimeout(() => void close?.(), this.opts.gracefulTimeoutMs);
      });
      this.sockets.accept({ method: m.method, headers }, stream, Buffer.alloc(0), {
        hooks,
        request: req as unknown as Request,
        ctx: req._ctx,
        opened: (c) => (close = c),
        ended: (status, bytes) => {
          clearTimeout(timer);
          this.finished(conn, req, status, bytes);
        },
      });
    });
  }

  /** A Response to write, or an access phase that let the request go on: its DECISION. */
  private answer(conn: Connection, req: ApacheRequest, res: Response | undefined): void {
    if (res) {
      respond(conn, req, res, this);
      return;
    }
    // authenticate names the user it set; authorize says nothing more.
    const m = req._m;
    const user = req._ctx.user;
    if (conn.writable(req)) conn.sendDecision(m.phase === Phase.AUTHENTICATE && user !== (m.user || undefined) ? user : undefined);
    this.finished(conn, req, 0, 0);
  }

  private refuse(conn: Connection, body: BodySource | null, why: string, m: RequestMsg): void {
    body?.cancel();
    this.log(`refusing a request: ${why}`);
    conn.sendError(503, 1, why);
    if (this.ops) {
      this.syncGauge();
      this.ops.finished(503, Date.now() - m.startUs / 1000);
      this.peers?.changed();
    }
  }

  /** Admission is the worker's own check, not core's: the in-flight gauge is copied from the lifecycle (probes aside). */
  private syncGauge(): void {
    this.ops!.admission.inflight = this.lifecycle.inflight - this.probing;
  }

  /** The runner's drain period has begun (its flag exists): from then on this worker's health path says 503. */
  private drainFlagged(): boolean {
    const f = this.opts.drainFlag;
    if (!this.announced && f && existsSync(f)) {
      this.announced = true;
      this.ops!.draining = true;
      this.peers?.changed();
    }
    return this.announced;
  }

  /** A health or metrics probe: core's Operations answers it, before admission, uncounted. */
  private probe(conn: Connection, m: RequestMsg, body: BodySource | null, probe: Probe): void {
    const ops = this.ops!;
    this.drainFlagged();
    const ctx = new RequestContext('apache', m.clientIp, this.lifecycle, m.id || undefined, m.user || undefined, m.basePath);
    const req = new ApacheRequest(m, body, { authority: 'localhost', path: '/' }, ctx);
    this.probes.add(req);
    this.probing++;
    this.lifecycle.begin();
    conn.begin(req);
    this.syncGauge();
    void ops.answer(probe, m.clientIp).then((a) => {
      const headers: [string, string][] = [['content-type', a.type], ['cache-control', 'no-store'], ...(a.headers ?? [])];
      respond(conn, req, new Response(a.body, { status: a.status, headers }), this);
    });
  }

  private logPhase(m: RequestMsg): void {
    if (!this.hasLog || !m.log) return;
    const ctx = new RequestContext('apache', m.clientIp, this.lifecycle, m.id || undefined, m.user || undefined, m.basePath);
    runLog(
      this.handler,
      { method: m.method, url: requestUrl(m), status: m.log.status, bytes: m.log.bytes, durationMs: m.log.durationUs / 1000, user: ctx.user },
      ctx,
      this.log,
    );
  }

  /** The answer to `req` is written (or abandoned): the content phase's `log` runs now. */
  finished(conn: Connection, req: ApacheRequest, status: number, bytes: number): void {
    this.lifecycle.end();
    conn.done(req);
    if (this.probes.delete(req)) {
      this.probing--;
      return;
    }
    // An access phase that let the request go on (status 0) is not an answer: the content phase counts it.
    if (this.ops?.counts && (status > 0 || req._m.phase === Phase.FULL)) this.count(req, status);
    if (this.hasLog && req._m.phase === Phase.FULL) {
      const ctx = req._ctx;
      runLog(
        this.handler,
        { method: req.method, url: req.url, status, bytes, durationMs: performance.now() - req._start, user: ctx.user },
        ctx,
        this.log,
      );
    }
    if (++this.served === this.opts.maxRequests) {
      this.log(`served ${this.served} requests (max-requests): recycling`);
      void this.drain('recycle');
    }
  }

  /** Apache's request-timeout answered `ex` with 504. */
  timedOut(ex: Exchange): void {
    if (this.ops?.counts && ex instanceof ApacheRequest) this.count(ex, 504);
  }

  private count(req: ApacheRequest, status: number): void {
    if (this.counted.has(req)) return;
    this.counted.add(req);
    this.syncGauge();
    this.ops!.finished(status, Date.now() - req._m.startUs / 1000);
    this.peers?.changed();
  }

  /** The response with Server-Timing: queue (from Apache's arrival to this worker), auth, fetch. */
  wire(req: ApacheRequest, raw: RawResponse): RawResponse {
    if (!this.opts.serverTiming || this.probes.has(req)) return raw;
    const fetchAll = performance.now() - req._start;
    const auth = authMs(req._ctx);
    const queueMs = Date.now() - fetchAll - req._m.startUs / 1000;
    return { ...raw, headers: [...raw.headers, 'server-timing', serverTimingValue({ queueMs, authMs: auth, fetchMs: fetchAll - (auth ?? 0) })] };
  }

  /**
   * Graceful stop (SIGTERM, max-requests), by core's shutdown(): stop accepting
   * and say GOAWAY on every connection, wait until Apache has let them all go
   * (a REQUEST that crossed the GOAWAY is still served), then in-flight and
   * waitUntil work drain, what is left at graceful-timeout is cut, `close` runs,
   * and the process exits 0.
   */
  async drain(why: RestartReason = 'reload'): Promise<void> {
    if (this.draining) return;
    this.draining = true;
    if (this.ops) this.ops.draining = true;
    this.peers?.changed();
    const deadline = Date.now() + this.opts.gracefulTimeoutMs;
    const drained = await shutdown({
      // Open WebSockets keep working until the deadline, then get 1001 (their close hooks run before `close`).
      stopAccepting: () => this.letGo(deadline).then(() => this.sockets.closeAll()),
      lifecycle: this.lifecycle,
      get timeoutMs() {
        return Math.max(LAST_WAIT_MS, deadline - Date.now());
      },
      forceClose: () => {
        for (const c of this.conns) c.destroy();
      },
      handler: this.handler,
      log: this.log,
    });
    if (!drained) this.log(`graceful-timeout (${this.opts.gracefulTimeoutMs / 1000} s) reached with work still pending`);
    this.peers?.leave(why);
    process.exit(0);
  }

  /** Closes the listener and says GOAWAY everywhere; resolves when no connection is left, or at `deadline`. */
  private letGo(deadline: number): Promise<void> {
    this.server?.close();
    for (const c of this.conns) c.goAway();
    if (this.conns.size === 0) return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, Math.max(0, deadline - Date.now()));
      this.connsGone = () => {
        clearTimeout(timer);
        resolve();
      };
    });
  }
}

/** A request's headers by lower-case name (repeats joined with ', '), as node:http gives them to ws. */
function headerRecord(flat: readonly string[]): Record<string, string> {
  const h: Record<string, string> = {};
  for (let i = 0; i < flat.length; i += 2) {
    const k = flat[i]!.toLowerCase();
    h[k] = h[k] === undefined ? flat[i + 1]! : `${h[k]}, ${flat[i + 1]!}`;
  }
  return h;
}

/**
 * Starts a worker for a loaded handler module (the default export, or the
 * module itself, is the handler). A start-up failure says why in one line and exits 78.
 */
export async function startWorker(mod: unknown, opts?: WorkerOptions): Promise<Worker> {
  try {
    const handler = assertHandler(mod, process.env.TSGI_HANDLER ?? 'handler');
    const o = opts ?? optionsFromEnv();
    await initHandler(handler, { server: 'apache', env: process.env });
    const w = new Worker(handler, o);
    await w.listen();
    sayReady();
    const stop = () => void w.drain();
    process.on('SIGTERM', stop);
    process.on('SIGINT', stop);
    return w;
  } catch (err) {
    fatal(err);
  }
}

/**
 * The entry of a worker bundle (core's bundleWorker, for `tsgi apache run`):
 * `load` imports the handler module, so a throw while it loads is a start-up
 * failure like any other (one line, exit 78).
 */
export async function runWorker(load: () => Promise<unknown>, where: string): Promise<Worker> {
  let mod: unknown;
  try {
    mod = await load();
  } catch (err) {
    fatal(loadFailure(where, err));
  }
  return startWorker(mod);
}

/**
 * Listening, init done: "ready" on the status pipe (mod_tsgi's reload gate waits for it before the previous
 * workers drain), then it is closed, so the handler's child processes do not inherit it.
 */
function sayReady(): void {
  const fd = Number(process.env.TSGI_STATUS_FD);
  if (!Number.isInteger(fd) || fd <= 2) return;
  try {
    writeSync(fd, 'ready\n');
  } catch {
    // not open
  }
  try {
    closeSync(fd);
  } catch {
    // not open
  }
}

/**
 * A start-up failure: one line saying why, then exit EXIT_STARTUP (78), so
 * mod_tsgi backs off instead of respawning at once (decision 9). The line goes
 * to the status pipe (TSGI_STATUS_FD) when mod_tsgi gave one, so that mod_tsgi
 * logs it once with its next attempt; else to stderr (the error log).
 */
function fatal(err: unknown): never {
  const msg = startupReason(err);
  const fd = Number(process.env.TSGI_STATUS_FD);
  let told = false;
  if (Number.isInteger(fd) && fd > 2) {
    try {
      writeSync(fd, `${msg}\n`);
      told = true;
    } catch {
      // no status pipe after all
    }
  }
  if (!told) console.error(`[tsgi ${process.env.TSGI_DAEMON ?? ''} worker pid ${process.pid}] start-up failed: ${msg}`);
  process.exit(EXIT_STARTUP);
}

function isMain(): boolean {
  const argv1 = process.argv[1];
  if (!argv1) return false;
  try {
    return import.meta.url === pathToFileURL(realpathSync(argv1)).href;
  } catch {
    return false;
  }
}

// `node dist/worker.js`: load TSGI_HANDLER. A bundle (tsgi apache run) defines
// TSGI_BUNDLED at build time and calls runWorker itself.
if (process.env.TSGI_BUNDLED !== '1' && isMain()) {
  const path = process.env.TSGI_HANDLER;
  if (!path) fatal(new StartupError('TSGI_HANDLER is not set (this script is started by mod_tsgi)'));
  loadHandler(path).then((h) => startWorker(h), fatal);
}
