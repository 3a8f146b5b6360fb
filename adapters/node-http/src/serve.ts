import { fork, type ChildProcess } from 'node:child_process';
import { existsSync, unlinkSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { Server as NetServer, type AddressInfo } from 'node:net';
import { userInfo } from 'node:os';
import { resolve as resolvePath } from 'node:path';
import type { Handler } from '@tsgi/core';
import { StartupError, bindListenHandle, checkBoundPort, listenError, loadHandler } from '@tsgi/core/node';
import { toNodeListener, type NodeAdapterOptions, type NodeListener } from './listener.js';

export interface ServeOptions extends NodeAdapterOptions {
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

// A worker that exits with this code failed to start.
const EXIT_STARTUP = 78;
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

const retirements = new WeakMap<NodeListener, Promise<void>>();

/** A generation's in-flight requests and waitUntil work drain (bounded), then its close() runs, once. */
function retire(g: NodeListener, timeout: number): Promise<void> {
  let p = retirements.get(g);
  if (!p) {
    p = (async () => {
      if (!(await g.lifecycle.drain(timeout))) {
        console.error(`[tsgi] shutdown: in-flight work still running after ${timeout} ms; closing anyway`);
      }
      if (!g.handler.close) return;
      try {
        await g.handler.close();
      } catch (err) {
        console.error('[tsgi] close() threw', err);
      }
    })();
    retirements.set(g, p);
  }
  return p;
}

/**
 * Stops accepting and ends every connection: at once when idle (`gentle`
 * false), or (`gentle`, a worker being replaced) when its keep-alive timer
 * ends it, which clients expect; responses meanwhile carry Connection: close.
 * Bounded by `timeout` after the generations drained.
 */
async function closeServer(server: Server, gens: NodeListener[], timeout: number, gentle: boolean): Promise<void> {
  for (const g of gens) g.draining = true;
  const closed = new Promise<void>((r) => server.once('close', () => r()));
  // http.Server#close also destroys idle connections, even one accepted a moment ago whose request is
  // still on its way; net.Server#close only stops accepting.
  if (gentle) NetServer.prototype.close.call(server);
  else server.close();
  const drained = Promise.all(gens.map((g) => g.lifecycle.drain(timeout)));
  await Promise.race([gentle ? Promise.all([drained, closed]) : drained, sleep(timeout + (gentle ? KEEP_ALIVE_MS : 0))]);
  server.closeAllConnections();
  server.close();
  await closed;
}

/** One process serving: the CLI without --workers, or one worker of a primary (`worker`). */
async function serveHere(source: Handler | string, opts: ServeOptions, worker: boolean): Promise<TsgiServer> {
  const timeout = opts.gracefulTimeout ?? 10_000;
  const at = listenAt(opts);
  let current: NodeListener | undefined;
  let server: Server | undefined;
  let url = '';
  const generations = new Set<NodeListener>(); // not yet closed
  let stopping: Promise<void> | undefined;
  let reloading: Promise<boolean> = Promise.resolve(true);

  const started = (async () => {
    current = await startGeneration(source, opts, false);
    generations.add(current);
    if (stopping) return; // stopped during init: serve nothing, close() still runs
    const s = createServer({ keepAliveTimeout: KEEP_ALIVE_MS }, (req, res) => current!(req, res));
    try {
      url = await listen(s, at, worker);
    } catch (err) {
      await retire(current, timeout); // init ran: so does close
      throw err;
    }
    server = s;
  })();

  const stop = (gentle: boolean): Promise<void> =>
    (stopping ??= (async () => {
      await started.catch(() => {});
      await reloading; // a generation starting now is closed too
      const gens = [...generations];
      if (server) await closeServer(server, gens, timeout, gentle);
      await Promise.all(gens.map((g) => retire(g, timeout)));
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
        console.error(`tsgi: reload failed: ${err instanceof Error ? err.message : String(err)}; the running handler keeps serving`);
        return false;
      }
      generations.add(next);
      const old = current!;
      current = next;
      console.error('tsgi: reloaded');
      void retire(old, timeout).then(() => generations.delete(old));
      return true;
    }));

  const exitAfter = (gentle: boolean) => (): void => void stop(gentle).then(() => process.exit(0));
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
    off = onSignals({ SIGTERM: exitAfter(false), SIGINT: exitAfter(false), SIGHUP: hup });
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

interface Slot {
  child?: ChildProcess;
  ready: boolean;
  /** Quick successive crashes, for the back-off. */
  crashes: number;
  startedAt: number;
  timer?: NodeJS.Timeout;
  /** Replaced by a reload, or stopping: not respawned. */
  retired: boolean;
  /** Started by a reload that has not committed: failing to start aborts the reload. */
  probation: boolean;
}

const newSlot = (probation = false): Slot => ({ ready: false, crashes: 0, startedAt: 0, retired: false, probation });

/** Respawn delay: quick successive crashes back off 0.1 s doubling to 5 s; 10 s of life resets it (as nginx workers mode). */
function respawnDelay(slot: Slot): number {
  if (Date.now() - slot.startedAt > 10_000) slot.crashes = 0;
  const delay = slot.crashes === 0 ? 0 : Math.min(5_000, 100 * 2 ** (slot.crashes - 1));
  slot.crashes++;
  return delay;
}

/** Ends a child: `how` first, SIGKILL after `graceMs`; resolves when it has exited. */
function terminate(child: ChildProcess, how: 'SIGTERM' | 'retire', graceMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    if (how === 'retire' && child.connected) child.send({ tsgi: 'retire' });
    else child.kill('SIGTERM');
  });
}

