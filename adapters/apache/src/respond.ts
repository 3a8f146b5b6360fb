/**
 * Writes a handler's Response onto its connection by core's wire rules
 * (@tsgi/core wire.ts), the only place the Apache host applies them (mod_tsgi
 * checks the framing alone): hop-by-hop names dropped, Content-Length by
 * contentLengthRule, no body for HEAD/204/304/1xx, a stream's head after its
 * first chunk or FIRST_CHUNK_WAIT_MS, and never an error that reaches the client
 * as anything but the bare 500 or a cut connection.
 */
import {
  FIRST_CHUNK_WAIT_MS,
  contentLengthRule,
  internalError,
  isHopByHop,
  sendsBody,
  statusHasNoBody,
  toRawResponse,
  withHeaders,
  type ErrorLogger,
  type RawResponse,
} from '@tsgi/core';
import type { Connection } from './connection.js';
import type { ApacheRequest } from './request.js';

/** Who a response is written for (the worker): where errors go, and who hears when it is done. */
export interface Responder {
  readonly log: ErrorLogger;
  /** Called once the answer to `req` is written (or abandoned): its status and the body bytes sent. */
  finished(conn: Connection, req: ApacheRequest, status: number, bytes: number): void;
  /** The response as it goes on the wire (Server-Timing added), when the host changes it. */
  wire?(req: ApacheRequest, raw: RawResponse): RawResponse;
}

/** Longer reason phrases are not sent (the server's standard one is): RESPONSE_HEAD carries a str16. */
const MAX_REASON = 1024;

/** The statusText to send: toRawResponse has checked its characters. */
const reasonOf = (raw: RawResponse): string => (raw.statusText.length <= MAX_REASON ? raw.statusText : '');

const asBuffer = (u: Uint8Array): Buffer => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

/**
 * The handler's headers as they go on the wire: hop-by-hop names dropped, and
 * Content-Length as core's contentLengthRule says (`length` is the fixed body's
 * byte count, or -1 for a stream). Names are only lower-cased when their length
 * could match, so the common headers cost a length check.
 */
export function wireHeaders(h: readonly string[], status: number, length: number): readonly string[] {
  const rule = contentLengthRule(status, length >= 0);
  let out: string[] | null = null;
  for (let i = 0; i < h.length; i += 2) {
    const name = h[i]!;
    const n = name.length;
    let drop = false;
    if (n === 14) drop = rule !== 'handler' && name.toLowerCase() === 'content-length';
    else if (n === 2 || n === 7 || n === 10 || n === 16 || n === 17) drop = isHopByHop(name.toLowerCase());
    if (drop && !out) out = h.slice(0, i);
    else if (!drop && out) out.push(name, h[i + 1]!);
  }
  if (rule !== 'server') return out ?? h;
  // `h` may be the Response's own list (toRawResponse shares it): added to as a copy.
  if (!out) return withHeaders(h, 'content-length', String(length));
  out.push('content-length', String(length));
  return out;
}

/** Writes `res` as the answer to `req`; string and byte bodies go out in one write, streams chunk by chunk. */
export function respond(conn: Connection, req: ApacheRequest, res: Response, host: Responder): void {
  let raw: RawResponse;
  try {
    raw = toRawResponse(res);
  } catch (err) {
    // A header the wire can't carry (control characters, beyond latin1, too many) or a bad status: the bare 500.
    host.log(`request ${req._ctx.id}: invalid response`, err);
    raw = toRawResponse(internalError());
  }
  if (host.wire) raw = host.wire(req, raw);
  const body = raw.body;
  if (!conn.writable(req)) {
    if (body instanceof ReadableStream) void body.cancel(req._aborted).catch(() => {});
    host.finished(conn, req, raw.status, 0);
    return;
  }
  const sendBody = sendsBody(req._m.method, raw.status);
  if (!(body instanceof ReadableStream)) {
    const bytes = body === null || statusHasNoBody(raw.status) ? null : typeof body === 'string' ? body : asBuffer(body);
    const length = bytes === null ? 0 : typeof bytes === 'string' ? Buffer.byteLength(bytes) : bytes.length;
    const headers = wireHeaders(raw.headers, raw.status, length);
    conn.sendResponse(raw.status, reasonOf(raw), headers, sendBody ? bytes : null, sendBody ? length : 0);
    host.finished(conn, req, raw.status, sendBody ? length : 0);
    return;
  }
  const headers = wireHeaders(raw.headers, raw.status, -1);
  if (!sendBody) {
    // HEAD (or 204/304): headers only; let the stream go at once, even an endless one.
    void body.cancel().catch(() => {});
    conn.sendResponse(raw.status, reasonOf(raw), headers, null, 0);
    host.finished(conn, req, raw.status, 0);
    return;
  }
  stream(conn, req, raw.status, reasonOf(raw), headers, body, host);
}

