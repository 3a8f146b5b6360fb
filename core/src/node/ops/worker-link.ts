/**
 * The IPC between a supervised worker's Operations and core's WorkerPool
 * (pool.ts): heartbeats (with the ids of the requests held and the counters),
 * a worker asking to be recycled, and the pool's metrics for whichever worker
 * serves the metrics path. Messages are `{ tsgi: kind, ... }` objects.
 */
import type { MetricsSnapshot } from './metrics.js';
import type { Operations } from './operations.js';

/** How often a worker says it is alive; the pool calls a worker stalled after its stall limit without one. */
export const HEARTBEAT_MS = 1_000;
/** How long a stalled worker gets beyond request-timeout before it is replaced. */
export const STALL_GRACE_MS = 3_000;
/** How long the pool waits for the workers' fresh counters when asked for metrics. */
export const SNAPSHOT_WAIT_MS = 1_000;

export type LinkMessage =
  | { tsgi: 'beat'; held: string[]; stats: MetricsSnapshot; final?: boolean }
  | { tsgi: 'recycle'; why: string }
  | { tsgi: 'metrics?'; id: number }
  | { tsgi: 'metrics'; id: number; text: string }
  | { tsgi: 'snapshot?'; id: number }
  /** The supervisor's drain period began (--drain-delay): the health path says 503 from now on. */
  | { tsgi: 'draining' };

type Send = (m: LinkMessage, cb?: () => void) => void;

export interface WorkerLink {
  /** Sends the last counters (before a graceful exit), so the pool's totals miss nothing. */
  final(): Promise<void>;
  stop(): void;
}

/** In a worker: links `ops` to the supervisor over this process's IPC channel (none: a no-op link). */
export function linkWorker(ops: Operations, send: Send | undefined = process.send?.bind(process) as Send | undefined): WorkerLink {
  if (!send) return { final: () => Promise.resolve(), stop: () => {} };
  const beat = (final = false): LinkMessage => ({ tsgi: 'beat', held: ops.held(), stats: ops.snapshot(), final });
  const safe = (m: LinkMessage, cb?: () => void): void => {
    if (!process.connected) return cb?.();
    try {
      send(m, cb);
    } catch {
      cb?.();
    }
  };
  const timer = setInterval(() => safe(beat()), HEARTBEAT_MS);
  timer.unref();
  safe(beat());
  let seq = 0;
  const waiting = new Map<number, (text: string) => void>();
  const onMessage = (m: LinkMessage): void => {
    if (m?.tsgi === 'snapshot?') safe(beat());
    else if (m?.tsgi === 'draining') ops.draining = true;
    else if (m?.tsgi === 'metrics') {
      waiting.get(m.id)?.(m.text);
      waiting.delete(m.id);
    }
  };
  process.on('message', onMessage);
  ops.onRecycle = (why) => safe({ tsgi: 'recycle', why });
  ops.poolMetrics = () =>
    new Promise((resolve) => {
      const id = ++seq;
      // The supervisor gone or too slow: this process's own figures, better than none.
      const t = setTimeout(() => {
        waiting.delete(id);
        resolve(ops.ownMetrics());
      }, SNAPSHOT_WAIT_MS * 2);
      waiting.set(id, (text) => {
        clearTimeout(t);
        resolve(text);
      });
      safe({ tsgi: 'metrics?', id });
    });
  return {
    final: () => new Promise((resolve) => safe(beat(true), resolve)),
    stop: () => {
      clearInterval(timer);
      process.off('message', onMessage);
    },
  };
}
