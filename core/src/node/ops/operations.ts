/**
 * The operations of one serving process (issue 12), the same on every Node
 * host: admission (admission.ts), the request deadline, the health and
 * metrics probes, Server-Timing, and when to recycle. A host calls it around
 * each request; a supervised worker links it to its supervisor (worker-link.ts).
 */
import { getHeapStatistics } from 'node:v8';
import { Admission } from './admission.js';
import { Deadlines } from './deadlines.js';
import { Metrics, PROMETHEUS_TYPE, renderPrometheus, type MetricsSnapshot } from './metrics.js';
import { DEFAULT_OPS, type OpsSettings } from './options.js';

export type Probe = 'health' | 'metrics';

/** What a probe is answered with. */
export interface ProbeAnswer {
  status: number;
  type: string;
  body: string;
  /** Headers besides Content-Type (a shed request's Retry-After). */
  headers?: [string, string][];
}

/** How far beyond max-requests a worker may serve before it recycles (a pool does not recycle at once). */
export const RECYCLE_JITTER = 0.1;

/** The reason `request.signal` aborts with at the deadline. */
export function timeoutError(ms: number): DOMException {
  return new DOMException(`request-timeout (${ms / 1000} s) reached`, 'TimeoutError');
}

/** Whether a client address is the machine itself (the default audience of --metrics). */
export function isLoopback(ip: string): boolean {
  return ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');
}

// Bundled into the njs runtime as well: its own module, free of Node.
export { serverTimingValue } from '../../server-timing.js';

/** The head of a probe's (or the host's own) answer: its type, length, no-store, and its extra headers. */
export function answerHeaders(a: ProbeAnswer, close: boolean): string[] {
  const headers = ['content-type', a.type, 'content-length', String(Buffer.byteLength(a.body)), 'cache-control', 'no-store'];
  if (a.headers) for (const [name, value] of a.headers) headers.push(name, value);
  if (close) headers.push('connection', 'close');
  return headers;
}

const text = (status: number, body: string): ProbeAnswer => ({ status, type: 'text/plain;charset=UTF-8', body });

export class Operations {
  readonly s: OpsSettings;
  readonly admission: Admission;
  readonly metrics = new Metrics();
  /** The requests under request-timeout (deadlines.ts); undefined when there is none. */
  readonly deadlines: Deadlines | undefined;
  /** init has run in this process. */
  ready = false;
  /** This process stops (or is being replaced): health says 503. */
  draining = false;
  /** Supervised: whether the pool has a ready worker, as the supervisor last said; alone: always. */
  poolReady = true;
  /** Ids of the requests in flight (the host tells): heartbeats carry them so a worker's end can name them. */
  held: () => string[] = () => [];
  /** Called once, when this process should be replaced (max-requests, max-heap). */
  onRecycle: ((why: string) => void) | undefined;
  /** Supervised: the whole pool's metrics text (else this process's own is served). */
  poolMetrics: (() => Promise<string>) | undefined;
  /**
   * Whether a request needs its arrival time and a close hook at all: admission, metrics, Server-Timing
   * or recycling is on. Otherwise only the probes and the deadline cost anything.
   */
  readonly counts: boolean;
  /** A probe path is set: request paths are compared. */
  readonly probes: boolean;
  private served = 0;
  private readonly recycleAfter: number;
  private recycling = false;

  constructor(settings: Partial<OpsSettings> = {}, random: () => number = Math.random) {
    this.s = { ...DEFAULT_OPS, ...settings };
    this.admission = new Admission({ maxInflight: this.s.maxInflight, queueTimeoutMs: this.s.queueTimeoutMs });
    this.deadlines = this.s.requestTimeoutMs > 0 ? new Deadlines(this, this.s.requestTimeoutMs) : undefined;
    this.recycleAfter = this.s.maxRequests > 0 ? this.s.maxRequests + Math.floor(random() * this.s.maxRequests * RECYCLE_JITTER) : 0;
    this.probes = this.s.healthPath !== undefined || this.s.metricsPath !== undefined;
    this.counts = this.s.maxInflight > 0 || this.s.metricsPath !== undefined || this.s.serverTiming || this.s.maxRequests > 0 || this.s.maxHeapBytes > 0;
  }

  /** The probe a request target names (its path; the query does not count), if any. Probes are never shed, timed or counted. */
  probe(target: string): Probe | undefined {
    const q = target.indexOf('?');
    const path = q < 0 ? target : target.slice(0, q);
    if (path === this.s.healthPath) return 'health';
    if (path === this.s.metricsPath) return 'metrics';
    return undefined;
  }

  /** 200 while this process (and, supervised, the pool) can serve; 503 before init and while draining. */
  health(): ProbeAnswer {
    if (this.ready && !this.draining && this.poolReady) return text(200, 'ok\n');
    return { ...text(503, this.draining ? 'draining\n' : 'starting\n'), headers: [['retry-after', '1']] };
  }

  /** The answer to a probe; metrics only to loopback clients unless metricsPublic. */
  async answer(probe: Probe, clientIp: string): Promise<ProbeAnswer> {
    if (probe === 'health') return this.health();
    if (!this.s.metricsPublic && !isLoopback(clientIp)) return text(403, 'Forbidden\n');
    const body = this.poolMetrics ? await this.poolMetrics() : this.ownMetrics();
    return { status: 200, type: PROMETHEUS_TYPE, body };
  }

  /** This process alone as the metrics text (one worker, never restarted). */
  ownMetrics(): string {
    const state = this.draining ? 'draining' : this.ready ? 'ready' : 'starting';
    return renderPrometheus(this.snapshot(), { workers: { [state]: 1 }, restarts: {} });
  }

  snapshot(): MetricsSnapshot {
    return this.metrics.snapshot(this.admission.inflight, this.admission.queued);
  }

  /** An application request ended (status sent, ms since it arrived): counted, and maybe time to recycle. */
  finished(status: number, ms: number): void {
    this.metrics.observe(status, ms);
    this.served++;
    if (this.recycling || !this.onRecycle) return;
    let why: string | undefined;
    if (this.recycleAfter > 0 && this.served >= this.recycleAfter) why = `max-requests (${this.served} served)`;
    else if (this.s.maxHeapBytes > 0) {
      const heap = getHeapStatistics().used_heap_size;
      if (heap > this.s.maxHeapBytes) why = `max-heap (${Math.round(heap / 2 ** 20)} MiB used, limit ${Math.round(this.s.maxHeapBytes / 2 ** 20)} MiB)`;
    }
    if (why) {
      this.recycling = true;
      this.onRecycle(why);
    }
  }
}
