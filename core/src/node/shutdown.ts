import type { Handler } from '../contract.js';
import type { ErrorLogger } from '../pipeline.js';
import type { Lifecycle } from './lifecycle.js';

/** What one Node host does to stop: every host's graceful shutdown is these steps, in this order. */
export interface ShutdownSteps {
  /** Stop taking new work: close the listener, tell peers to go away (Apache's GOAWAY). */
  stopAccepting(): void | Promise<void>;
  /** The process's in-flight requests and waitUntil work (one Lifecycle, or several drained together). */
  lifecycle: Pick<Lifecycle, 'drain'>;
  /** How long the drain may take. */
  timeoutMs: number;
  /** After the drain (or its deadline): cut whatever is still open. */
  forceClose?(): void | Promise<void>;
  handler: Handler;
  log: ErrorLogger;
}

const closed = new WeakSet<Handler>();

/**
 * Drain, then `close`: stop accepting, wait for in-flight requests and
 * waitUntil work (up to timeoutMs), cut what remains, then run the handler's
 * close() once per process (a second call for the same handler does not run
 * it again). Resolves true when the drain finished in time. Never rejects: a
 * failing close() is logged.
 */
export async function shutdown(s: ShutdownSteps): Promise<boolean> {
  await s.stopAccepting();
  const drained = await s.lifecycle.drain(s.timeoutMs);
  if (!drained) s.log(`shutdown: in-flight work still running after ${s.timeoutMs} ms; closing anyway`);
  await s.forceClose?.();
  if (s.handler.close && !closed.has(s.handler)) {
    closed.add(s.handler);
    try {
      await s.handler.close();
    } catch (err) {
      s.log('close() threw', err);
    }
  }
  return drained;
}

/** A drain period under way: over once its time has passed, or at once after cut(). */
export interface DrainPeriod {
  readonly over: Promise<void>;
  /** Ends it now (a second Ctrl-C). */
  cut(): void;
}

/**
 * The drain period before a graceful stop (--drain-delay): the process keeps
 * serving, with its health path at 503 (the caller marks it draining), so a
 * load balancer takes it out of rotation while requests still succeed; only
 * then does the stop close the listener. `say` gets the one line that tells.
 */
export function drainPeriod(ms: number, say?: (line: string) => void): DrainPeriod {
  let cut = (): void => {};
  const over = new Promise<void>((resolve) => {
    const t = setTimeout(resolve, ms);
    cut = () => {
      clearTimeout(t);
      resolve();
    };
  });
  say?.(`draining for ${ms / 1000} s (the health path answers 503, requests are still served; a second Ctrl-C stops now)`);
  return { over, cut };
}
