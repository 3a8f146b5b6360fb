import { fork } from 'node:child_process';
import { existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Server as NetServer, type AddressInfo } from 'node:net';
import { userInfo } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import { defaultErrorLogger, type ErrorLogger, type Handler } from '@tsgi/core';
import {
  Operations,
  STALL_GRACE_MS,
  StartupError,
  WorkerPool,
  linkWorker,
  needsSupervisor,
  bindListenHandle,
  checkBoundPort,
  drainPeriod,
  listenError,
  loadHandler,
  reportReady,
  reportStartupFailure,
  shutdown,
  startupReason,
  type DrainPeriod,
  type OpsSettings,
  type WorkerLink,
} from '@tsgi/core/node';
import { toNodeListener, type NodeAdapterOptions, type NodeListener } from './listener.js';
import type { WebSocketOptions } from './websocket.js';

export interface ServeOptions extends NodeAdapterOptions, WebSocketOptions {
  port?: number;
  host?: string;
  unixSocket?: string;
  /** Worker processes sharing one listening socket; 0 or 1 serves in this process. */
  workers?: number;
  /** How long shutdown waits for in-flight requests and waitUntil work (ms, default 10 s). */
  gracefulTimeout?: number;
  /** SIGTERM/SIGINT stop gracefully, SIGHUP reloads (default true). */
  handleSignals?: boolean;
  /**
   * The handler (every worker, or this process) sees only HOME, USER, LOGNAME
   * (this user's), PATH (inherited, else a default) and the `keepEnv` names
   * that are set. Default: the environment as it is.
   */
  clearEnv?: boolean;
  keepEnv?: string[];
  /**
   * Operations (issue 12): request-timeout, admission, recycling, health, metrics,
   * Server-Timing. Recycling (max-requests, max-heap) needs a process to replace:
   * without `workers`, it runs one supervised worker.
   */
  operations?: Partial<OpsSettings>;
}

export interface TsgiServer {
  /** http://host:port/ or unix:/path */
  url: string;
  /** Stops accepting, drains in-flight requests and waitUntil work, runs close(). */
  close(): Promise<void>;
  /**
   * Graceful reload onto the handler as it is now (a handler given by path):
   * the new one starts (init) while the old one serves; then new requests go
   * to it, the old one drains and its close() runs. Resolves false when the new
   * one did not start (the old one keeps serving; the reason is printed).
   */
  reload(): Promise<boolean>;
}

// The descriptor a worker finds its primary's listening socket on.
const WORKER_FD = 3;
const WORKER_ENV = 'TSGI_SERVE_WORKER';
// Node's keep-alive timeout for idle connections (ms); undici clients stop reusing one a second before.
const KEEP_ALIVE_MS = 5_000;

/** This process is a worker forked by a `workers: N` primary (the mark is removed so the handler's own children lack it). */
export const isServeWorker: boolean = process.env[WORKER_ENV] === '1' && typeof process.send === 'function';
delete process.env[WORKER_ENV];

type ListenAt = { host: string; port: number } | { path: string };

/** What `clearEnv` leaves: HOME, USER and LOGNAME as a login would set them, PATH, and the names asked for. */
export function cleanEnvironment(src: NodeJS.ProcessEnv, keep: readonly string[] = []): Record<string, string> {
  const me = userInfo();
  const out: Record<string, string> = {
    HOME: me.homedir,
    USER: me.username,
    LOGNAME: me.username,
    PATH: src.PATH || '/usr/local/bin:/usr/bin:/bin',
  };
  for (const k of keep) if (src[k] !== undefined) out[k] = src[k]!;
  return out;
}

/** Replaces this process's environment with `env` (before the handler loads). */
function replaceEnvironment(env: Record<string, string>): void {
  for (const k of Object.keys(process.env)) if (!(k in env)) delete process.env[k];
  Object.assign(process.env, env);
}

function listenAt(opts: ServeOptions): ListenAt {
  return opts.unixSocket ? { path: opts.unixSocket } : { host: opts.host ?? '127.0.0.1', port: opts.port ?? 3000 };
}

