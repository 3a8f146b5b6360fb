/**
 * Workers mode: N Node workers behind nginx, each on its own Unix socket,
 * supervised by core's WorkerPool (the policy every Node host shares).
 *
 * The supervisor creates every listening socket itself and hands it to the
 * worker as fd 3, keeping its own copy: when a worker dies, the socket stays
 * open and connections queue in its backlog until the respawned worker
 * accepts them, so only the requests in flight in the dead worker fail.
 * Graceful reload: a new set of workers on fresh sockets, nginx reloaded onto
 * them once all are ready, then the old workers drain and exit.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, unlinkSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULT_GRACEFUL_MS, STALL_GRACE_MS, WorkerPool, bindUnixHandle, startupReason, writeFileBeside, type ListenHandle, type OpsSettings, type PoolWorker } from '@tsgi/core/node';
import type { WorkerConfig } from './worker.js';

/** A slot's socket: its path (nginx's config lists them), and closing it removes the file. */
interface SocketHandle extends ListenHandle {
  path: string;
}

/**
 * A bound Unix socket that this process never accepts on (core's shared
 * handle); the worker calls listen() on its copy of the fd. Only nginx's
 * workers (their group) and our own user may connect; the directory is private too.
 */
function socketHandle(path: string, gid: number | undefined): SocketHandle {
  const h = bindUnixHandle(path);
  if (gid !== undefined) {
    chownSync(path, process.getuid?.() ?? 0, gid);
    chmodSync(path, 0o660);
  } else chmodSync(path, 0o600);
  return {
    fd: h.fd,
    path,
    close: () => {
      h.close();
      try {
        unlinkSync(path);
      } catch {
        /* already gone */
      }
    },
  };
}

export interface SupervisorOptions {
  /** The bundled worker entry (readable by the worker user). */
  entry: string;
  /** Directory for sockets (readable by nginx's user). */
  socketDir: string;
  workers: number;
  maxBody: number;
  uid?: number;
  /** The workers' group, also the sockets' group (nginx's workers connect through it) unless `socketGid` says otherwise. */
  gid?: number;
  /** The sockets' group when it is not the workers' (a system nginx: its own group; the workers get their socket as fd 3). */
  socketGid?: number;
  /**
   * One socket per slot for good, `worker-<i>.sock` (`tsgi nginx workers`, for a system nginx whose config
   * lists them): a reload's new workers accept on the same socket while the old ones drain, so nginx
   * never has to be reloaded. Otherwise each generation gets fresh sockets and `roll` moves nginx onto them.
   */
  stableSockets?: boolean;
  /** The worker user's name and home: HOME, USER and LOGNAME in the workers' environment. */
  account?: { name: string; home: string };
  /** The per-start secret nginx sends (X-Tsgi-Secret); one is made when absent (see `secret`). */
  secret?: string;
  /** host:port nginx listens on: the authority of an HTTP/1.0 request without Host. */
  authority?: string;
  /** A clean environment: only HOME, USER, LOGNAME, PATH, PWD and these names (`--clear-env --env NAME`). */
  clearEnv?: { keep: string[] };
  cwd: string;
  /** Where the current pids are written (tests read it). */
  stateFile?: string;
  log?: (msg: string) => void;
  /**
   * Run the workers as SCHED_BATCH (default true, through util-linux's chrt when present): a worker
   * woken by nginx then does not preempt it, so nginx hands over a batch of requests per wake-up.
   */
  schedBatch?: boolean;
  /** Operations (issue 12) for every worker: sent with the config; request-timeout also sets the stall limit. */
  ops?: Partial<OpsSettings>;
}

const CHRT = ['/usr/bin/chrt', '/bin/chrt'].find((f) => existsSync(f));

/** PATH of a clean environment when PATH is not allowed through (setpriv --reset-env's for a non-root user). */
export const CLEAN_PATH = '/usr/local/bin:/bin:/usr/bin';

/**
 * The environment of a Node worker: the server's own environment with HOME, USER and LOGNAME
 * of the worker user (as `setpriv --reset-env` or a login sets them) and PWD its working
 * directory; with `clearEnv`, only those, PATH and the allowed names.
 */
export function workerEnv(
  base: NodeJS.ProcessEnv,
  o: { cwd: string; account?: { name: string; home: string }; clearEnv?: { keep: string[] } },
): NodeJS.ProcessEnv {
  let env: NodeJS.ProcessEnv;
  if (o.clearEnv) {
    env = { PATH: CLEAN_PATH, HOME: base.HOME, USER: base.USER, LOGNAME: base.LOGNAME };
    for (const k of o.clearEnv.keep) if (base[k] !== undefined) env[k] = base[k];
  } else env = { ...base };
  if (o.account) {
    env.HOME = o.account.home;
    env.USER = o.account.name;
    env.LOGNAME = o.account.name;
  }
  env.PWD = o.cwd;
  for (const k of Object.keys(env)) if (env[k] === undefined) delete env[k];
  return env;
}

/** Supervisor -> worker: close the open WebSockets with 1001 after `afterMs` (socketsGoingAway). */
export interface SocketsGoingAway {
  tsgi: 'sockets-going-away';
  afterMs: number;
}

/** The socket of slot `index` with `stableSockets` (what `tsgi nginx conf --socket-dir` lists). */
export const stableSocketPath = (dir: string, index: number): string => join(dir, `worker-${index}.sock`);

export class Supervisor {
  private pool: WorkerPool<SocketHandle>;
  private stable: SocketHandle[] = [];
  private log: (msg: string) => void;
  /** The worker bundle of each generation (a reload may bring a rebuilt one). */
  private entries: string[];

