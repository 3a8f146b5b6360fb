/**
 * core's Operations on node:http (issue 12), as three hooks of exchange.ts:
 * the gate before a request runs (probes, admission), what the deadline
 * (core's Deadlines) does to an exchange, and the Server-Timing header. Each admitted request's slot is
 * freed, and the request counted, when its response closes (finished, cut, or
 * the client gone), whatever path it took.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { GATEWAY_TIMEOUT_TEXT, PLAIN_TEXT_TYPE, type RawResponse } from '@tsgi/core';
import { answerHeaders, timeoutError, withServerTiming, type Operations, type ProbeAnswer } from '@tsgi/core/node';
import type { Exchange, NodeHost } from './exchange.js';

interface Ticket {
  arrived: number;
  /** When it got its slot (the pipeline may start). */
  admitted: number;
}

const tickets = new WeakMap<IncomingMessage, Ticket>();

/** nginx's status for a client that closed before the response: what the metrics count such a request as. */
const CLIENT_CLOSED = 499;

function write(res: ServerResponse, a: ProbeAnswer, close: boolean): void {
  if (res.headersSent) return;
  res.writeHead(a.status, answerHeaders(a, close));
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
  const probe = ops.probes ? ops.probe(req.url ?? '/') : undefined;
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

/**
 * No progress for request-timeout (core's Deadlines): the signal aborts, then 504, or the connection is
 * cut once the head left. The exchange ends there; the handler's late answer is dropped.
 */
export function opsExpire(x: Exchange, ms: number): void {
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

/** The response as written: with Server-Timing (queue, auth, fetch) when asked for. */
export function opsWire(x: Exchange, ops: Operations, raw: RawResponse): RawResponse {
  if (!ops.s.serverTiming) return raw;
  const t = tickets.get(x.req);
  return t ? withServerTiming(raw, t.arrived, t.admitted, x.ctx) : raw;
}
