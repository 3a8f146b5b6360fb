/**
 * The one metrics schema of every Node-backed host (issue 12), Prometheus text
 * format 0.0.4. A process counts what it served in a `Metrics`; a supervisor
 * (core's WorkerPool) adds up the snapshots its workers send over IPC with
 * `mergeSnapshots` and renders the sum with the pool's own worker counts.
 *
 * Health and metrics probes are not counted: the counters are the
 * application's requests, so they match what clients sent.
 */
import { getHeapStatistics } from 'node:v8';

/** Upper bounds (seconds) of tsgi_request_duration_seconds; +Inf is implied. */
export const DURATION_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60] as const;

/** Why a worker was replaced: the `reason` label of tsgi_worker_restarts_total. */
export type RestartReason = 'crash' | 'recycle' | 'reload' | 'timeout';
export const RESTART_REASONS: readonly RestartReason[] = ['crash', 'recycle', 'reload', 'timeout'];

/** Worker states: the `state` label of tsgi_workers. */
export type WorkerState = 'starting' | 'ready' | 'draining';
export const WORKER_STATES: readonly WorkerState[] = ['starting', 'ready', 'draining'];

/** What one process served so far: plain JSON, so it crosses IPC as is. */
export interface MetricsSnapshot {
  /** Responses by status code (as a string key). */
  requests: Record<string, number>;
  /** Cumulative-free counts per bucket of DURATION_BUCKETS, then the +Inf overflow (length buckets + 1). */
  buckets: number[];
  /** Sum of the durations, seconds. */
  sum: number;
  inflight: number;
  queued: number;
  /** V8 heap used, bytes. */
  heap: number;
}

export const emptySnapshot = (): MetricsSnapshot => ({ requests: {}, buckets: new Array<number>(DURATION_BUCKETS.length + 1).fill(0), sum: 0, inflight: 0, queued: 0, heap: 0 });

/** The counters of one process. */
export class Metrics {
  private requests = new Map<number, number>();
  private buckets = new Array<number>(DURATION_BUCKETS.length + 1).fill(0);
  private sum = 0;

  /** One finished request: its status and how long it took (ms, from arrival to the response's end). */
  observe(status: number, ms: number): void {
    this.requests.set(status, (this.requests.get(status) ?? 0) + 1);
    const s = ms / 1000;
    let i = 0;
    while (i < DURATION_BUCKETS.length && s > DURATION_BUCKETS[i]!) i++;
    this.buckets[i]!++;
    this.sum += s;
  }

  snapshot(inflight: number, queued: number): MetricsSnapshot {
    const requests: Record<string, number> = {};
    for (const [k, v] of this.requests) requests[String(k)] = v;
    return { requests, buckets: [...this.buckets], sum: this.sum, inflight, queued, heap: getHeapStatistics().used_heap_size };
  }
}

/** The sum of several processes' snapshots (a missing or malformed bucket list counts as zeros). */
export function mergeSnapshots(all: readonly MetricsSnapshot[]): MetricsSnapshot {
  const out = emptySnapshot();
  for (const s of all) {
    for (const [k, v] of Object.entries(s.requests)) out.requests[k] = (out.requests[k] ?? 0) + v;
    s.buckets.forEach((v, i) => {
      if (i < out.buckets.length) out.buckets[i]! += v;
    });
    out.sum += s.sum;
    out.inflight += s.inflight;
    out.queued += s.queued;
    out.heap += s.heap;
  }
  return out;
}

/** What a supervisor adds: its workers by state and its restarts by reason (a single process: 1 ready, none). */
export interface PoolFigures {
  workers: Partial<Record<WorkerState, number>>;
  restarts: Partial<Record<RestartReason, number>>;
}

/** The Content-Type of the metrics path. */
export const PROMETHEUS_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** The metrics text: one schema on every host. */
export function renderPrometheus(s: MetricsSnapshot, pool: PoolFigures): string {
  const out: string[] = [];
  const head = (name: string, type: string, help: string): void => void out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  head('tsgi_requests_total', 'counter', 'Requests answered, by status code.');
  for (const k of Object.keys(s.requests).sort()) out.push(`tsgi_requests_total{status="${k}"} ${s.requests[k]}`);
  head('tsgi_request_duration_seconds', 'histogram', 'Time from arrival to the end of the response.');
  let cum = 0;
  DURATION_BUCKETS.forEach((le, i) => {
    cum += s.buckets[i] ?? 0;
    out.push(`tsgi_request_duration_seconds_bucket{le="${le}"} ${cum}`);
  });
  cum += s.buckets[DURATION_BUCKETS.length] ?? 0;
  out.push(`tsgi_request_duration_seconds_bucket{le="+Inf"} ${cum}`, `tsgi_request_duration_seconds_sum ${s.sum}`, `tsgi_request_duration_seconds_count ${cum}`);
  head('tsgi_inflight_requests', 'gauge', 'Requests being served now.');
  out.push(`tsgi_inflight_requests ${s.inflight}`);
  head('tsgi_queue_depth', 'gauge', 'Requests waiting for an in-flight slot.');
  out.push(`tsgi_queue_depth ${s.queued}`);
  head('tsgi_workers', 'gauge', 'Worker processes, by state.');
  for (const st of WORKER_STATES) out.push(`tsgi_workers{state="${st}"} ${pool.workers[st] ?? 0}`);
  head('tsgi_worker_restarts_total', 'counter', 'Workers replaced, by reason.');
  for (const r of RESTART_REASONS) out.push(`tsgi_worker_restarts_total{reason="${r}"} ${pool.restarts[r] ?? 0}`);
  head('tsgi_worker_heap_bytes', 'gauge', 'V8 heap used by the workers, summed.');
  out.push(`tsgi_worker_heap_bytes ${s.heap}`);
  return out.join('\n') + '\n';
}

/** One sample of a Prometheus text: name, labels, value. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** Parses Prometheus text (the subset tsgi writes: no escapes in label values, no timestamps); throws on a bad line. */
export function parsePrometheus(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m) throw new SyntaxError(`not a Prometheus sample: ${line}`);
    const labels: Record<string, string> = {};
    for (const pair of m[2] ? m[2].split(',') : []) {
      const l = /^([a-zA-Z_][a-zA-Z0-9_]*)="([^"\\]*)"$/.exec(pair);
      if (!l) throw new SyntaxError(`bad label in: ${line}`);
      labels[l[1]!] = l[2]!;
    }
    const value = m[3] === '+Inf' ? Infinity : Number(m[3]);
    if (Number.isNaN(value)) throw new SyntaxError(`bad value in: ${line}`);
    out.push({ name: m[1]!, labels, value });
  }
  return out;
}
