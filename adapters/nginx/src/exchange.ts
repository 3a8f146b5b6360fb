/**
 * One request read by connection.ts, start to finish: the operations gate
 * (probes, admission), the pipeline (core's runPipelineThen, or runAccess for
 * auth_request), the response (respond.ts), the deadline, then the `log`
 * hook and the counts. node-http's exchange.ts does the same on node:http;
 * the rules both follow are core's.
 */
import { GATEWAY_TIMEOUT_TEXT, PLAIN_TEXT_TYPE, internalError, runLog, runPipelineThen, toRawResponse, type ErrorLogger, type Handler, type RawResponse } from '@tsgi/core';
import {
  Deadlines,
  RequestContext,
  answerHeaders,
  runAccess,
  timeoutError,
  withServerTiming,
  type Lifecycle,
  type Operations,
  type ProbeAnswer,
  type Timed,
  type Watched,
} from '@tsgi/core/node';
import { StreamStartError } from '@tsgi/node-http';
import type { NginxConnection } from './connection.js';
import { NginxRequest } from './request.js';
import { writeOwn, writeResponse } from './respond.js';

/** What every request of one worker shares. */
export interface NginxHost {
  readonly handler: Handler;
  /** What runs the pipeline: the handler, or (--server-timing) its access hooks timed. */
  readonly pipeline: Handler;
  readonly lifecycle: Lifecycle;
  readonly ops: Operations | undefined;
  readonly log: ErrorLogger;
  readonly hasLog: boolean;
  /** The worker drains: every response carries Connection: close. */
  draining: boolean;
}

/** nginx's status for a client that closed before the response: what the metrics count such a request as. */
const CLIENT_CLOSED = 499;

export class NginxExchange implements Timed {
  request: NginxRequest | undefined = undefined;
  ctx: RequestContext | undefined = undefined;
  /** Its entry under the request deadline, when one is set. */
  deadline: Watched | undefined = undefined;
  /** performance.now() at arrival and at admission (only when the operations count requests). */
  arrived = 0;
  admitted = 0;
  /** The status written (0: none yet). */
  status = 0;
  /** end() ran (a request-timeout may end it before the handler answers). */
  private ended = false;
  private readonly start: number;

  constructor(
    readonly conn: NginxConnection,
    readonly method: string,
    /** The origin-form target. */
    readonly path: string,
    readonly authority: string,
    readonly scheme: 'http' | 'https',
    /** Flat [name, value, ...] as nginx sent them, less its X-Tsgi-* lines. */
    readonly headers: string[],
    readonly body: Buffer | undefined,
    readonly ip: string,
    readonly basePath: string,
    /** X-Tsgi-Phase: access (auth_request): authenticate + authorize alone. */
    readonly access: boolean,
  ) {
    this.start = conn.host.hasLog ? performance.now() : 0;
  }

  /** Runs it: through the operations gate when there is one. */
  run(): void {
    const ops = this.conn.host.ops;
    if (ops && (ops.probes || ops.counts) && !this.gate(ops)) return;
    this.begin();
  }

  private begin(): void {
    const host = this.conn.host;
    const request = (this.request = new NginxRequest(this));
    const ctx = (this.ctx = new RequestContext('nginx', this.ip, host.lifecycle, undefined, undefined, this.basePath));
    host.lifecycle.begin();
    const deadlines = host.ops?.deadlines;
    if (deadlines) this.deadline = deadlines.add(this);
    if (this.access) {
      void runAccess(host.handler, request as unknown as Request, ctx, host.log).then((r) => this.send(r));
      return;
    }
    // No promise step between the handler's answer and the writer (the hot path).
    runPipelineThen(host.pipeline, request as unknown as Request, ctx, host.log, (r) => this.send(r));
  }

  /**
   * Before the pipeline (node-http's opsGate on this transport): a probe is answered here; a request is
   * admitted (true), queued (false: it begins once admitted) or shed with 503 + Retry-After (false).
   */
  private gate(ops: Operations): boolean {
    const probe = ops.probes ? ops.probe(this.path) : undefined;
    if (probe) {
      void ops.answer(probe, this.ip).then((a) => this.own(a, this.conn.host.draining || ops.draining));
      return false;
    }
    if (!ops.counts) return true;
    const arrived = (this.arrived = performance.now());
    const a = ops.admission.enter();
    if (a.ok === true) {
      this.admitted = arrived;
      return true;
    }
    if (a.ok === false) {
      this.shed(ops, a.retryAfter, a.why);
      return false;
    }
    this.conn.onGone(this, () => a.cancel());
    void a.admitted.then((ok) => {
      this.conn.offGone(this);
      if (!ok) {
        if (!this.conn.gone) this.shed(ops, ops.admission.retryAfter(), `waited longer than queue-timeout (${ops.s.queueTimeoutMs / 1000} s)`);
        else this.conn.finished();
        return;
      }
      this.admitted = performance.now();
      if (!this.conn.gone) return this.begin();
      ops.admission.leave(0);
      ops.finished(CLIENT_CLOSED, this.admitted - arrived);
      this.conn.finished();
    });
    return false;
  }