/**
 * Primary side of `workers: N`. It binds the listening socket itself and
 * forks N copies of this script, each listening on its copy; it never accepts.
 * The socket stays open while workers come and go, so a connection either
 * reaches a live worker or waits in the backlog for a new one. A worker that
 * dies (before it listened too) is respawned with back-off once the server has
 * served; before that, a start-up failure stops everything.
 */
async function servePrimary(opts: ServeOptions): Promise<TsgiServer> {
  const n = opts.workers!;
  const timeout = opts.gracefulTimeout ?? 10_000;
  const script = process.argv[1];
  if (!script) throw new StartupError('workers need a script to fork (process.argv[1] is empty)');
  const handle = await bindListenHandle(listenAt(opts));
  const children = new Set<ChildProcess>();
  let slots: Slot[] = [];
  let stopping = false;
  let served = false;
  let url = '';

  const launch = (slot: Slot): Promise<void> =>
    new Promise((resolve, reject) => {
      const child = fork(script, process.argv.slice(2), {
        execArgv: process.execArgv,
        env: { ...(opts.clearEnv ? cleanEnvironment(process.env, opts.keepEnv) : process.env), [WORKER_ENV]: '1' },
        stdio: ['ignore', 'inherit', 'inherit', handle.fd, 'ipc'],
      });
      children.add(child);
      slot.child = child;
      slot.ready = false;
      slot.startedAt = Date.now();
      child.on('message', (m: { tsgi?: string; url?: string }) => {
        if (m?.tsgi !== 'ready' || slot.ready || slot.child !== child) return;
        slot.ready = true;
        served = true;
        url ||= m.url ?? '';
        resolve();
      });
      child.once('error', (err) => console.error(`[tsgi] worker: ${err.message}`));
      child.once('exit', (code, signal) => {
        children.delete(child);
        if (slot.child !== child) return;
        slot.child = undefined;
        const how = signal ?? `exit ${code}`;
        if (!slot.ready) {
          // The worker printed its own one-line reason (exit 78); don't repeat it.
          reject(Object.assign(new StartupError(`a worker failed to start (${how})`), { reported: code === EXIT_STARTUP, how }));
        }
        if (stopping || slot.retired || (!slot.ready && (slot.probation || !served))) return;
        const delay = respawnDelay(slot);
        console.error(
          `[tsgi] worker ${child.pid} ${slot.ready ? 'died' : 'exited before it listened'} (${how}); respawning${delay ? ` in ${delay} ms` : ''}`,
        );
        slot.timer = setTimeout(() => {
          slot.timer = undefined;
          if (!stopping && !slot.retired) launch(slot).catch(() => {});
        }, delay);
      });
    });

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      stopping = true;
      for (const s of slots) clearTimeout(s.timer);
      await Promise.all([...children].map((c) => terminate(c, 'SIGTERM', timeout + 2_000)));
      handle.close();
    })());

  let reloading: Promise<boolean> = Promise.resolve(true);
  const reload = (): Promise<boolean> =>
    (reloading = reloading.then(async () => {
      if (stopping || !served) return false;
      const fresh = slots.map(() => newSlot(true));
      try {
        // One first: a handler that no longer starts fails once, with one message.
        await launch(fresh[0]!);
        await Promise.all(fresh.slice(1).map(launch));
      } catch (err) {
        for (const s of fresh) {
          s.retired = true;
          if (s.child) void terminate(s.child, 'SIGTERM', timeout + 2_000);
        }
        if (!stopping) console.error(`tsgi: reload failed: a new worker did not start (${(err as { how?: string }).how}); the old workers keep serving`);
        return false;
      }
      if (stopping) return false;
      const old = slots;
      slots = fresh;
      for (const s of fresh) s.probation = false;
      for (const s of old) {
        s.retired = true;
        clearTimeout(s.timer);
        if (s.child) void terminate(s.child, 'retire', timeout + KEEP_ALIVE_MS + 2_000);
      }
      console.error(`tsgi: reloaded (${fresh.length} new workers)`);
      return true;
    }));

  const exit = (): void => void close().then(() => process.exit(0));
  const off = opts.handleSignals === false ? () => {} : onSignals({ SIGTERM: exit, SIGINT: exit, SIGHUP: () => void reload() });

  slots = Array.from({ length: n }, () => newSlot());
  try {
    // One worker first: a handler that cannot start fails once, with one message.
    await launch(slots[0]!);
    // The others' failures are respawned with back-off: the server has served.
    await Promise.allSettled(slots.slice(1).map(launch));
  } catch (err) {
    if (stopping) {
      await close();
      throw Object.assign(new StartupError('stopped during start-up'), { reported: true });
    }
    off();
    stopping = true;
    for (const c of children) c.kill('SIGKILL');
    handle.close();
    throw err;
  }
  return { url, close: () => close().finally(off), reload };
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
      process.send!({ tsgi: 'ready', url: s.url });
      return s;
    } catch (err) {
      if ((err as { reported?: boolean }).reported) process.exit(0);
      console.error(`tsgi serve: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(EXIT_STARTUP);
    }
  }
  if ((opts.workers ?? 0) > 1) {
    if (typeof handler === 'string' && !existsSync(handler)) throw new StartupError(`handler not found: ${resolvePath(handler)}`);
    return servePrimary(opts);
  }
  if (opts.clearEnv) replaceEnvironment(cleanEnvironment(process.env, opts.keepEnv));
  return serveHere(handler, opts, false);
}