  /** The per-start secret: nginx's config must send it in X-Tsgi-Secret (config.ts proxyCommon). */
  readonly secret: string;
  private env: NodeJS.ProcessEnv;

  constructor(private o: SupervisorOptions) {
    this.log = o.log ?? ((m) => console.error(`tsgi nginx: ${m}`));
    this.secret = o.secret ?? randomBytes(32).toString('hex');
    this.env = workerEnv(process.env, o);
    this.entries = [o.entry];
    const gid = o.socketGid ?? o.gid;
    this.pool = new WorkerPool<SocketHandle>({
      size: o.workers,
      listen: (index, generation) => {
        if (!o.stableSockets) return socketHandle(join(o.socketDir, `worker-${index}-${generation}.sock`), gid);
        // The slot's one socket, closed only by stop(): a retired generation's close leaves it open.
        const h = (this.stable[index] ??= socketHandle(stableSocketPath(o.socketDir, index), gid));
        return { fd: h.fd, path: h.path, close: () => {} };
      },
      spawn: (w) => this.spawn(w),
      retireGraceMs: 15_000,
      stopGraceMs: 10_000,
      log: this.log,
      onChange: () => this.writeState(),
      // A worker whose event loop is blocked (a CPU loop) cannot see its requests' deadline.
      stallMs: (o.ops?.requestTimeoutMs ?? 0) > 0 ? o.ops!.requestTimeoutMs! + STALL_GRACE_MS : 0,
    });
  }

  get sockets(): string[] {
    return this.pool.workers.map((w) => w.handle.path);
  }

  get pids(): number[] {
    return this.pool.workers.map((w) => w.child?.pid ?? 0);
  }

  /** Respawns so far (tests and logs). */
  get respawns(): number {
    return this.pool.respawns;
  }

  private spawn(w: PoolWorker<SocketHandle>) {
    // TSGI_WORKER_NODE_ARGS: extra node flags for the workers (--max-old-space-size=..., --cpu-prof, ...).
    const extra = (process.env.TSGI_WORKER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
    const argv = ['--enable-source-maps', ...extra, this.entries[w.generation] ?? this.o.entry];
    // chrt execs node in place: the pid, fds and IPC channel are node's.
    const batch = this.o.schedBatch !== false && CHRT;
    const child = spawn(batch ? CHRT : process.execPath, batch ? ['--batch', '0', process.execPath, ...argv] : argv, {
      cwd: this.o.cwd,
      uid: this.o.uid,
      gid: this.o.gid,
      env: this.env,
      stdio: ['ignore', 'inherit', 'inherit', w.handle.fd, 'ipc'],
    });
    // Over IPC, not the environment: /proc/<pid>/environ is readable by the worker user's other processes.
    child.send({ tsgi: 'config', secret: this.secret, authority: this.o.authority ?? 'localhost', maxBody: this.o.maxBody, ops: this.o.ops } satisfies WorkerConfig, () => {
      /* a worker that could not start says so through its exit */
    });
    return child;
  }

  private writeState(): void {
    if (!this.o.stateFile) return;
    // Written beside, then renamed: a reader never sees a half-written file.
    writeFileBeside(this.o.stateFile, JSON.stringify({ pids: this.pids, sockets: this.sockets, respawns: this.respawns }) + '\n');
  }

  /** Starts the workers; rejects with the one line (the worker's own reason) when the first cannot start. */
  async start(): Promise<void> {
    await this.pool.start();
  }

  /**
   * Graceful reload: a new set of workers on fresh sockets; once all are ready,
   * `reloadNginx` moves nginx onto the new socket list (it resolves once the
   * nginx workers that knew the old sockets are gone), then the old workers
   * drain and exit. `entry`: a rebuilt worker bundle for the new workers.
   * Resolves false when a new worker could not start (the old ones keep
   * serving) or a stop began; rethrows what `reloadNginx` throws (the old
   * workers are then kept until stop(): nginx may still be using them).
   */
  async roll(reloadNginx: (sockets: string[]) => Promise<void>, entry?: string): Promise<boolean> {
    const next = this.pool.generation + 1;
    this.entries[next] = entry ?? this.entries[this.pool.generation]!;
    let ok: boolean;
    let nginxFailed: unknown;
    const old = this.pool.workers.map((w) => w.child);
    try {
      ok = await this.pool.reload(() => {
        // The old nginx workers wait for the WebSocket tunnels they relay: the old workers end theirs (1001).
        this.goingAway(old, DEFAULT_GRACEFUL_MS);
        return reloadNginx(this.sockets).catch((err: unknown) => {
          nginxFailed = err;
          throw err;
        });
      });
    } catch (err) {
      if (err === nginxFailed) throw err;
      this.log(`reload: the new worker failed to start, keeping the old one: ${startupReason(err)}`);
      return false;
    }
    if (ok) await this.pool.settled();
    return ok;
  }

  /**
   * Tells every worker that its open WebSockets get `afterMs` more, then close code 1001 (a graceful
   * stop: nginx waits for the tunnels it relays, so the workers must end them; worker.ts).
   */
  socketsGoingAway(afterMs: number): void {
    this.goingAway(
      this.pool.workers.map((w) => w.child),
      afterMs,
    );
  }

  private goingAway(children: (ChildProcess | undefined)[], afterMs: number): void {
    for (const c of children) if (c?.connected) c.send({ tsgi: 'sockets-going-away', afterMs } satisfies SocketsGoingAway, () => {});
  }

  /** A drain period before the stop (--drain-delay): the workers' health path answers 503 (core's WorkerPool tells them). */
  announceDrain(): void {
    this.pool.announceDrain();
  }

  async stop(graceMs = 10_000): Promise<void> {
    await this.pool.stop(graceMs);
    for (const h of this.stable.splice(0)) h.close();
  }
}