  private shed(ops: Operations, retryAfter: number, why: string): void {
    this.conn.host.log(`shedding a request: ${why} (503, Retry-After ${retryAfter})`);
    this.own({ status: 503, type: PLAIN_TEXT_TYPE, body: 'Service Unavailable\n', headers: [['retry-after', String(retryAfter)]] }, true);
    ops.finished(503, performance.now() - this.arrived);
  }

  /** The worker's own answer before the pipeline (a probe, a shed request); the connection goes on unless `close`. */
  private own(a: ProbeAnswer, close: boolean): void {
    const conn = this.conn;
    if (!conn.gone) {
      if (close) conn.closeAfter();
      writeOwn(conn.socket, a.status, answerHeaders(a, close), a.body);
    }
    conn.finished();
  }

  /** Writes the handler's answer, then ends the exchange. */
  send(response: Response): void {
    const conn = this.conn;
    const host = conn.host;
    if (this.ended || conn.gone) {
      // Timed out already, or nginx is gone: nothing is written; a stream is released.
      release(response);
      if (!this.ended) this.end(CLIENT_CLOSED, 0);
      return;
    }
    let raw: RawResponse;
    try {
      raw = toRawResponse(response);
    } catch (err) {
      host.log(`request ${this.ctx!.id}: invalid response`, err);
      raw = toRawResponse(internalError());
    }
    if (host.ops?.s.serverTiming && this.admitted > 0) raw = withServerTiming(raw, this.arrived, this.admitted, this.ctx!);
    const isHead = this.method === 'HEAD';
    const close = conn.closing || host.draining;
    if (close) conn.closeAfter();
    this.status = raw.status;
    const sent = writeResponse(conn, raw, isHead, close);
    if (typeof sent === 'number') return this.end(raw.status, sent);
    sent.then(
      (bytes) => this.end(raw.status, bytes),
      (err: unknown) => {
        host.log(`request ${this.ctx!.id}: response stream failed`, err);
        if (err instanceof StreamStartError && !conn.gone) {
          // Failed before its first chunk: nothing went out, so a clean 500 still can.
          this.status = 500;
          void writeResponse(conn, toRawResponse(internalError()), isHead, close);
          return this.end(500, 0);
        }
        this.end(this.status, 0);
      },
    );
  }

  /** Frees the in-flight slot; the counts and the `log` hook once the response has left (or nginx is gone); then the next request. */
  end(status: number, bytes: number): void {
    if (this.ended) return;
    this.ended = true;
    const conn = this.conn;
    const host = conn.host;
    host.lifecycle.end();
    if (this.deadline) Deadlines.remove(this.deadline);
    const ops = host.ops;
    const counted = ops !== undefined && this.arrived > 0;
    if (counted || host.hasLog) {
      conn.whenFlushed(() => {
        const now = performance.now();
        if (counted) {
          ops.admission.leave(now - this.admitted);
          ops.finished(conn.gone && this.status === 0 ? CLIENT_CLOSED : status, now - this.arrived);
        }
        if (host.hasLog) {
          const request = this.request!;
          runLog(host.handler, { method: this.method, url: request.url, status, bytes, durationMs: now - this.start, user: this.ctx!.user }, this.ctx!, host.log);
        }
      });
    }
    conn.finished();
  }

  /** Bytes read and written on its connection: what the deadline counts as progress. */
  progress(): number {
    const socket = this.conn.socket;
    return socket.bytesRead + socket.bytesWritten;
  }

  /** No progress for request-timeout: the signal aborts, then 504 (and the connection closes), or it is cut once the head left. */
  expire(ms: number): void {
    this.request!.abortSignal(timeoutError(ms));
    const conn = this.conn;
    const log = conn.host.log;
    if (this.status === 0) {
      log(`request ${this.ctx!.id}: request-timeout (${ms / 1000} s) reached before the response: 504`);
      if (!conn.gone) {
        conn.closeAfter();
        writeOwn(conn.socket, 504, answerHeaders({ status: 504, type: PLAIN_TEXT_TYPE, body: GATEWAY_TIMEOUT_TEXT }, true), GATEWAY_TIMEOUT_TEXT);
      }
      this.status = 504;
      this.end(504, 0);
    } else {
      log(`request ${this.ctx!.id}: request-timeout (${ms / 1000} s) reached with no progress on the response: connection cut`);
      conn.socket.destroy();
      this.end(this.status, 0);
    }
  }
}

/** A Response that will not be written: its stream is cancelled. */
function release(response: Response): void {
  try {
    const raw = toRawResponse(response);
    if (raw.body instanceof ReadableStream) void raw.body.cancel().catch(() => {});
  } catch {
    // nothing to release
  }
}
