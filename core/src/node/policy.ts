/**
 * The supervision policy every tsgi supervisor follows (tsgi serve --workers,
 * nginx workers mode; mod_tsgi keeps the same numbers in C): how a worker
 * says it cannot start, and how fast a crashing worker is restarted.
 */

/** Exit code of a worker process that cannot start (EX_CONFIG): its supervisor must not loop on it. */
export const EXIT_STARTUP = 78;

/** Restart delay after a crash: 0 the first time, then 0.1 s doubling to 5 s; 10 s of life resets it. */
export const BACKOFF_FIRST_MS = 100;
export const BACKOFF_MAX_MS = 5_000;
export const BACKOFF_RESET_MS = 10_000;

/** The restart delays of one worker slot. */
export class Backoff {
  private crashes = 0;

  /** The delay before restarting a worker that started at `startedAt` (ms epoch) and just died. */
  next(startedAt: number, now = Date.now()): number {
    if (now - startedAt > BACKOFF_RESET_MS) this.crashes = 0;
    const delay = this.crashes === 0 ? 0 : Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** (this.crashes - 1));
    this.crashes++;
    return delay;
  }
}

/**
 * The one line a start-up failure prints (the tsgi command adds its own
 * prefix): the first line of the error's message, no stack.
 */
export function startupReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.split('\n')[0]!;
}
