/**
 * Admission control of one process (--max-inflight, --queue-timeout): at most
 * `maxInflight` requests run at once; the next ones wait in a bounded FIFO
 * queue for up to `queueTimeoutMs`; beyond that the request is shed with 503
 * and a Retry-After computed from the service time observed so far.
 *
 * The queue holds at most `maxInflight` requests (a wait longer than one
 * round of service is better spent elsewhere), and a request whose predicted
 * wait (queue depth × mean service time / maxInflight) exceeds the queue
 * timeout is shed at once instead of timing out in the queue.
 */

export interface AdmissionOptions {
  /** 0: no limit (nothing queues, nothing is shed). */
  maxInflight: number;
  /** 0: no waiting (beyond maxInflight is shed at once). */
  queueTimeoutMs: number;
}

/** The answer to a request asking to run. */
export type Admit =
  | { ok: true }
  /** Queued: resolves true when it may run, false when shed (see retryAfter()). */
  | { ok: 'wait'; admitted: Promise<boolean>; cancel(): void }
  | { ok: false; retryAfter: number; why: string };

/** How much the mean service time follows a new observation (exponential moving average). */
const EWMA = 0.2;

interface Waiter {
  resolve(ok: boolean): void;
  timer: NodeJS.Timeout | undefined;
}

export class Admission {
  inflight = 0;
  private queue: Waiter[] = [];
  /** Mean service time (ms) of the requests admitted so far; 0 before the first. */
  meanMs = 0;

  constructor(readonly o: AdmissionOptions) {}

  get queued(): number {
    return this.queue.length;
  }

  /** Seconds a shed client should wait: ceil(depth × mean service time / concurrency), at least 1. */
  retryAfter(): number {
    const conc = Math.max(1, this.o.maxInflight);
    return Math.max(1, Math.ceil(((this.queue.length + 1) * this.meanMs) / conc / 1000));
  }

  /** Asks to run one request; `enter` is always followed by one `leave` when it was admitted (now or after waiting). */
  enter(): Admit {
    const max = this.o.maxInflight;
    if (max <= 0 || (this.inflight < max && this.queue.length === 0)) {
      this.inflight++;
      return { ok: true };
    }
    const full = this.queue.length >= max;
    const predicted = ((this.queue.length + 1) * this.meanMs) / max;
    if (this.o.queueTimeoutMs <= 0 || full || predicted > this.o.queueTimeoutMs) {
      const why = full ? `${this.inflight} in flight and ${this.queue.length} queued (max-inflight ${max})` : `${this.inflight} in flight (max-inflight ${max})`;
      return { ok: false, retryAfter: this.retryAfter(), why };
    }
    let w!: Waiter;
    const admitted = new Promise<boolean>((resolve) => {
      w = { resolve, timer: undefined };
      w.timer = setTimeout(() => this.drop(w, false), this.o.queueTimeoutMs);
      w.timer.unref?.();
    });
    this.queue.push(w);
    return { ok: 'wait', admitted, cancel: () => this.drop(w, false) };
  }

  private drop(w: Waiter, ok: boolean): void {
    const i = this.queue.indexOf(w);
    if (i < 0) return;
    this.queue.splice(i, 1);
    clearTimeout(w.timer);
    w.resolve(ok);
  }

  /** An admitted request ended after `serviceMs`: its slot goes to the longest waiter. */
  leave(serviceMs: number): void {
    this.meanMs = this.meanMs === 0 ? serviceMs : this.meanMs + EWMA * (serviceMs - this.meanMs);
    const next = this.queue.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(true); // the slot passes on: inflight stays
    } else this.inflight--;
  }
}
