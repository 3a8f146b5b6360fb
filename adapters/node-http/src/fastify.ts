import { once } from 'node:events';
import { Readable } from 'node:stream';
import { HOP, firstChunkWait } from './send.js';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { internalError, statusHasNoBody, toRawResponse, type Handler, type RawResponse } from '@tsgi/core';
import { toNodeListener, type NodeAdapterOptions } from './listener.js';

export interface FastifyTsgiOptions extends NodeAdapterOptions {
  handler: Handler;
}

function toReply(reply: FastifyReply, raw: RawResponse, isHead: boolean): unknown {
  reply.code(raw.status);
  const h = raw.headers;
  const grouped: Record<string, string | string[]> = {};
  for (let i = 0; i < h.length; i += 2) {
    const k = h[i]!.toLowerCase();
    if (HOP.has(k)) continue;
    const prev = grouped[k];
    grouped[k] = prev === undefined ? h[i + 1]! : Array.isArray(prev) ? [...prev, h[i + 1]!] : [prev, h[i + 1]!];
  }
  reply.headers(grouped);
  const body = raw.body;
  if (body instanceof ReadableStream) {
    if (isHead || statusHasNoBody(raw.status)) {
      void body.cancel().catch(() => {});
      return '';
    }
    return Readable.fromWeb(body as import('node:stream/web').ReadableStream<Uint8Array>);
  }
  if (statusHasNoBody(raw.status)) return undefined;
  if (body === null) return '';
  return typeof body === 'string' ? body : Buffer.from(body.buffer, body.byteOffset, body.byteLength);
}

/**
 * Fastify plugin: `app.register(fastifyTsgi, { handler, prefix: '/api' })`.
 * The handler runs as a Fastify route and answers through `reply.send`, so
 * Fastify's hooks (onRequest, preHandler, onSend, onResponse) all run. The
 * handler sees the full request URL, prefix included; bodies are left unparsed
 * for it to read.
 */
export async function fastifyTsgi(app: FastifyInstance, opts: FastifyTsgiOptions): Promise<void> {
  const listener = toNodeListener(opts.handler, opts);
  await listener.ready;
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_req: unknown, _payload: unknown, done: (err: null, body?: unknown) => void) =>
    done(null),
  );
  const route = async (request: FastifyRequest, reply: FastifyReply): Promise<unknown> => {
    const d = listener.dispatch(request.raw, reply.raw);
    if (!d) return reply.hijack();
    const response = await d.response;
    if (reply.raw.headersSent) {
      reply.hijack(); // answered already (413 mid-body)
      listener.done(reply.raw, d.request, d.ctx, reply.raw.statusCode, 0, d.start);
      return undefined;
    }
    let raw: RawResponse;
    try {
      raw = toRawResponse(response);
    } catch (err) {
      listener.log(`request ${d.ctx.id}: invalid response`, err);
      raw = toRawResponse(internalError());
    }
    let payload = toReply(reply, raw, request.method === 'HEAD');
    if (payload instanceof Readable) {
      // Same rule as the node:http path: a stream failing before its first chunk is a clean 500.
      const stream = payload;
      const settle = (ev: string): Promise<unknown> => once(stream, ev).catch(() => undefined);
      await Promise.race([settle('readable'), settle('error'), firstChunkWait()]);
      if (stream.errored) {
        listener.log(`request ${d.ctx.id}: response stream failed before its first chunk`);
        reply.removeHeader('content-length');
        payload = toReply(reply, toRawResponse(internalError()), request.method === 'HEAD');
      }
    }
    reply.raw.once('close', () => {
      const len = Number(reply.getHeader('content-length') ?? 0);
      listener.done(reply.raw, d.request, d.ctx, reply.raw.statusCode, request.method === 'HEAD' ? 0 : len, d.start);
    });
    return reply.send(payload);
  };
  const methods = ['DELETE', 'GET', 'HEAD', 'PATCH', 'POST', 'PUT', 'OPTIONS'];
  app.route({ method: methods, url: '/', handler: route, exposeHeadRoute: false });
  app.route({ method: methods, url: '/*', handler: route, exposeHeadRoute: false });
}
