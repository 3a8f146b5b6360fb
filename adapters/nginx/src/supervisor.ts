/**
 * Workers mode: N Node workers behind nginx, each on its own Unix socket.
 *
 * The supervisor creates every listening socket itself and hands it to the
 * worker as fd 3, keeping its own copy: when a worker dies, the socket stays
 * open and connections queue in its backlog until the respawned worker
 * accepts them, so only the requests in flight in the dead worker fail.
 * Graceful reload rolls the workers one at a time: a new worker on a fresh
 * socket, nginx reloaded onto it, then the old worker drains and exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, unlinkSync, writeFileSync } from 'node:fs';
import * as net from 'node:net';
import { join } from 'node:path';
import { StartupError } from '@tsgi/core/node';
import type { WorkerConfig, WorkerFailed } from './worker.js';

const EXIT_STARTUP = 78;

interface PipeHandle {
  fd: number;
  close(cb?: () => void): void;
}

/**
 * A bound Unix socket that this process never accepts on (cluster's shared
 * handle does the same); the worker calls listen() on its copy of the fd.
 */
function createSocketHandle(path: string, gid: number | undefined): PipeHandle {
  if (existsSync(path)) unlinkSync(path);
  const create = (net as unknown as { _createServerHandle?: (a: string, p: number, t: number) => PipeHandle | number })
    ._createServerHandle;
  if (typeof create !== 'function') throw new StartupError('this Node version cannot create a shared socket handle');
  const h = create(path, -1, -1);
  if (typeof h === 'number') throw new StartupError(`cannot create socket ${path} (error ${h})`);
  // Only nginx's workers (their group) and our own user may connect; the directory is private too.
  if (gid !== undefined) {
    chownSync(path, process.getuid?.() ?? 0, gid);
    chmodSync(path, 0o660);
  } else chmodSync(path, 0o600);
  return h;
}

export interface SupervisorOptions {
  /** The bundled worker entry (readable by the worker user). */
  entry: string;
  /** Directory for sockets (readable by nginx's user). */
  socketDir: string;
  workers: number;
  maxBody: number;
  uid?: number;
  /** The workers' group, also the sockets' group (nginx's workers connect through it). */
  gid?: number;
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

interface Slot {
  index: number;
  /** The worker bundle this slot runs (a reload may bring a rebuilt one). */
  entry: string;
  generation: number;
  socket: string;
  handle: PipeHandle;
  child?: ChildProcess;
  /** Consecutive quick crashes, for the backoff. */
  crashes: number;
  startedAt: number;
  /** Never respawned again (being retired, or kept for nginx workers that still use it). */
  retired: boolean;
  /** Set once: the worker stopped, the socket closed and removed. */
  retiring?: Promise<void>;
  respawnTimer?: NodeJS.Timeout;
}

export class Supervisor {
  private slots: Slot[] = [];
  /** Every slot not yet retired, also those a reload is starting or has just replaced: stop() ends them all. */
  private live = new Set<Slot>();
  private stopping = false;
  private log: (msg: string) => void;
  /** Respawns so far (tests and logs). */
  respawns = 0;

  /** The per-start secret: nginx's config must send it in X-Tsgi-Secret (config.ts proxyCommon). */
  readonly secret: string;
  private env: NodeJS.ProcessEnv;

  constructor(private o: SupervisorOptions) {
    this.log = o.log ?? ((m) => console.error(`tsgi nginx: ${m}`));
    this.secret = o.secret ?? randomBytes(32).toString('hex');
    this.env = workerEnv(process.env, o);
  }

  get sockets(): string[] {
    return this.slots.map((s) => s.socket);
  }

  get pids(): number[] {
    return this.slots.map((s) => s.child?.pid ?? 0);
  }

  private newSlot(index: number, generation: number, entry = this.o.entry): Slot {
    const socket = join(this.o.socketDir, `worker-${index}-${generation}.sock`);
    const slot: Slot = { index, entry, generation, socket, handle: createSocketHandle(socket, this.o.gid), crashes: 0, startedAt: 0, retired: false };
    this.live.add(slot);
    return slot;
  }

  private writeState(): void {
    if (!this.o.stateFile) return;
    writeFileSync(this.o.stateFile, JSON.stringify({ pids: this.pids, sockets: this.sockets, respawns: this.respawns }) + '\n');
  }

