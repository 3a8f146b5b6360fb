import type { Context, ServerKind } from '../contract.js';
import type { ErrorLogger } from '../pipeline.js';

/**
 * In-flight requests and waitUntil work of one process, so shutdown can drain
 * both before `close` runs.
 */
export class Lifecycle {
  inflight = 0;
  private pending = new Set<Promise<unknown>>();
  private idle: (() => void)[] = [];

  constructor(private log: ErrorLogger) {}

  waitUntil(promise: PromiseLike<unknown>, id: string): void {
    // Never throws, whatever it is given (Hono's waitUntil throws on Node).
    let p: Promise<unknown>;
    try {
      p = Promise.resolve(promise).catch((err) => this.log(`request ${id}: waitUntil promise rejected`, err));
    } catch (err) {
      this.log(`request ${id}: waitUntil was given a bad value`, err);
      return;
    }
    this.pending.add(p);
    void p.finally(() => {
      this.pending.delete(p);
      this.wake();
    });
  }

  begin(): void {
    this.inflight++;
  }

  end(): void {
    this.inflight--;
    this.wake();
  }

  get busy(): boolean {
    return this.inflight > 0 || this.pending.size > 0;
  }

  private wake(): void {
    if (this.idle.length === 0 || this.busy) return;
    const waiters = this.idle;
    this.idle = [];
    for (const w of waiters) w();
  }

  /** Resolves true when drained, false when the deadline came first. */
  drain(timeoutMs: number): Promise<boolean> {
    if (!this.busy) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      timer.unref?.();
      this.idle.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }
}

let seq = 0;
const prefix = `${process.pid.toString(36)}-${Date.now().toString(36)}-`;

/** The Context of Node-hosted adapters (node-http, Apache workers, nginx workers). */
/** Where a ctx reads the client's address on first use (reading a socket's address costs). */
export interface ClientAddress {
  clientIp(): string;
}

export class RequestContext implements Context {
  user: string | undefined;
  private _id: string | undefined;
  private _ip: string | ClientAddress | undefined;

  /** `ip`: the address, or where to read it on first use (undefined: ''). */
  constructor(
    readonly server: ServerKind,
    ip: string | ClientAddress | undefined,
    private lifecycle: Lifecycle,
    id?: string,
    user?: string,
    /** ctx.basePath: the mount prefix ('' at the root). */
    readonly basePath = '',
  ) {
    this._ip = ip;
    this._id = id;
    this.user = user;
  }

  get ip(): string {
    const ip = this._ip;
    if (typeof ip === 'string') return ip;
    return (this._ip = ip ? ip.clientIp() : '');
  }

  get id(): string {
    return (this._id ??= prefix + (++seq).toString(36));
  }

  get env(): Readonly<Record<string, string | undefined>> {
    return process.env;
  }

  waitUntil(promise: PromiseLike<unknown>): void {
    this.lifecycle.waitUntil(promise, this.id);
  }
}