/** Listens on the address, or (a worker) on the socket its primary passed as WORKER_FD. */
function listen(server: Server, at: ListenAt, inherited: boolean): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(listenError(at, err.code)));
    const onListening = (): void => {
      try {
        if (inherited) checkBoundPort(at, server);
      } catch (err) {
        server.close();
        return reject(err);
      }
      if ('path' in at) return resolve(`unix:${at.path}`);
      const { address, port } = server.address() as AddressInfo;
      resolve(`http://${address.includes(':') ? `[${address}]` : address}:${port}/`);
    };
    if (inherited) server.listen({ fd: WORKER_FD }, onListening);
    else if ('path' in at) {
      // A socket file left by a crashed run would make listen fail with EADDRINUSE.
      if (existsSync(at.path)) unlinkSync(at.path);
      server.listen(at.path, onListening);
    } else server.listen(at.port, at.host, onListening);
  });
}

type Signals = Partial<Record<NodeJS.Signals, () => void>>;

function onSignals(handlers: Signals): () => void {
  const names = Object.keys(handlers) as NodeJS.Signals[];
  for (const n of names) process.on(n, handlers[n]!);
  return () => {
    for (const n of names) process.off(n, handlers[n]!);
  };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

/** Loads (a path: anew) and inits one generation of the handler. */
async function startGeneration(source: Handler | string, opts: ServeOptions, fresh: boolean): Promise<NodeListener> {
  const h = typeof source === 'string' ? await loadHandler(source, { fresh }) : source;
  const listener = toNodeListener(h, opts);
  await listener.ready; // a failing init stops start-up before we listen
  return listener;
}

const retirements = new WeakMap<NodeListener, Promise<boolean>>();

/**
 * A generation a reload replaced (or one left at stop): its in-flight requests
 * and waitUntil work drain (bounded), then its close() runs, once: core's
 * shutdown, with nothing to stop accepting (the server goes on for the new one).
 */
function retire(g: NodeListener, timeout: number, log: ErrorLogger): Promise<boolean> {
  let p = retirements.get(g);
  if (!p) {
    // Its WebSockets had the graceful timeout to end; the rest get 1001 (websocket.ts).
    p = shutdown({ stopAccepting: () => {}, lifecycle: g.lifecycle, timeoutMs: timeout, forceClose: g.closeSockets, handler: g.handler, log });
    retirements.set(g, p);
  }
  return p;
}

/**
 * Stops accepting: at once for idle connections (`gentle` false), or (`gentle`,
 * a worker being replaced) leaving them to their keep-alive timer, which
 * clients expect (http.Server#close also destroys idle connections, even one
 * accepted a moment ago whose request is still on its way; net.Server#close
 * only stops accepting). Responses meanwhile carry Connection: close.
 * Resolves with the end of the last connection.
 */
function stopAccepting(server: Server, gentle: boolean): Promise<void> {
  const closed = new Promise<void>((r) => server.once('close', () => r()));
  if (gentle) NetServer.prototype.close.call(server);
  else server.close();
  return closed;
}

/** One process serving: the CLI without --workers, or one worker of a primary (`worker`). */
async function serveHere(source: Handler | string, opts: ServeOptions, worker: boolean): Promise<TsgiServer> {
  const timeout = opts.gracefulTimeout ?? 10_000;
  const log = opts.onError ?? defaultErrorLogger;
  const at = listenAt(opts);
  let current: NodeListener | undefined;
  let server: Server | undefined;
  let url = '';
  const generations = new Set<NodeListener>(); // not yet closed
  let stopping: Promise<void> | undefined;
  let reloading: Promise<boolean> = Promise.resolve(true);
  // One per process, across reloads: the counters go on.
  const ops = opts.operations ? new Operations(opts.operations) : undefined;
  if (ops) opts = { ...opts, ops };
  const link: WorkerLink | undefined = ops && worker ? linkWorker(ops) : undefined;

  const started = (async () => {
    current = await startGeneration(source, opts, false);
    generations.add(current);
    if (stopping) return; // stopped during init: serve nothing, close() still runs
    const s = createServer({ keepAliveTimeout: KEEP_ALIVE_MS }, (req, res) => current!(req, res));
    s.on('upgrade', (req, socket, head: Buffer) => current!.upgrade(req, socket, head));
    try {
      url = await listen(s, at, worker);
    } catch (err) {
      await retire(current, timeout, log); // init ran: so does close
      throw err;
    }
    server = s;
    if (ops) ops.ready = true;
  })();

  // core's drain-then-close: stop accepting, drain every generation, cut what is left, then close() once each.
  const stop = (gentle: boolean): Promise<void> =>
    (stopping ??= (async () => {
      await started.catch(() => {});
      await reloading; // a generation starting now is closed too
      const gens = [...generations];
      if (ops) ops.draining = true;
      if (!current) return;
      for (const g of gens) g.draining = true;
      const s = server;
      let closed: Promise<void> = Promise.resolve();
      await shutdown({
        stopAccepting: () => {
          if (s) closed = stopAccepting(s, gentle);
        },
        lifecycle: { drain: (ms) => Promise.all(gens.map((g) => g.lifecycle.drain(ms))).then((all) => all.every(Boolean)) },
        timeoutMs: timeout,
        forceClose: async () => {
          await Promise.all(gens.map((g) => g.closeSockets()));
          if (!s) return;
          // A worker being replaced lets idle keep-alive connections end on their own timer first.
          if (gentle) await Promise.race([closed, sleep(KEEP_ALIVE_MS)]);
          s.closeAllConnections();
          await closed;
        },
        handler: current.handler,
        log,
      });
      await Promise.all(gens.map((g) => retire(g, timeout, log)));
    })());

  const reload = (): Promise<boolean> =>
    (reloading = reloading.then(async () => {
      try {
        await started;
      } catch {
        return false;
      }
      if (stopping) return false;
      if (typeof source !== 'string') {
        console.error('tsgi: reload needs a handler path (serve() was given a handler object); still serving');
        return false;
      }
      let next: NodeListener;
      try {
        next = await startGeneration(source, opts, true);
      } catch (err) {
        console.error(`tsgi: reload failed: ${startupReason(err)}; the running handler keeps serving`);
        return false;
      }
      generations.add(next);
      const old = current!;
      current = next;
      console.error('tsgi: reloaded');
      void retire(old, timeout, log).then(() => generations.delete(old));
      return true;
    }));

  // A worker's last counters reach its supervisor before it goes.
  const exitAfter = (gentle: boolean) => (): void =>
    void stop(gentle)
      .then(() => link?.final())
      .then(() => process.exit(0));
  let off = (): void => {};
  if (worker) {
    // The primary decides: Ctrl-C and a terminal hangup reach the whole process group.
    off = onSignals({ SIGTERM: exitAfter(false), SIGINT: () => {}, SIGHUP: () => {} });
    process.on('message', (m: { tsgi?: string }) => {
      if (m?.tsgi === 'retire') exitAfter(true)();
    });
    process.on('disconnect', exitAfter(false));
  } else if (opts.handleSignals !== false) {
    const hup = typeof source === 'string' ? () => void reload() : exitAfter(false);
    // --drain-delay: serving goes on, the health path says 503, then the stop; a second signal cuts it short.
    let period: DrainPeriod | undefined;
    const term = (): void => {
      if (period) return period.cut();
      const ms = ops?.s.drainDelayMs ?? 0;
      if (stopping || ms <= 0 || !ops?.ready) return exitAfter(false)();
      ops.draining = true;
      period = drainPeriod(ms, (line) => console.error(`tsgi serve: ${line}`));
      void period.over.then(exitAfter(false));
    };
    // A reload during the drain period would only start what is about to stop.
    off = onSignals({ SIGTERM: term, SIGINT: term, SIGHUP: () => period || hup() });
  }

  try {
    await started;
  } catch (err) {
    off();
    throw err;
  }
  if (stopping) {
    // A signal stopped us during start-up; its handler exits once close() ran.
    await stopping;
    throw Object.assign(new StartupError('stopped during start-up'), { reported: true });
  }
  return {
    url,
    close: () => stop(false).finally(off),
    reload,
  };
}

/**
 * Primary side of `workers: N`: core's WorkerPool. It binds the listening
 * socket itself and forks N copies of this script, each listening on its copy
 * (fd 3); it never accepts. The socket stays open while workers come and go,
 * so a connection either reaches a live worker or waits in the backlog for a
 * new one. A start-up failure before the first worker is ready stops
 * everything (the worker's one line is printed once, by the CLI); afterwards
 * workers that die are respawned with back-off.
 */
async function servePrimary(opts: ServeOptions): Promise<TsgiServer> {
  const n = opts.workers ?? 1;
  const requestTimeout = opts.operations?.requestTimeoutMs ?? 0;
  const timeout = opts.gracefulTimeout ?? 10_000;
  const script = process.argv[1];
  if (!script) throw new StartupError('workers need a script to fork (process.argv[1] is empty)');
  const handle = await bindListenHandle(listenAt(opts));
  // One handle for every slot, closed here once the pool has stopped.
  const shared = { fd: handle.fd, close: () => {} };
  const env = { ...(opts.clearEnv ? cleanEnvironment(process.env, opts.keepEnv) : process.env), [WORKER_ENV]: '1' };
  const pool = new WorkerPool({
    size: n,
    listen: () => shared,
    spawn: () =>
      fork(script, process.argv.slice(2), { execArgv: process.execArgv, env, stdio: ['ignore', 'inherit', 'inherit', handle.fd, 'ipc'] }),
    retireMessage: { tsgi: 'retire' },
    retireGraceMs: timeout + KEEP_ALIVE_MS + 2_000,
    stopGraceMs: timeout + 2_000,
    log: (m) => console.error(`[tsgi] ${m}`),
    // A worker whose event loop is blocked (a CPU loop) cannot see its requests' deadline.
    stallMs: requestTimeout > 0 ? requestTimeout + STALL_GRACE_MS : 0,
  });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> => (closing ??= pool.stop().then(() => handle.close()));

  let reloading: Promise<boolean> = Promise.resolve(true);
  const reload = (): Promise<boolean> =>
    (reloading = reloading.then(async () => {
      try {
        if (!(await pool.reload())) return false;
      } catch (err) {
        console.error(`tsgi: reload failed: a new worker did not start: ${startupReason(err)}; the old workers keep serving`);
        return false;
      }
      console.error(`tsgi: reloaded (${n} new workers)`);
      return true;
    }));

  let stopping = false;
  let period: DrainPeriod | undefined;
  const exit = (): void => {
    if (period) return period.cut();
    stopping = true;
    const ms = opts.operations?.drainDelayMs ?? 0;
    if (ms > 0 && pool.served) {
      // --drain-delay: the workers keep serving with their health path at 503, then the stop; a second signal cuts it short.
      pool.announceDrain();
      period = drainPeriod(ms, (line) => console.error(`tsgi serve: ${line}`));
      void period.over.then(close).then(() => process.exit(0));
      return;
    }
    void close().then(() => process.exit(0));
  };
  const off = opts.handleSignals === false ? () => {} : onSignals({ SIGTERM: exit, SIGINT: exit, SIGHUP: () => stopping || void reload() });

  try {
    await pool.start();
  } catch (err) {
    if (stopping) {
      await close();
      throw Object.assign(new StartupError('stopped during start-up'), { reported: true });
    }
    off();
    handle.close();
    throw err;
  }
  const first = pool.workers.find((w) => typeof w.ready?.url === 'string');
  return { url: String(first?.ready?.url ?? ''), close: () => close().finally(off), reload };
}

/**
 * Serves a handler (object or module path) on node:http. With `workers: N > 1`
 * the calling script runs again in N worker processes (as with node:cluster);
 * each worker's call to serve() listens on the primary's socket.
 */
export async function serve(handler: Handler | string, opts: ServeOptions = {}): Promise<TsgiServer> {
  if (isServeWorker) {
    try {
      const s = await serveHere(handler, opts, true);
      reportReady({ url: s.url });
      return s;
    } catch (err) {
      if ((err as { reported?: boolean }).reported) process.exit(0);
      return reportStartupFailure(err, 'tsgi serve: ');
    }
  }
  if ((opts.workers ?? 0) > 1 || (opts.operations && needsSupervisor(opts.operations))) {
    if (typeof handler === 'string' && !existsSync(handler)) throw new StartupError(`handler not found: ${resolvePath(handler)}`);
    return servePrimary(opts);
  }
  if (opts.clearEnv) replaceEnvironment(cleanEnvironment(process.env, opts.keepEnv));
  return serveHere(handler, opts, false);
}
