import type { ServerResponse } from 'node:http';
import { setTimeout } from 'node:timers';
import { statusHasNoBody, type RawResponse } from '@tsgi/core';

// Framing is the server's job: a handler's values for these would corrupt the wire.
export const HOP = new Set(['connection', 'keep-alive', 'transfer-encoding', 'upgrade', 'proxy-connection']);

/** `length`: a number replaces the handler's Content-Length, null drops it, undefined keeps it. */
function outHeaders(raw: RawResponse, length: number | null | undefined): string[] {
  const src = raw.headers;
  const out: string[] = [];
  for (let i = 0; i < src.length; i += 2) {
    const lower = src[i]!.toLowerCase();
    if (HOP.has(lower) || (length !== undefined && lower === 'content-length')) continue;
    out.push(src[i]!, src[i + 1]!);
  }
  if (typeof length === 'number') out.push('content-length', String(length));
  return out;
}

/**
 * Writes a response; resolves with the body bytes sent once it has finished
 * (or the client left). String and byte bodies go out in one write.
 */
export function sendResponse(res: ServerResponse, raw: RawResponse, isHead: boolean): number | Promise<number> {
  const { status, body } = raw;
  if (raw.statusText) res.statusMessage = raw.statusText;
  if (statusHasNoBody(status)) {
    if (body instanceof ReadableStream) void body.cancel().catch(() => {});
    // 304 may describe the representation's length; 204 and 1xx may not (RFC 9110 8.6).
    res.writeHead(status, outHeaders(raw, status === 304 ? undefined : null));
    res.end();
    return 0;
  }
  if (body === null || typeof body === 'string' || body instanceof Uint8Array) {
    const len = body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body.byteLength;
    res.writeHead(status, outHeaders(raw, len));
    if (isHead || body === null) {
      res.end();
      return 0;
    }
    res.end(body);
    return len;
  }
  if (isHead) {
    // An endless stream must not keep a HEAD waiting.
    res.writeHead(status, outHeaders(raw, undefined));
    void body.cancel().catch(() => {});
    res.end();
    return 0;
  }
  return pump(body, res, status, outHeaders(raw, undefined));
}

/** Thrown when a stream fails before anything was sent: the caller can still answer 500. */
export class StreamStartError extends Error {
  override name = 'StreamStartError';
}

// How long the status waits for a stream's first chunk. A stream that errors at
// once still gets a clean 500; one that waits (SSE) gets its headers promptly.
const FIRST_CHUNK_WAIT_MS = 10;

type Read = ReadableStreamReadResult<Uint8Array>;

/** Resolves null after FIRST_CHUNK_WAIT_MS, without keeping the process alive. */
export function firstChunkWait(): Promise<null> {
  return new Promise((resolve) => setTimeout(resolve, FIRST_CHUNK_WAIT_MS, null).unref());
}

async function pump(body: ReadableStream<Uint8Array>, res: ServerResponse, status: number, headers: string[]): Promise<number> {
  const reader = body.getReader();
  let pending: Promise<Read> | undefined = reader.read();
  const early = await Promise.race([
    pending.then(
      (r) => ({ r }),
      (e: unknown) => ({ e }),
    ),
    firstChunkWait(),
  ]);
  if (early && 'e' in early) throw new StreamStartError('response stream failed before its first chunk', { cause: early.e });
  res.writeHead(status, headers);
  if (!early) res.flushHeaders();
  let bytes = 0;
  let closed = false;
  const onClose = (): void => {
    closed = true;
    if (!res.writableFinished) reader.cancel().catch(() => {});
  };
  res.once('close', onClose);
  try {
    for (;;) {
      const { done, value } = early && pending ? early.r : await (pending ?? reader.read());
      pending = undefined;
      if (done || closed) break;
      const chunk = typeof value === 'string' ? Buffer.from(value) : value;
      bytes += chunk.byteLength;
      if (!res.write(chunk)) {
        await new Promise<void>((resolve) => {
          const go = (): void => {
            res.off('drain', go);
            res.off('close', go);
            resolve();
          };
          res.on('drain', go);
          res.on('close', go);
        });
      }
    }
    if (!closed) res.end();
  } catch (err) {
    // Mid-stream failure: the status is already out, so cut the connection and let the client see it.
    res.destroy(err instanceof Error ? err : new Error(String(err)));
    throw err;
  } finally {
    res.off('close', onClose);
  }
  return bytes;
}
