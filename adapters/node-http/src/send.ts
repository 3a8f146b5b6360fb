import { STATUS_CODES, type ServerResponse } from 'node:http';
import { setTimeout } from 'node:timers';
import { FIRST_CHUNK_WAIT_MS, contentLengthRule, isAscii, isHopByHop, statusHasNoBody, withHeaders, type RawResponse } from '@tsgi/core';

// STATUS_CODES as an array: an object with integer keys is slow to index on every response.
const REASONS: string[] = [];
for (const code of Object.keys(STATUS_CODES)) REASONS[Number(code)] = STATUS_CODES[code]!;

/** A response head as Node writes it, after core's wire rules (core/src/wire.ts). */
export interface WireHead {
  /** The handler's statusText, or the standard phrase (never a leftover res.statusMessage). */
  reason: string;
  /** Flat [name, value, ...]: no hop-by-hop names, Content-Length per contentLengthRule; may be the Response's own list (read only). */
  headers: readonly string[];
  /** A stream's own Content-Length: the stream is cut if it delivers another count. */
  declared: number | undefined;
}

/**
 * `fixedLength`: the byte count of a string/bytes/null body, undefined for a
 * stream. `close`: add `Connection: close` (a server that is draining).
 */
export function wireHead(raw: RawResponse, fixedLength: number | undefined, close = false): WireHead {
  const src = raw.headers;
  const rule = contentLengthRule(raw.status, fixedLength !== undefined);
  const reason = raw.statusText || REASONS[raw.status] || '';
  if (raw.plain) {
    // Nothing to take out (core's fast Response checked the names when it was built). The list may be the
    // Response's own: what is added goes on a copy.
    const length = rule === 'server' ? `${fixedLength!}` : undefined;
    if (length === undefined) return { reason, headers: close ? withHeaders(src, 'connection', 'close') : src, declared: undefined };
    return { reason, headers: withHeaders(src, 'content-length', length, close ? 'connection' : undefined, 'close'), declared: undefined };
  }
  const headers: string[] = [];
  let declared: number | undefined;
  let badLength = false;
  for (let i = 0; i < src.length; i += 2) {
    const lower = src[i]!.toLowerCase();
    if (isHopByHop(lower)) continue;
    if (lower === 'content-length') {
      if (rule !== 'handler') continue;
      if (fixedLength === undefined) {
        // A stream's length must be one plain number (repeats allowed if equal), else it goes out chunked.
        const v = src[i + 1]!;
        const n = /^\d{1,15}$/.test(v) ? Number(v) : NaN;
        if (Number.isNaN(n) || (declared !== undefined && declared !== n)) badLength = true;
        else declared = n;
      }
    }
    headers.push(src[i]!, src[i + 1]!);
  }
  if (badLength) {
    declared = undefined;
    for (let i = headers.length - 2; i >= 0; i -= 2) if (headers[i]!.toLowerCase() === 'content-length') headers.splice(i, 2);
  }
  if (rule === 'server') headers.push('content-length', `${fixedLength!}`);
  if (close) headers.push('connection', 'close');
  return { reason, headers, declared };
}

/**
 * True when the head is pure ASCII. Node writes a string body merged into the
 * head and encodes both as UTF-8, which would turn a latin1 header byte
 * (U+00E9 → E9) into two; such bodies go out as a Buffer instead.
 */
export function asciiHead(head: WireHead): boolean {
  if (!isAscii(head.reason)) return false;
  const h = head.headers;
  for (let i = 1; i < h.length; i += 2) if (!isAscii(h[i]!)) return false;
  return true;
}

/**
 * Writes a response; resolves with the body bytes sent once it has finished
 * (or the client left). String and byte bodies go out in one write.
 */
export function sendResponse(res: ServerResponse, raw: RawResponse, isHead: boolean, close = false): number | Promise<number> {
  const { status, body } = raw;
  if (statusHasNoBody(status)) {
    if (body instanceof ReadableStream) void body.cancel().catch(() => {});
    const head = wireHead(raw, 0, close);
    res.writeHead(status, head.reason, head.headers as string[]);
    res.end();
    return 0;
  }
  if (body === null || typeof body === 'string' || body instanceof Uint8Array) {
    const len = body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    const head = wireHead(raw, len, close);
    res.writeHead(status, head.reason, head.headers as string[]);
    if (isHead || len === 0) {
      res.end();
      return 0;
    }
    // The fast Response knows its values' bytes from construction; the reason phrase is the one left to check.
    const latin1 = typeof body === 'string' && !(raw.ascii === true ? isAscii(head.reason) : asciiHead(head));
    res.end(latin1 ? Buffer.from(body) : body);
    return len;
  }
  const head = wireHead(raw, undefined, close);
  if (isHead) {
    // An endless stream must not keep a HEAD waiting.
    res.writeHead(status, head.reason, head.headers as string[]);
    void body.cancel().catch(() => {});
    res.end();
    return 0;
  }
  return pump(body, res, status, head);
}