  /** Starts the worker of a slot; resolves when it listens, rejects when it cannot start. */
  private launch(slot: Slot): Promise<void> {
    return new Promise((resolve, reject) => {
      // TSGI_WORKER_NODE_ARGS: extra node flags for the workers (--max-old-space-size=..., --cpu-prof, ...).
      const extra = (process.env.TSGI_WORKER_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
      const argv = ['--enable-source-maps', ...extra, slot.entry];
      // chrt execs node in place: the pid, fds and IPC channel are node's.
      const batch = this.o.schedBatch !== false && CHRT;
      const child = spawn(batch ? CHRT : process.execPath, batch ? ['--batch', '0', process.execPath, ...argv] : argv, {
        cwd: this.o.cwd,
        uid: this.o.uid,
        gid: this.o.gid,
        env: this.env,
        stdio: ['ignore', 'inherit', 'inherit', slot.handle.fd, 'ipc'],
      });
      // Over IPC, not the environment: /proc/<pid>/environ is readable by the worker user's other processes.
      child.send({ tsgi: 'config', secret: this.secret, authority: this.o.authority ?? 'localhost', maxBody: this.o.maxBody } satisfies WorkerConfig, () => {
        /* a worker that could not start says so through 'exit' */
      });
      slot.child = child;
      slot.startedAt = Date.now();
      let up = false;
      // The worker's own one line (a throw at load, no fetch, a failing init), sent before it exits 78.
      let reason: string | undefined;
      child.on('message', (m: { tsgi?: string } | WorkerFailed) => {
        if (m?.tsgi === 'failed') reason = (m as WorkerFailed).reason;
        if (m?.tsgi !== 'ready' || up) return;
        up = true;
        this.writeState();
        resolve();
      });
      child.once('error', (err) => {
        if (!up) reject(new StartupError(`cannot start a Node worker: ${err.message}`));
      });
      // 'close', not 'exit': it comes after the IPC channel is drained, so the reason has arrived.
      child.once('close', (code, signal) => {
        if (!up) reject(new StartupError(reason ?? `the Node worker failed to start (${signal ?? `exit ${code}`})`));
      });
      child.once('exit', (code, signal) => {
        if (up) this.onExit(slot, child, code, signal);
      });
    });
  }

  private onExit(slot: Slot, child: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (this.stopping || slot.retired || slot.child !== child) return;
    this.log(`worker ${child.pid} died (${signal ?? `exit ${code}`}); respawning`);
    // Quick successive crashes back off (0.1 s doubling to 5 s); a worker that ran 10 s resets it.
    if (Date.now() - slot.startedAt > 10_000) slot.crashes = 0;
    const delay = slot.crashes === 0 ? 0 : Math.min(5_000, 100 * 2 ** (slot.crashes - 1));
    slot.crashes++;
    slot.respawnTimer = setTimeout(() => {
      slot.respawnTimer = undefined;
      if (this.stopping || slot.retired) return;
      this.respawns++;
      this.launch(slot).catch((err: Error) => {
        this.log(err.message);
        // A worker that cannot start any more (exit 78): keep trying, slower.
        if (!this.stopping && !slot.retired && !slot.respawnTimer) this.onExit(slot, slot.child!, EXIT_STARTUP, null);
      });
    }, delay);
  }

  async start(): Promise<void> {
    for (let i = 0; i < this.o.workers; i++) this.slots.push(this.newSlot(i, 0));
    try {
      // One first: a broken handler fails once, with one message.
      await this.launch(this.slots[0]!);
      await Promise.all(this.slots.slice(1).map((s) => this.launch(s)));
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  /** Stops a slot's worker (SIGTERM: it drains; SIGKILL after `graceMs`) and removes its socket. Idempotent. */
  private retire(slot: Slot, graceMs: number): Promise<void> {
    slot.retired = true;
    if (slot.respawnTimer) clearTimeout(slot.respawnTimer);
    return (slot.retiring ??= (async () => {
      const child = slot.child;
      if (child?.pid !== undefined && child.exitCode === null && child.signalCode === null) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
          child.once('exit', () => {
            clearTimeout(t);
            resolve();
          });
          child.kill('SIGTERM');
        });
      }
      slot.handle.close();
      try {
        unlinkSync(slot.socket);
      } catch {
        /* already gone */
      }
      this.live.delete(slot);
    })());
  }

  /**
   * Graceful reload: for each worker, start a replacement on a fresh socket,
   * let `reloadNginx` move nginx onto the new socket list (it resolves once the
   * nginx workers that knew the old socket are gone), then drain the old one.
   * `entry`: a rebuilt worker bundle for the new workers. Resolves false when a
   * new worker could not start (the old ones keep serving) or a stop began.
   */
  async roll(reloadNginx: (sockets: string[]) => Promise<void>, entry?: string): Promise<boolean> {
    for (let i = 0; i < this.slots.length; i++) {
      if (this.stopping) return false;
      const old = this.slots[i]!;
      const fresh = this.newSlot(old.index, old.generation + 1, entry ?? old.entry);
      try {
        await this.launch(fresh);
      } catch (err) {
        await this.retire(fresh, 0);
        if (!this.stopping) this.log(`reload: the new worker failed to start, keeping the old one: ${(err as Error).message}`);
        return false;
      }
      // A stop that began meanwhile ends `fresh` too (it is live).
      if (this.stopping) return false;
      this.slots[i] = fresh;
      this.writeState();
      try {
        await reloadNginx(this.sockets);
      } catch (err) {
        // nginx did not finish (an old nginx worker still serving, or nginx gone): the old worker may still
        // be serving it, so it is kept, not respawned, and stopped with the rest by stop().
        old.retired = true;
        throw err;
      }
      await this.retire(old, 15_000);
    }
    if (entry) this.o.entry = entry;
    return true;
  }

  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    await Promise.all([...this.live].map((s) => this.retire(s, graceMs)));
  }
}
