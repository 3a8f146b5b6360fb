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
import { emptySnapshot, mergeSnapshots, renderPrometheus, type MetricsSnapshot, type RestartReason, type WorkerState } from './ops/metrics.js';
import { SNAPSHOT_WAIT_MS, type LinkMessage } from './ops/worker-link.js';

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
  /** A ready worker without a heartbeat for this long (ms) is stalled (a CPU loop): killed and replaced. 0: never. */
  stallMs?: number;
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
  /** When its worker last said it is alive (ms epoch). */
  beatAt: number;
  /** Its worker's last counters, and the ids of the requests it held. */
  stats: MetricsSnapshot | undefined;
  held: string[];
  /** Why we end its process (the end line and the restart counter say it); unset: it died by itself. */
  ending?: { reason: RestartReason | 'stop'; why: string };
  /** Its handle went to the worker that replaced it (recycling): not closed on retire. */
  handedOver?: boolean;
}

const how = (code: number | null, signal: NodeJS.Signals | null): string => signal ?? `exit ${code}`;

/** A worker's end as its log line says it: the status, and what it likely means (V8 aborts when its heap is exhausted). */
function endStatus(code: number | null, signal: NodeJS.Signals | null): string {
  const st = how(code, signal);
  return code === 134 || signal === 'SIGABRT' ? `${st}, likely out of memory` : st;
}

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
  /** Workers replaced, by reason (tsgi_worker_restarts_total). */
  readonly restarts: Record<RestartReason, number> = { crash: 0, recycle: 0, reload: 0, timeout: 0 };
  /** The counters of the workers that have ended. */
  private totals = emptySnapshot();
  private stallTimer: NodeJS.Timeout | undefined;
  private asks = 0;
  /** The drain period before a stop (announceDrain): every worker, also one started now, drains. */
  private draining = false;

  constructor(private o: WorkerPoolOptions<H>) {}

  get workers(): readonly PoolWorker<H>[] {
    return this.slots;
  }

  /** The current generation (0 until a reload succeeds). */
  get generation(): number {
    return this.slots[0]?.generation ?? 0;
  }

  /** A new slot; `handle`: the socket of the worker it replaces (recycling), else the slot's own from listen(). */
  private slot(index: number, generation: number, probation: boolean, handle?: H): Slot<H> {
    const s: Slot<H> = {
      index,
      generation,
      handle: handle ?? this.o.listen(index, generation),
      child: undefined,
      ready: undefined,
      backoff: new Backoff(),
      startedAt: 0,
      probation,
      retired: false,
      beatAt: 0,
      stats: undefined,
      held: [],
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
      child.on('message', (m: WorkerReport | LinkMessage) => {
        if (m?.tsgi === 'failed') reason = m.reason;
        if (s.child === child) this.linkMessage(s, child, m as LinkMessage);
        if (m?.tsgi !== 'ready' || s.ready || s.child !== child) return;
        s.ready = m;
        s.beatAt = Date.now();
        this.served = true;
        if (this.draining) this.tellDraining(child);
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
        if (s.child === child) this.died(s, child, wasReady, error ? 'spawn error' : how(code, signal), reason, error ? undefined : code, error ? undefined : signal);
      };
      child.once('error', (err) => end(null, null, err));
      // 'close', not 'exit': it comes after the IPC channel is drained, so the worker's reason has arrived.
      child.once('close', (code, signal) => end(code, signal));
    });
  }

  /** What a worker tells besides ready/failed: heartbeats, a recycle request, a metrics request. */
  private linkMessage(s: Slot<H>, child: ChildProcess, m: LinkMessage): void {
    switch (m?.tsgi) {
      case 'beat':
        s.beatAt = Date.now();
        s.stats = m.stats;
        s.held = m.held;
        break;
      case 'recycle':
        void this.recycle(s, m.why);
        break;
      case 'metrics?':
        void this.metricsText().then((text) => {
          if (child.connected) child.send({ tsgi: 'metrics', id: m.id, text } satisfies LinkMessage, () => {});
        });
        break;
    }
  }

  /**
   * A slot's process ended: one line with its reason (exit code or signal, likely OOM, stalled,
   * recycled) and the ids of the requests it held, so a 502 can be traced; then respawned with
   * back-off once the pool has served, unless it was replaced or is stopping.
   */
  private died(s: Slot<H>, child: ChildProcess, wasReady: boolean, status: string, reason: string | undefined, code?: number | null, signal?: NodeJS.Signals | null): void {
    s.child = undefined;
    if (s.stats) this.totals = mergeSnapshots([this.totals, { ...s.stats, inflight: 0, queued: 0, heap: 0 }]);
    s.stats = undefined;
    const ending = s.ending;
    s.ending = undefined;
    // As of its last heartbeat (HEARTBEAT_MS): a request that stalled the worker at once may be missing.
    const held = s.held.length ? `; it held request${s.held.length > 1 ? 's' : ''} ${s.held.join(', ')}` : '';
    s.held = [];
    const st = code === undefined && signal === undefined ? status : endStatus(code ?? null, signal ?? null);
    const line = ending ? `worker ${child.pid} ${ending.why} (${st})${held}` : `worker ${child.pid} died (${st})${held}`;
    const asked = this.stopping || s.retired || s.probation || !this.served;
    // Ends we asked for are logged when they say something (a recycle, a reload, requests cut).
    if (asked) {
      if (wasReady && ((ending && ending.reason !== 'stop') || held)) this.o.log(line);
      return;
    }
    const delay = s.backoff.next(s.startedAt);
    this.restarts[ending?.reason === 'timeout' ? 'timeout' : 'crash']++;
    const again = `respawning${delay ? ` in ${delay} ms` : ''}`;
    if (wasReady) this.o.log(`${line}; ${again}`);
    else this.o.log(`worker ${child.pid} exited before it was ready (${status}${reason ? `: ${reason}` : ''}); ${again}`);
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
    const stall = this.o.stallMs ?? 0;
    if (stall > 0 && !this.stopping) {
      this.stallTimer = setInterval(() => this.checkStalls(stall), Math.min(1_000, stall));
      this.stallTimer.unref();
    }
  }

  /** A ready worker silent for `stallMs` cannot see its requests' signals (a CPU loop): killed, then respawned by died(). */
  private checkStalls(stallMs: number): void {
    const now = Date.now();
    for (const s of this.slots) {
      const c = s.child;
      if (!c || !s.ready || s.ending || s.retired || now - s.beatAt <= stallMs) continue;
      s.ending = { reason: 'timeout', why: `stalled (no heartbeat for ${Math.round((now - s.beatAt) / 100) / 10} s), killed` };
      c.kill('SIGKILL');
    }
  }

  /**
   * Replaces one worker gracefully (max-requests, max-heap): a fresh one starts on the same
   * socket, and once it is ready the old one drains and exits. If the fresh one cannot start, the
   * old one keeps serving.
   */
  private async recycle(old: Slot<H>, why: string): Promise<void> {
    if (this.stopping || old.retired || old.probation || this.slots[old.index] !== old || !old.ready) return;
    const fresh = this.slot(old.index, old.generation, true, old.handle);
    old.retired = true; // not respawned meanwhile; it keeps serving until the fresh one is ready
    try {
      await this.launch(fresh);
    } catch (err) {
      this.o.log(`worker ${old.child?.pid} should be recycled (${why}) but its replacement did not start: ${startupReason(err)}; it keeps serving`);
      fresh.handedOver = true;
      await this.retire(fresh, this.o.stopGraceMs);
      old.retired = this.stopping;
      // It died meanwhile: the slot gets a worker again the usual way.
      if (!old.child && !this.stopping) this.launch(old).catch(() => {});
      return;
    }
    if (this.stopping) return;
    if (this.slots[old.index] !== old) {
      // A reload replaced the slot meanwhile: its new worker serves; this one is not needed.
      fresh.handedOver = true;
      await this.retire(fresh, this.o.stopGraceMs);
      return;
    }
    fresh.probation = false;
    this.slots[old.index] = fresh;
    old.handedOver = true;
    old.ending = { reason: 'recycle', why: `recycled: ${why}` };
    this.restarts.recycle++;
    this.o.onChange?.();
    const p = this.retire(old, this.o.retireGraceMs, this.o.retireMessage);
    this.retiring.add(p);
    void p.then(() => this.retiring.delete(p));
  }

  /** Workers by state: starting (not ready yet), ready (current), draining (replaced, still running). */
  private states(): Record<WorkerState, number> {
    const n: Record<WorkerState, number> = { starting: 0, ready: 0, draining: 0 };
    for (const s of this.live) {
      if (!s.child) continue;
      if (s.retired || this.stopping || this.draining) n.draining++;
      else if (s.ready) n.ready++;
      else n.starting++;
    }
    return n;
  }

  /** The whole pool's metrics text: every running worker's fresh counters (waited for up to SNAPSHOT_WAIT_MS) plus those of the ended ones. */
  async metricsText(): Promise<string> {
    const running = [...this.live].filter((s) => s.child?.connected && s.ready);
    const id = ++this.asks;
    await Promise.all(
      running.map(
        (s) =>
          new Promise<void>((resolve) => {
            const c = s.child!;
            const t = setTimeout(done, SNAPSHOT_WAIT_MS);
            function done(): void {
              clearTimeout(t);
              c.off('message', onBeat);
              resolve();
            }
            const onBeat = (m: LinkMessage): void => {
              if (m?.tsgi === 'beat') done();
            };
            c.on('message', onBeat);
            c.send({ tsgi: 'snapshot?', id } satisfies LinkMessage, (err) => err && done());
          }),
      ),
    );
    const sum = mergeSnapshots([this.totals, ...[...this.live].flatMap((s) => (s.stats ? [s.stats] : []))]);
    return renderPrometheus(sum, { workers: this.states(), restarts: this.restarts });
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
      s.ending = { reason: 'reload', why: 'replaced by a reload' };
      this.restarts.reload++;
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
      if (!s.handedOver) s.handle.close();
      this.live.delete(s);
    })());
  }

  /**
   * The drain period before stop() (--drain-delay) begins: every worker keeps serving but its health
   * path answers 503 (told over the worker link), so a load balancer stops sending; the metrics count
   * them as draining.
   */
  announceDrain(): void {
    this.draining = true;
    for (const s of this.live) if (s.child && s.ready) this.tellDraining(s.child);
  }

  private tellDraining(child: ChildProcess): void {
    if (child.connected) child.send({ tsgi: 'draining' } satisfies LinkMessage, () => {});
  }

  /** Stops every worker (SIGTERM: each drains and runs close; SIGKILL after graceMs) and closes the handles. */
  async stop(graceMs = this.o.stopGraceMs): Promise<void> {
    this.stopping = true;
    clearInterval(this.stallTimer);
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