/**
 * A stream's head leaves with its first chunk, or FIRST_CHUNK_WAIT_MS without
 * one (an empty flushed BODY frame makes Apache send it to the client), so
 * an SSE stream that waits still gets its head promptly while one that fails
 * at once still gets the bare 500. A request aborted at any point (client
 * gone, request-timeout) cancels the stream, also before its first chunk.
 */
function stream(
  conn: Connection,
  req: ApacheRequest,
  status: number,
  reason: string,
  headers: readonly string[],
  body: ReadableStream<Uint8Array>,
  host: Responder,
): void {
  const reader = body.getReader();
  let headSent = false;
  const sendHead = () => {
    if (headSent) return;
    headSent = true;
    conn.sendHead(status, reason, headers);
  };
  const timer = setTimeout(() => {
    if (!conn.writable(req)) return;
    sendHead();
    conn.sendFlush();
  }, FIRST_CHUNK_WAIT_MS);
  req._onAbort = (why) => {
    clearTimeout(timer);
    void reader.cancel(why).catch(() => {});
  };
  const finished = (bytes: number) => {
    req._onAbort = undefined;
    host.finished(conn, req, status, bytes);
  };
  const failed = (what: string) => (err: unknown) => {
    // Headers are out: all we can do is drop the connection (Apache aborts the client's).
    host.log(`request ${req._ctx.id}: ${what}`, err);
    conn.destroy(err);
    finished(0);
  };
  reader.read().then(
    (first) => {
      clearTimeout(timer);
      if (!conn.writable(req)) {
        void reader.cancel(req._aborted).catch(() => {});
        finished(0);
        return;
      }
      sendHead();
      pump(conn, req, reader, first).then(finished, failed('response stream failed'));
    },
    (err) => {
      clearTimeout(timer);
      if (!conn.writable(req)) {
        finished(0);
      } else if (headSent) {
        failed('response stream failed before its first chunk')(err);
      } else {
        host.log(`request ${req._ctx.id}: response stream failed before its first chunk`, err);
        req._onAbort = undefined;
        respond(conn, req, internalError(), host);
      }
    },
  );
}

/** Streams a body: one flushed BODY frame per chunk, waiting for the socket when it is full. */
async function pump(
  conn: Connection,
  req: ApacheRequest,
  reader: ReadableStreamDefaultReader<Uint8Array>,
  first: ReadableStreamReadResult<Uint8Array>,
): Promise<number> {
  let bytes = 0;
  let next: ReadableStreamReadResult<Uint8Array> | null = first;
  try {
    for (;;) {
      if (!conn.writable(req)) {
        void reader.cancel(req._aborted).catch(() => {});
        return bytes;
      }
      const { done, value } = next ?? (await reader.read());
      next = null;
      if (done) break;
      if (!conn.writable(req)) continue;
      if (!(value instanceof Uint8Array)) throw new TypeError('response body chunks must be Uint8Array');
      if (value.length === 0) continue;
      bytes += value.length;
      if (!conn.sendBody(asBuffer(value), true)) await conn.drained();
    }
    if (conn.writable(req)) conn.sendEnd();
    return bytes;
  } finally {
    try {
      reader.releaseLock();
    } catch {
      // a read still pending on a cancelled stream
    }
  }
}