/** Thrown when a stream fails before anything was sent: the caller can still answer 500. */
export class StreamStartError extends Error {
  override name = 'StreamStartError';
}

type Read = ReadableStreamReadResult<Uint8Array>;

/** Resolves null after FIRST_CHUNK_WAIT_MS, without keeping the process alive. */
export function firstChunkWait(): Promise<null> {
  return new Promise((resolve) => setTimeout(resolve, FIRST_CHUNK_WAIT_MS, null).unref());
}

/** True once the client connection of `res` is gone (or the response was destroyed). */
export function clientGone(res: ServerResponse): boolean {
  return res.destroyed || res.closed;
}

/** Where pumpStream sends a stream, in the host's own framing. */
export interface StreamWriter {
  /** The head may leave: `alone` when no chunk came within FIRST_CHUNK_WAIT_MS (it goes now); else with the first chunk. */
  head(alone: boolean): void;
  /** One chunk; a promise while the connection wants a pause (back-pressure). */
  write(chunk: Uint8Array): Promise<void> | undefined;
  /** The stream ended with its declared count, if it had one. */
  end(): void;
}

/**
 * A response stream through `w` by core's rules, on every Node transport (send.ts's node:http, nginx
 * workers mode's respond.ts): the head with the first chunk or after FIRST_CHUNK_WAIT_MS, a declared
 * Content-Length held to, chunks written as `w` drains. Resolves with the bytes sent, or as soon as
 * `gone()` (the caller watches the client and cancels `reader`). Throws StreamStartError when the
 * stream fails before its head left; throws on a later failure or another count than `declared` (the
 * caller cuts the connection).
 */
export async function pumpStream(reader: ReadableStreamDefaultReader<Uint8Array>, declared: number | undefined, gone: () => boolean, w: StreamWriter): Promise<number> {
  let pending: Promise<Read> | undefined = reader.read();
  const early = await Promise.race([
    pending.then(
      (r) => ({ r }),
      (e: unknown) => ({ e }),
    ),
    firstChunkWait(),
  ]);
  if (gone()) return 0;
  if (early && 'e' in early) throw new StreamStartError('response stream failed before its first chunk', { cause: early.e });
  w.head(!early);
  let bytes = 0;
  for (;;) {
    const { done, value } = early && pending ? early.r : await (pending ?? reader.read());
    pending = undefined;
    if (done || gone()) break;
    const chunk = typeof value === 'string' ? Buffer.from(value) : value;
    if (declared !== undefined && bytes + chunk.byteLength > declared) {
      throw new Error(`response stream delivered more than its Content-Length ${declared}; connection cut`);
    }
    bytes += chunk.byteLength;
    const pause = w.write(chunk);
    if (pause) await pause;
  }
  if (gone()) return bytes;
  if (declared !== undefined && bytes !== declared) {
    throw new Error(`response stream delivered ${bytes} bytes, not its Content-Length ${declared}; connection cut`);
  }
  w.end();
  return bytes;
}

/** Until `res` wants more, or it closed. */
function drained(res: ServerResponse): Promise<void> {
  return new Promise<void>((resolve) => {
    const go = (): void => {
      res.off('drain', go);
      res.off('close', go);
      resolve();
    };
    res.on('drain', go);
    res.on('close', go);
  });
}

async function pump(body: ReadableStream<Uint8Array>, res: ServerResponse, status: number, head: WireHead): Promise<number> {
  const reader = body.getReader();
  // Watch the client from the start: one that leaves during the first-chunk wait must cancel the stream too.
  let gone = false;
  const onClose = (): void => {
    gone = true;
    if (!res.writableFinished) reader.cancel().catch(() => {});
  };
  if (clientGone(res)) onClose();
  else res.once('close', onClose);
  try {
    return await pumpStream(reader, head.declared, () => gone, {
      head: (alone) => {
        res.writeHead(status, head.reason, head.headers as string[]);
        if (alone) res.flushHeaders();
      },
      write: (chunk) => (res.write(chunk) ? undefined : drained(res)),
      end: () => res.end(),
    });
  } catch (err) {
    if (err instanceof StreamStartError) throw err;
    // Mid-stream failure: the status is already out, so cut the connection and let the client see it.
    // res.write corks the socket until the next tick; flush what was written before cutting.
    void reader.cancel().catch(() => {});
    res.socket?.uncork();
    res.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  } finally {
    res.off('close', onClose);
  }
}
