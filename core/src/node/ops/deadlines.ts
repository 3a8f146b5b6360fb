/**
 * The request deadline of a Node host (issue 12): a request without progress (no response head, and no
 * byte read or written on its connection) for request-timeout aborts its signal with a TimeoutError,
 * then gets 504, or its connection is cut once the head has left. What "progress" and "expire" mean is
 * the host's (node:http, nginx workers mode's own reader); when and how often they are checked is here.
 */
import type { Operations } from './operations.js';

/** One request under the deadline, as its host sees it. */
export interface Timed {
  /** Set before it is added. */
  readonly ctx: { readonly id: string } | undefined;
  /** Bytes read and written on its connection so far. */
  progress(): number;
  /** No progress for `ms`: the host aborts the signal and answers 504 or cuts the connection. */
  expire(ms: number): void;
}

/** Its place under the deadline: when it is next checked (0: not seen by a sweep yet), its byte count then, and its slot in the live list (-1: off it). */
export interface Watched {
  t: Timed;
  due: number;
  last: number;
  slot: number;
  on: Deadlines;
}

/**
 * The requests of one Operations under request-timeout, checked by one timer (no timer per request).
 * Adding one is an array push and removing it a swap with the last (a Set costs ~500 instructions a
 * request in hashing and rehashing); its clock starts at the first sweep that sees it (within `every`
 * of its start), so the hot path reads neither the clock nor the socket's byte counts.
 */
export class Deadlines {
  private readonly live: Watched[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** How often the set is swept: the deadline is met within this much. */
  private readonly every: number;

  constructor(
    ops: Operations,
    private readonly ms: number,
  ) {
    this.every = Math.min(1_000, Math.max(50, Math.floor(ms / 4)));
    ops.held = () => this.live.map((w) => w.t.ctx!.id);
  }

  add(t: Timed): Watched {
    const w: Watched = { t, due: 0, last: 0, slot: this.live.length, on: this };
    this.live.push(w);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.every);
      this.timer.unref();
    }
    return w;
  }

  /** The request ended (answered, cut, or timed out): off the deadline. */
  static remove(w: Watched): void {
    const i = w.slot;
    if (i < 0) return;
    w.slot = -1;
    const live = w.on.live;
    const last = live.pop()!;
    if (last === w) return;
    live[i] = last;
    last.slot = i;
  }

  private sweep(): void {
    const now = Date.now();
    // Backwards: an expiry removes its request by moving the last one, already seen, into its place.
    for (let i = this.live.length - 1; i >= 0; i--) {
      const w = this.live[i]!;
      if (w.due === 0) {
        // First seen: it started at most `every` ago.
        w.due = now + this.ms - this.every;
        w.last = w.t.progress();
        continue;
      }
      if (now < w.due) continue;
      const p = w.t.progress();
      if (p !== w.last) {
        w.last = p;
        w.due = now + this.ms;
      } else w.t.expire(this.ms);
    }
  }
}
