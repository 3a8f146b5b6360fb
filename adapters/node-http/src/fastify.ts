import { once } from 'node:events';
import { Readable } from 'node:stream';
import { asciiHead, clientGone, firstChunkWait, wireHead } from './send.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { internalError, statusHasNoBody, toRawResponse, type Handler, type RawResponse } from '@tsgi/core';
import { NodeHost, type NodeAdapterOptions } from './exchange.js';

export interface FastifyTsgiOptions extends NodeAdapterOptions {
  handler: Handler;
}

/** Errors the stream when it delivers another count than its declared Content-Length (Fastify then cuts the connection). */
function lengthGuard(declared: number): TransformStream<Uint8Array, Uint8Array> {
  let n = 0;
  return new TransformStream({
    transform(chunk, c) {
      n += chunk.byteLength;
      if (n > declared) c.error(new Error(`response stream delivered more than its Content-Length ${declared}; connection cut`));
      else c.enqueue(chunk);
    },
    flush(c) {
      if (n !== declared) c.error(new Error(`response stream delivered ${n} bytes, not its Content-Length ${declared}; connection cut`));
    },
  });
}

/** Puts a RawResponse on the reply (core's wire rules, as sendResponse does); returns the payload and the header names set. */
function toReply(reply: FastifyReply, raw: RawResponse, isHead: boolean): { payload: unknown; names: string[] } {
  const body = raw.body;
  const len = body === null ? 0 : typeof body === 'string' ? Buffer.byteLength(body) : body instanceof Uint8Array ? body.byteLength : undefined;
  const head = wireHead(raw, len);
  reply.code(raw.status);
  reply.raw.statusMessage = head.reason;
  const h = head.headers;
  const grouped: Record<string, string | string[]> = {};
  for (let i = 0; i < h.length; i += 2) {
    const k = h[i]!.toLowerCase();
    const prev = grouped[k];
    grouped[k] = prev === undefined ? h[i + 1]! : Array.isArray(prev) ? [...prev, h[i + 1]!] : [prev, h[i + 1]!];
  }
  reply.headers(grouped);
  const names = Object.keys(grouped);
  if (body instanceof ReadableStream) {
    if (isHead || statusHasNoBody(raw.status)) {
      void body.cancel().catch(() => {});
      return { payload: undefined, names };
    }
    const src = head.declared === undefined ? body : body.pipeThrough(lengthGuard(head.declared));
    return { payload: Readable.fromWeb(src as import('node:stream/web').ReadableStream<Uint8Array>), names };
  }
  if (statusHasNoBody(raw.status)) return { payload: undefined, names };
  if (body === null || isHead) return { payload: '', names };
  // A latin1 header byte must stay one byte: Node would merge a string body into the head as UTF-8.
  if (typeof body === 'string') return { payload: asciiHead(head) ? body : Buffer.from(body), names };
  return { payload: Buffer.from(body.buffer, body.byteOffset, body.byteLength), names };
}

/**
 * Fastify plugin: `app.register(fastifyTsgi, { handler, prefix: '/api' })`.
 * The handler runs as a Fastify route and answers through `reply.send`, so
 * Fastify's hooks (onRequest, preHandler, onSend, onResponse) all run. The
 * handler sees the full request URL, prefix included, and the prefix as
 * `ctx.basePath`; bodies are left unparsed
 * for it to read. Each request is an Exchange (exchange.ts), as on node:http.
 */
export async function fastifyTsgi(app: FastifyInstance, opts: FastifyTsgiOptions): Promise<void> {
  // ctx.basePath: the plugin's prefix (Fastify routes only what is below it).
  const host = new NodeHost(opts.handler, { basePath: app.prefix, ...opts });
  await host.ready;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req: unknown, _payload: unknown, done: (err: null, body?: unknown) => void) =>
    done(null),
  );
  const route = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const res = reply.raw;
    const x = host.open(request.raw, res);
    if (!x) return reply.hijack();
    // Watched from the start: a client can leave while the handler runs or its stream waits.
    const closed = new Promise<void>((resolve) => (clientGone(res) ? resolve() : res.once('close', () => resolve())));
    const response = await x.run();
    // The in-flight slot is freed once the handler has answered and the exchange is over.
    let bytes = 0;
    void closed.then(() => x.end(res.statusCode, bytes));
    const raw = x.wire(response);
    // Answered already (413 mid-body) or the client is gone: what the handler made is dropped.
    if (!raw) return reply.hijack();
    const isHead = request.method === 'HEAD';
    const out = toReply(reply, raw, isHead);
    let payload = out.payload;
    if (payload instanceof Readable) {
      // Same rule as the node:http path: a stream failing before its first chunk is a clean 500.
      const stream = payload;
      const settle = (ev: string): Promise<unknown> => once(stream, ev).then(() => ev, () => 'error');
      const first = await Promise.race([settle('readable'), settle('error'), firstChunkWait(), closed]);
      if (clientGone(res)) {
        stream.destroy();
        return reply.hijack();
      }
      if (stream.errored) {
        host.log(`request ${x.ctx.id}: response stream failed before its first chunk`);
        for (const name of out.names) reply.removeHeader(name);
        payload = toReply(reply, toRawResponse(internalError()), isHead).payload;
      } else if (first === null) {
        // No chunk within FIRST_CHUNK_WAIT_MS: the head leaves alone once Fastify has set it (it pipes the stream then).
        res.once('pipe', () => res.flushHeaders());
      }
    }
    if (!isHead) bytes = Number(reply.getHeader('content-length') ?? 0);
    return reply.send(payload);
  };
  const methods = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'];
  app.route({ method: methods, url: '/', handler: route, exposeHeadRoute: false });
  app.route({ method: methods, url: '/*', handler: route, exposeHeadRoute: false });
}
