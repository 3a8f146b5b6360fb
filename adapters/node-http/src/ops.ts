/**
 * core's Operations on node:http (issue 12), as three hooks of exchange.ts:
 * the gate before a request runs (probes, admission), the deadline of an
 * exchange, and the Server-Timing header. Each admitted request's slot is
 * freed, and the request counted, when its response closes (finished, cut, or
 * the client gone), whatever path it took.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GATEWAY_TIMEOUT_TEXT, PLAIN_TEXT_TYPE, type RawResponse } from '@tsgi/core';
import { authMs, serverTimingValue, timeoutError, type Operations, type ProbeAnswer } from '@tsgi/core/node';
import type { Exchange, NodeHost } from './exchange.js';

interface Ticket {
  arrived: number;
  /** When it got its slot (the pipeline may start). */
  admitted: number;
}

const tickets = new WeakMap<IncomingMessage, Ticket>();

/** nginx's status for a client that closed before the response: what the metrics count such a request as. */
const CLIENT_CLOSED = 499;

const pathOf = (url: string | undefined): string => {
  const u = url ?? '/';
  const q = u.indexOf('?');
  return q < 0 ? u : u.slice(0, q);
};

function write(res: ServerResponse, a: ProbeAnswer, close: boolean): void {
  if (res.headersSent) return;
  const headers = ['content-type', a.type, 'content-length', String(Buffer.byteLength(a.body)), 'cache-control', 'no-store', ...(a.headers ?? []).flat()];
  if (close) headers.push('connection', 'close');
  res.writeHead(a.status, headers);
  res.end(a.body);
}

/** Counts the request and frees its slot when the response closes. */
function settle(ops: Operations, res: ServerResponse, t: Ticket): void {
  res.once('close', () => {
    const now = performance.now();
    ops.admission.leave(now - t.admitted);
    ops.finished(res.headersSent ? res.statusCode : CLIENT_CLOSED, now - t.arrived);
  });
}

/**
 * Before a request runs: a probe is answered here; an application request is
 * admitted (true: go on), queued (false: it is served later, through
 * host.serve again) or shed with 503 + Retry-After (false).
 */
export function opsGate(host: NodeHost, ops: Operations, req: IncomingMessage, res: ServerResponse): boolean {
  const probe = ops.probes ? ops.probe(pathOf(req.url)) : undefined;
  if (!probe && !ops.counts) return true;
  if (tickets.has(req)) return true; // back from the queue, or from waiting for init
  if (probe) {
    const ip = (host.trustProxy && typeof req.headers['x-real-ip'] === 'string' && req.headers['x-real-ip']) || req.socket.remoteAddress || '';
    const start = performance.now();
    void ops.answer(probe, ip).then((a) => {
      // Draining (also a --drain-delay's period): the probe's connection is not kept (a balancer's next check opens a new one).
      write(res, a, host.draining || ops.draining);
      host.logAccess(req, res, a.status, Buffer.byteLength(a.body), undefined, start);
    });
    return false;
  }
  const arrived = performance.now();
  const a = ops.admission.enter();
  if (a.ok === true) {
    const t = { arrived, admitted: arrived };
    tickets.set(req, t);
    settle(ops, res, t);
    return true;
  }
  const shed = (retryAfter: number, why: string): void => {
    host.log(`shedding a request: ${why} (503, Retry-After ${retryAfter})`);
    const body = 'Service Unavailable\n';
    write(res, { status: 503, type: PLAIN_TEXT_TYPE, body, headers: [['retry-after', String(retryAfter)]] }, true);
    host.logAccess(req, res, 503, body.length, undefined, arrived);
    ops.finished(503, performance.now() - arrived);
  };
  if (a.ok === false) {
    shed(a.retryAfter, a.why);
    return false;
  }
  const gone = (): void => a.cancel();
  res.once('close', gone);
  void a.admitted.then((ok) => {
    res.off('close', gone);
    if (!ok) {
      if (!res.destroyed) shed(ops.admission.retryAfter(), `waited longer than queue-timeout (${ops.s.queueTimeoutMs / 1000} s)`);
      return;
    }
    const t = { arrived, admitted: performance.now() };
    tickets.set(req, t);
    settle(ops, res, t);
    if (res.destroyed) return;
    host.serve(req, res);
  });
  return false;
}

/** An exchange under the deadline: when it is next checked (0: not seen by a sweep yet), its connection's byte count then, and where it sits in the live list (-1: off it). */
interface Watched {
  x: Exchange;
  due: number;
  last: number;
  slot: number;
  /** The list it is on. */
  on: Deadlines;
}

