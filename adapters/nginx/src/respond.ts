/**
 * A response on nginx's connection, in HTTP/1.1 bytes (connection.ts reads
 * the requests): core's wire rules through node-http's wireHead, so the head
 * is the one node:http would send; a string or byte body in one write with
 * its head; a stream chunked (or under its own Content-Length), its head with
 * the first chunk or after FIRST_CHUNK_WAIT_MS, written as the socket drains.
 */
import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import { isAscii, statusHasNoBody, type RawResponse } from '@tsgi/core';
import { StreamStartError, asciiHead, pumpStream, wireHead, type WireHead } from '@tsgi/node-http';

/** Where a response goes: the socket, and whether the client (nginx) has gone. */
export interface Sink {
  readonly socket: Socket;
  readonly gone: boolean;
  /** `fn` once the connection is gone (at once if it is); `key` takes it off again (offGone). */
  onGone(key: object, fn: () => void): void;
  offGone(key: object): void;
}

function headText(status: number, head: WireHead, chunked: boolean): string {
  let s = `HTTP/1.1 ${status} ${head.reason}\r\n`;
  const h = head.headers;
  for (let i = 0; i < h.length; i += 2) s += `${h[i]!}: ${h[i + 1]!}\r\n`;
  return chunked ? `${s}transfer-encoding: chunked\r\n\r\n` : `${s}\r\n`;
}

/** The worker's own answer (a probe, a shed request, a timeout): `headers` complete (core's answerHeaders). */
export function writeOwn(socket: Socket, status: number, headers: readonly string[], text: string): void {
  let s = `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? ''}\r\n`;
  for (let i = 0; i < headers.length; i += 2) s += `${headers[i]!}: ${headers[i + 1]!}\r\n`;
  socket.write(`${s}\r\n${text}`);
}

/**
 * Writes `raw` (`close`: with Connection: close); returns the body bytes sent, or a promise of them for
 * a stream. Throws StreamStartError (rejects) when a stream fails before its head left: nothing was
 * written, so the bare 500 can still go out; a later failure cuts the connection.
 */
export function writeResponse(sink: Sink, raw: RawResponse, isHead: boolean, close: boolean): number | Promise<number> {
  const { status, body } = raw;
  const socket = sink.socket;
  if (statusHasNoBody(status)) {
    if (body instanceof ReadableStream) void body.cancel().catch(() => {});
    socket.write(headText(status, wireHead(raw, 0, close), false), 'latin1');
    return 0;
  }
  if (body instanceof ReadableStream) {
    const head = wireHead(raw, undefined, close);
    if (isHead) {
      // An endless stream must not keep a HEAD waiting; no framing for a body that never comes.
      void body.cancel().catch(() => {});
      socket.write(headText(status, head, false), 'latin1');
      return 0;
    }
    return pump(sink, body, status, head);
  }
  const len = body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
  const head = wireHead(raw, len, close);
  const text = headText(status, head, false);
  if (isHead || len === 0) {
    socket.write(text, 'latin1');
    return 0;
  }
  // The fast Response knows its values' bytes from construction; the reason phrase is the one left to check.
  const ascii = raw.ascii === true ? isAscii(head.reason) : asciiHead(head);
  if (typeof body === 'string' && ascii) {
    // An ASCII head and a UTF-8 body: one string, encoded once (latin1, a plain copy, when the body is ASCII too).
    socket.write(text + body, isAscii(body) ? 'latin1' : 'utf8');
  } else {
    // latin1 header bytes (U+00E9 is byte E9) or a byte body: one buffer.
    const hl = text.length;
    const out = Buffer.allocUnsafe(hl + len);
    out.write(text, 0, hl, 'latin1');
    if (typeof body === 'string') out.write(body, hl, len, 'utf8');
    else out.set(body!, hl);
    socket.write(out);
  }
  return len;
}

const CRLF = Buffer.from('\r\n');

async function pump(sink: Sink, body: ReadableStream<Uint8Array>, status: number, head: WireHead): Promise<number> {
  const socket = sink.socket;
  const reader = body.getReader();
  const chunked = head.declared === undefined;
  // Watched from the start: a client that leaves during the first-chunk wait cancels the stream too.
  const key = {};
  let gone = false;
  sink.onGone(key, () => {
    gone = true;
    reader.cancel().catch(() => {});
  });
  let pendingHead: string | undefined = headText(status, head, chunked);
  try {
    return await pumpStream(reader, head.declared, () => gone, {
      head: (alone) => {
        if (!alone) return; // it goes with the first chunk, in one write
        socket.write(pendingHead!, 'latin1');
        pendingHead = undefined;
      },
      write: (chunk) => {
        if (chunk.byteLength === 0) return undefined; // a zero-size chunk would end a chunked body
        socket.cork();
        if (pendingHead !== undefined) {
          socket.write(pendingHead, 'latin1');
          pendingHead = undefined;
        }
        if (chunked) socket.write(`${chunk.byteLength.toString(16)}\r\n`, 'latin1');
        const more = socket.write(chunk);
        if (chunked) socket.write(CRLF);
        socket.uncork();
        return more ? undefined : drained(sink);
      },
      end: () => {
        if (pendingHead !== undefined) socket.write(pendingHead, 'latin1');
        if (chunked) socket.write('0\r\n\r\n', 'latin1');
      },
    });
  } catch (err) {
    if (err instanceof StreamStartError) throw err;
    // Mid-stream failure: the status is already out, so cut the connection and let the client (nginx) see it.
    void reader.cancel().catch(() => {});
    socket.destroy();
    throw err;
  } finally {
    sink.offGone(key);
  }
}

/** Until the socket wants more, or the connection is gone. */
function drained(sink: Sink): Promise<void> {
  return new Promise<void>((resolve) => {
    const key = {};
    const go = (): void => {
      sink.socket.off('drain', go);
      sink.offGone(key);
      resolve();
    };
    sink.socket.on('drain', go);
    sink.onGone(key, go);
  });
}
