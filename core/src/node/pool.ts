/**
 * The one supervisor of Node worker processes (`tsgi serve --workers N`, nginx
 * workers mode): N slots, each running one worker that listens on a socket the
 * supervisor holds (one shared handle, or one per slot) and never accepts on
 * itself, so connections wait in the backlog while a worker is replaced.
 *
 * The policy (policy.ts): a worker says it is ready over IPC (`{ tsgi: 'ready' }`),
 * or why it cannot start (`{ tsgi: 'failed', reason }`, then exit 78). Before
 * the pool ever had a ready worker, a start-up failure stops everything; after,
 * a worker that dies (also one that dies before it is ready) is respawned with
 * Backoff. A reload starts a whole new set of workers while the old ones serve,
 * swaps them in only when all are ready, then retires the old ones.
 */
import type { ChildProcess } from 'node:child_process';
import type { ListenHandle } from './listen-handle.js';
import { StartupError } from './load.js';
import { Backoff, EXIT_STARTUP, startupReason } from './policy.js';

/** What a worker sends its supervisor over IPC: ready (with what else it tells), or why it cannot start. */
export type ReadyReport = { tsgi: 'ready'; [k: string]: unknown };
export type WorkerReport = ReadyReport | { tsgi: 'failed'; reason: string };

/** One worker slot's current process. */
export interface PoolWorker<H extends ListenHandle = ListenHandle> {
  readonly index: number;
  /** 0 at start, +1 per reload. */
  readonly generation: number;
  /** The socket this slot's worker listens on (its fd 3). */
  readonly handle: H;
  child: ChildProcess | undefined;
  /** The ready report of the current process, once it came. */
  ready: ReadyReport | undefined;
}

export interface WorkerPoolOptions<H extends ListenHandle> {
  size: number;
  /** The listening socket of a slot's generation: the one shared handle (its close a no-op), or a new one. */
  listen(index: number, generation: number): H;
  /** Starts the worker process of `w`: its fd 3 is `w.handle.fd`, with an IPC channel. */
  spawn(w: PoolWorker<H>): ChildProcess;
  /** How a worker replaced by a reload is asked to go (it drains and exits): this IPC message, else SIGTERM. */
  retireMessage?: object;
  /** SIGKILL a retired worker still running after this long (ms). */
  retireGraceMs: number;
  /** SIGKILL a stopped worker still running after this long (ms). */
  stopGraceMs: number;
  log(message: string): void;
  /** The set of processes changed (a worker became ready, a reload swapped them). */
  onChange?(): void;
}

interface Slot<H extends ListenHandle> extends PoolWorker<H> {
  backoff: Backoff;
  startedAt: number;
  /** Started by a reload that has not swapped it in: failing to start aborts the reload, no respawn. */
  probation: boolean;
  /** Replaced or stopping: never respawned. */
  retired: boolean;
  timer?: NodeJS.Timeout;
  gone?: Promise<void>;
}

const how = (code: number | null, signal: NodeJS.Signals | null): string => signal ?? `exit ${code}`;

/** Ends a process: `message` over IPC (else SIGTERM), SIGKILL after `graceMs`; resolves once it has exited. */
export function stopProcess(child: ChildProcess, graceMs: number, message?: object): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return Promise.resolve();
  return new Promise((resolve) => {
    const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
    child.once('exit', () => {
      clearTimeout(t);
      resolve();
    });
    if (message && child.connected) child.send(message, () => {});
    else child.kill('SIGTERM');
  });
}

export class WorkerPool<H extends ListenHandle = ListenHandle> {
  private slots: Slot<H>[] = [];
  /** Every slot whose process may still run or whose handle is open: stop() ends them all. */
  private live = new Set<Slot<H>>();
  private retiring = new Set<Promise<void>>();
  private stopping = false;
  /** A worker was ready once: from now on failures are respawned. */
  served = false;
  /** Respawns so far. */
  respawns = 0;

  constructor(private o: WorkerPoolOptions<H>) {}

  get workers(): readonly PoolWorker<H>[] {
    return this.slots;
  }

  /** The current generation (0 until a reload succeeds). */
  get generation(): number {
    return this.slots[0]?.generation ?? 0;
  }

  private slot(index: number, generation: number, probation: boolean): Slot<H> {
    const s: Slot<H> = {
      index,
      generation,
      handle: this.o.listen(index, generation),
      child: undefined,
      ready: undefined,
      backoff: new Backoff(),
      startedAt: 0,
      probation,
      retired: false,
    };
    this.live.add(s);
    return s;
  }

  /** Starts a slot's process; resolves when it is ready, rejects (StartupError, the worker's reason) when it ends first. */
  private launch(s: Slot<H>): Promise<void> {
    return new Promise((resolve, reject) => {
      let child: ChildProcess;
      try {
        child = this.o.spawn(s);
      } catch (err) {
        reject(new StartupError(`cannot start a worker: ${(err as Error).message}`));
        return;
      }
      s.child = child;
      s.ready = undefined;
      s.startedAt = Date.now();
      let reason: string | undefined;
      let ended = false;
      child.on('message', (m: WorkerReport) => {
        if (m?.tsgi === 'failed') reason = m.reason;
        if (m?.tsgi !== 'ready' || s.ready || s.child !== child) return;
        s.ready = m;
        this.served = true;
        this.o.onChange?.();
        resolve();
      });
      const end = (code: number | null, signal: NodeJS.Signals | null, error?: Error): void => {
        if (ended) return;
        ended = true;
        const wasReady = s.ready !== undefined;
        if (error && !reason) reason = `cannot start a worker: ${error.message}`;
        if (!wasReady) {
          reject(new StartupError(reason ?? `a worker failed to start (${how(code, signal)})`));
        }
        if (s.child === child) this.died(s, child, wasReady, error ? 'spawn error' : how(code, signal), reason);
      };
      child.once('error', (err) => end(null, null, err));
      // 'close', not 'exit': it comes after the IPC channel is drained, so the worker's reason has arrived.
      child.once('close', (code, signal) => end(code, signal));
    });
  }