/**
 * The exchanges of one Operations under request-timeout, checked by one timer (no timer per request).
 * Adding one is an array push and removing it a swap with the last (a Set costs ~500 instructions a
 * request in hashing and rehashing); its clock starts at the first sweep that sees it (within `every`
 * of its start), so the hot path reads neither the clock nor the socket's byte counts.
 */
class Deadlines {
  private readonly live: Watched[] = [];
  private timer: NodeJS.Timeout | undefined;
  /** How often the set is swept: the deadline is met within this much. */
  private readonly every: number;

  constructor(
    private ops: Operations,
    private ms: number,
  ) {
    this.every = Math.min(1_000, Math.max(50, Math.floor(ms / 4)));
    ops.held = () => this.live.map((w) => w.x.ctx.id);
  }

  add(x: Exchange): Watched {
    const w: Watched = { x, due: 0, last: 0, slot: this.live.length, on: this };
    this.live.push(w);
    if (!this.timer) {
      this.timer = setInterval(() => this.sweep(), this.every);
      this.timer.unref();
    }
    return w;
  }

  remove(w: Watched): void {
    const i = w.slot;
    if (i < 0) return;
    w.slot = -1;
    const last = this.live.pop()!;
    if (last === w) return;
    this.live[i] = last;
    last.slot = i;
  }

  private sweep(): void {
    const now = Date.now();
    // Backwards: an expiry removes its exchange by moving the last one, already seen, into its place.
    for (let i = this.live.length - 1; i >= 0; i--) {
      const w = this.live[i]!;
      if (w.due === 0) {
        // First seen: it started at most `every` ago.
        w.due = now + this.ms - this.every;
        w.last = progress(w.x);
        continue;
      }
      if (now < w.due) continue;
      const p = progress(w.x);
      if (p !== w.last) {
        w.last = p;
        w.due = now + this.ms;
      } else this.expire(w.x);
    }
  }

  /** No progress for request-timeout: the signal aborts, then 504, or the connection is cut once the head left. */
  private expire(x: Exchange): void {
    const ms = this.ms;
    x.request.abortSignal(timeoutError(ms));
    const res = x.res;
    if (!res.headersSent) {
      x.host.log(`request ${x.ctx.id}: request-timeout (${ms / 1000} s) reached before the response: 504`);
      write(res, { status: 504, type: PLAIN_TEXT_TYPE, body: GATEWAY_TIMEOUT_TEXT }, true);
      x.end(504, 0);
    } else {
      x.host.log(`request ${x.ctx.id}: request-timeout (${ms / 1000} s) reached with no progress on the response: connection cut`);
      res.destroy();
      x.end(res.statusCode, 0);
    }
  }
}

/** Bytes read and written on the exchange's connection: what counts as progress. */
const progress = (x: Exchange): number => x.req.socket.bytesRead + x.req.socket.bytesWritten;

const deadlines = new WeakMap<Operations, Deadlines>();
/** One Operations per process in practice: the last one used, without a map lookup per request. */
let current: { ops: Operations; d: Deadlines } | undefined;

function deadlinesOf(ops: Operations, ms: number): Deadlines {
  if (current?.ops === ops) return current.d;
  let d = deadlines.get(ops);
  if (!d) deadlines.set(ops, (d = new Deadlines(ops, ms)));
  current = { ops, d };
  return d;
}

/**
 * The request deadline: an exchange without progress (no response head, and no byte read or written
 * on its connection) for request-timeout aborts its signal with a TimeoutError, then gets 504, or its
 * connection is cut once the head has left. The exchange ends there; the handler's late answer is dropped.
 */
export function opsTimer(x: Exchange, ops: Operations): void {
  const ms = ops.s.requestTimeoutMs;
  if (ms <= 0) return;
  x.deadline = deadlinesOf(ops, ms).add(x);
}

/** The exchange ended (answered, cut, or timed out): off the deadline. */
export function opsEnded(x: Exchange): void {
  const w = x.deadline as Watched | undefined;
  if (w) w.on.remove(w);
}

/** The response as written: with Server-Timing (queue, auth, fetch) when asked for. */
export function opsWire(x: Exchange, ops: Operations, raw: RawResponse): RawResponse {
  if (!ops.s.serverTiming) return raw;
  const t = tickets.get(x.req);
  if (!t) return raw;
  const auth = authMs(x.ctx);
  const value = serverTimingValue({ queueMs: t.admitted - t.arrived, authMs: auth, fetchMs: performance.now() - t.admitted - (auth ?? 0) });
  return { ...raw, headers: [...raw.headers, 'server-timing', value] };
}