  /** A slot's process ended: respawned with back-off once the pool has served, unless it was replaced or is stopping. */
  private died(s: Slot<H>, child: ChildProcess, wasReady: boolean, status: string, reason: string | undefined): void {
    s.child = undefined;
    if (this.stopping || s.retired || s.probation || !this.served) return;
    const delay = s.backoff.next(s.startedAt);
    const what = wasReady ? `died (${status})` : `exited before it was ready (${status}${reason ? `: ${reason}` : ''})`;
    this.o.log(`worker ${child.pid} ${what}; respawning${delay ? ` in ${delay} ms` : ''}`);
    s.timer = setTimeout(() => {
      s.timer = undefined;
      if (this.stopping || s.retired) return;
      this.respawns++;
      // A failure is logged and respawned again by died().
      this.launch(s).catch(() => {});
    }, delay);
  }

  /**
   * Starts the workers: one first, so a handler that cannot start fails once,
   * with its one line (the StartupError it rejects with; everything is stopped).
   * The others start after it; their failures are respawned (the pool has served).
   */
  async start(): Promise<void> {
    this.slots = Array.from({ length: this.o.size }, (_, i) => this.slot(i, 0, false));
    try {
      await this.launch(this.slots[0]!);
    } catch (err) {
      await this.stop(0);
      throw err;
    }
    await Promise.allSettled(this.slots.slice(1).map((s) => this.launch(s)));
  }

  /**
   * Graceful reload: a new set of workers (one first) starts while the old
   * ones serve; when all are ready they replace the old ones, `between` runs
   * (nginx: move nginx onto the new sockets; a throw keeps the old workers,
   * stopped by stop(), and rethrows), then the old ones retire (see settled()).
   * Resolves false when a stop began; rejects with the new worker's StartupError
   * when one could not start (the new ones are stopped, the old ones keep serving).
   */
  async reload(between?: (fresh: readonly PoolWorker<H>[]) => Promise<void>): Promise<boolean> {
    if (this.stopping || !this.served) return false;
    const fresh = this.slots.map((old) => this.slot(old.index, old.generation + 1, true));
    try {
      await this.launch(fresh[0]!);
      await Promise.all(fresh.slice(1).map((s) => this.launch(s)));
    } catch (err) {
      await Promise.all(fresh.map((s) => this.retire(s, this.o.stopGraceMs)));
      if (this.stopping) return false;
      throw err;
    }
    // A stop that began meanwhile ends the fresh ones too (they are live).
    if (this.stopping) return false;
    const old = this.slots;
    this.slots = fresh;
    for (const s of fresh) s.probation = false;
    this.o.onChange?.();
    try {
      await between?.(fresh);
    } catch (err) {
      // The old workers may still be serving: kept (not respawned) until stop().
      for (const s of old) {
        s.retired = true;
        clearTimeout(s.timer);
      }
      throw err;
    }
    for (const s of old) {
      const p = this.retire(s, this.o.retireGraceMs, this.o.retireMessage);
      this.retiring.add(p);
      void p.then(() => this.retiring.delete(p));
    }
    return true;
  }

  /** Resolves once every worker a reload replaced has exited. */
  async settled(): Promise<void> {
    await Promise.all([...this.retiring]);
  }

  /** Ends a slot's process (it drains and exits; SIGKILL after graceMs) and closes its handle. Idempotent. */
  private retire(s: Slot<H>, graceMs: number, message?: object): Promise<void> {
    s.retired = true;
    clearTimeout(s.timer);
    return (s.gone ??= (async () => {
      if (s.child) await stopProcess(s.child, graceMs, message);
      s.handle.close();
      this.live.delete(s);
    })());
  }

  /** Stops every worker (SIGTERM: each drains and runs close; SIGKILL after graceMs) and closes the handles. */
  async stop(graceMs = this.o.stopGraceMs): Promise<void> {
    this.stopping = true;
    const all = [...this.live];
    // A worker already retiring gently is told to stop now.
    for (const s of all) if (s.gone && s.child && s.child.exitCode === null && s.child.signalCode === null) s.child.kill('SIGTERM');
    await Promise.all(all.map((s) => this.retire(s, graceMs)));
  }
}

/** In a worker: tells the supervisor it is ready (with `extra`, e.g. its URL). */
export function reportReady(extra: Record<string, unknown> = {}): void {
  process.send?.({ ...extra, tsgi: 'ready' } satisfies WorkerReport);
}

/**
 * In a worker that cannot start: sends its supervisor the one line to print
 * (the supervisor prints it, once), then exits 78. Without an IPC channel it
 * prints the line itself, after `prefix`.
 */
export async function reportStartupFailure(err: unknown, prefix: string): Promise<never> {
  const reason = startupReason(err);
  const send = process.send?.bind(process);
  if (send && process.connected) await new Promise<void>((sent) => send({ tsgi: 'failed', reason } satisfies WorkerReport, () => sent()));
  else console.error(`${prefix}${reason}`);
  process.exit(EXIT_STARTUP);
}
