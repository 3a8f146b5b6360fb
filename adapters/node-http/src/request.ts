import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { requestAuthority, type UrlRefusal } from '@tsgi/core';
import { LazyRequest, hostAuthority, originUrl, type ClientAddress } from '@tsgi/core/node';

/** Thrown by body reads past the limit; the adapter answers 413 when it still can. */
export class BodyTooLargeError extends Error {
  override name = 'BodyTooLargeError';
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

export interface RequestOptions {
  maxBodySize: number;
  /** Scheme when not trusting X-Forwarded-Proto; undefined: the connection's (TLS or not). */
  scheme: 'http' | 'https' | undefined;
  trustProxy: boolean;
  /** Lower-case header names left out of request.headers. */
  hidden?: readonly string[];
  /** Called when a body read crosses maxBodySize. */
  onTooLarge(req: NodeRequest): void;
}

/** The server's own host:port, for an HTTP/1.0 request without Host. */
function localAuthority(req: IncomingMessage): string {
  const { localAddress, localPort } = req.socket;
  if (!localAddress) return 'localhost'; // a Unix socket
  return `${localAddress.includes(':') ? `[${localAddress}]` : localAddress}:${localPort}`;
}

/** What the host needs from the request head: where it goes and how its body is framed. */
export interface RequestTarget {
  authority: string;
  path: string;
  /** The Content-Length the client sent (its first line, as node keeps it); undefined without one. */
  length: string | undefined;
  /** The client sent Transfer-Encoding (a chunked body). */
  coded: boolean;
}

/**
 * Where the request goes (core's requestAuthority: the authority from an
 * absolute-form target, else from the one Host header), or why it is refused
 * with 400 before anything runs; `decided`: the authority an embedder behind a
 * trusted proxy has already checked. One pass over rawHeaders: node builds
 * req.headers on first use, a cost on every request that never needs it.
 */
export function requestTarget(req: IncomingMessage, decided?: string): RequestTarget | UrlRefusal {
  const raw = req.rawHeaders;
  let host: string | undefined;
  let hosts: string[] | undefined; // a second Host line and on
  let length: string | undefined;
  let coded = false;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    const n = name.length;
    if (n === 4) {
      if (name === 'Host' || name === 'host' || name.toLowerCase() === 'host') {
        if (host === undefined) host = raw[i + 1]!;
        else (hosts ??= [host]).push(raw[i + 1]!);
      }
    } else if (n === 14) {
      if (length === undefined && lowerIs(name, 'content-length')) length = raw[i + 1]!;
    } else if (n === 17 && lowerIs(name, 'transfer-encoding')) coded = true;
  }
  const target = req.url ?? '/';
  if (decided !== undefined) return { authority: decided, path: target, length, coded };
  // The usual request: origin-form with one Host (its check remembered).
  if (host !== undefined && hosts === undefined && target.charCodeAt(0) === 47) {
    const authority = hostAuthority(host);
    return typeof authority === 'string' ? { authority, path: target, length, coded } : authority;
  }
  const http10 = req.httpVersionMajor === 1 && req.httpVersionMinor === 0;
  const where = requestAuthority(target, hosts ?? (host === undefined ? NO_HOST : [host]), http10, host === undefined ? localAuthority(req) : '');
  if ('status' in where) return where;
  return { authority: where.authority, path: where.path, length, coded };
}

const NO_HOST: readonly string[] = [];

/** `name` lower-cased is `lower` (a name of its length); no new string when it is spelled so. */
const lowerIs = (name: string, lower: string): boolean => name === lower || name.toLowerCase() === lower;

/** An absolute-form target (RFC 9112 3.2.2): its authority is the request's, and the handler's Host header too. */
const isAbsoluteForm = (target: string | undefined): boolean => target !== undefined && target.charCodeAt(0) !== 47 && /^https?:\/\//i.test(target);

/** What a NodeRequest is served from: the exchange's node objects, the host's options, the checked target. */
export interface NodeSource {
  req: IncomingMessage;
  res: ServerResponse;
  opts: RequestOptions;
  target: RequestTarget;
}

/** A Request served straight from node's IncomingMessage (see LazyRequest; no constructor of its own, as it says). */
export class NodeRequest extends LazyRequest<NodeSource> implements ClientAddress {
  /** ctx.ip: X-Real-IP behind a trusted proxy, else the socket's peer. */
  clientIp(): string {
    const { req, opts } = this._src;
    if (opts.trustProxy) {
      const real = req.headers['x-real-ip'];
      if (typeof real === 'string' && real) return real;
    }
    return req.socket.remoteAddress ?? '';
  }

  get method(): string {
    return this._src.req.method ?? 'GET';
  }

  protected makeUrl(): string {
    // The scheme is the connection's (or a trusted proxy's), never the request target's.
    const req = this._src.req;
    let scheme = this._src.opts.scheme ?? ((req.socket as TLSSocket).encrypted ? 'https' : 'http');
    if (this._src.opts.trustProxy) {
      const p = req.headers['x-forwarded-proto'];
      if (p === 'https' || p === 'http') scheme = p;
    }
    return originUrl(scheme, this._src.target.authority, this._src.target.path);
  }

  protected rawHeaders(): readonly string[] {
    const raw = this._src.req.rawHeaders;
    const hidden = this._src.opts.hidden;
    const absolute = isAbsoluteForm(this._src.req.url);
    if (!hidden && !absolute) return raw;
    const out: string[] = [];
    let host = false;
    for (let i = 0; i < raw.length; i += 2) {
      const lower = raw[i]!.toLowerCase();
      if (hidden?.includes(lower)) continue;
      if (absolute && lower === 'host') {
        // At most one Host reaches here (requestTarget refuses two).
        out.push(raw[i]!, this._src.target.authority);
        host = true;
      } else out.push(raw[i]!, raw[i + 1]!);
    }
    if (absolute && !host) out.push('host', this._src.target.authority);
    return out;
  }

  protected watchAbort(ac: AbortController): void {
    const res = this._src.res;
    const gone = (): void => {
      if (!res.writableFinished) ac.abort(new DOMException('The client disconnected', 'AbortError'));
    };
    if (res.destroyed || res.closed) gone();
    else res.once('close', gone);
  }

  protected hasBody(): boolean {
    const m = this.method;
    if (m === 'GET' || m === 'HEAD') return false;
    const t = this._src.target;
    return t.coded || (t.length !== undefined && t.length !== '0');
  }

  protected openBody(): ReadableStream<Uint8Array> {
    return Readable.toWeb(this.limitedSource()) as unknown as ReadableStream<Uint8Array>;
  }

  /** The IncomingMessage, or a pass-through that errors past the limit. */
  private limitedSource(): Readable {
    const req = this._src.req;
    const limit = this._src.opts.maxBodySize;
    if (!Number.isFinite(limit)) return req;
    let seen = 0;
    const out = new Readable({ read: () => req.resume() });
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) {
        req.off('data', onData);
        req.pause();
        this._src.opts.onTooLarge(this);
        out.destroy(new BodyTooLargeError(limit));
      } else if (!out.push(chunk)) req.pause();
    };
    req.on('data', onData);
    req.once('end', () => out.push(null));
    req.once('error', (err) => out.destroy(err));
    req.once('aborted', () => out.destroy(new DOMException('The client disconnected', 'AbortError')));
    return out;
  }

  protected readBody(): Promise<Buffer> {
    return this.readBodyAs(same);
  }

  /** Collects the body without Web streams (srvx/Hono do the same), converted as it completes. */
  protected override readBodyAs<T>(convert: (body: Buffer) => T): Promise<T> {
    const req = this._src.req;
    const limit = this._src.opts.maxBodySize;
    // Small bodies usually arrive with the headers: take them from the buffer, no listeners.
    if (req.complete && req.readableLength <= limit) {
      const chunks: Buffer[] = [];
      let c: Buffer | null;
      while ((c = req.read() as Buffer | null) !== null) chunks.push(c);
      try {
        return Promise.resolve(convert(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    if (req.readableEnded) {
      try {
        return Promise.resolve(convert(Buffer.alloc(0)));
      } catch (err) {
        return Promise.reject(err);
      }
    }
    return new Promise((resolve, reject) => {
      let first: Buffer | undefined;
      let chunks: Buffer[] | undefined;
      let seen = 0;
      const onData = (c: Buffer): void => {
        seen += c.length;
        if (seen > limit) {
          cleanup();
          req.pause();
          this._src.opts.onTooLarge(this);
          reject(new BodyTooLargeError(limit));
        } else if (first === undefined) first = c;
        else (chunks ??= [first]).push(c);
      };
      // Once the body has ended its listeners go with the request (removing three costs ~600 instructions);
      // a later 'error' only meets a settled promise.
      const onEnd = (): void => {
        try {
          resolve(convert(chunks ? Buffer.concat(chunks, seen) : (first ?? Buffer.alloc(0))));
        } catch (err) {
          reject(err);
        }
      };
      // A client that leaves destroys the request with an error (after setting `aborted`).
      const onError = (err: Error): void => {
        cleanup();
        reject(req.aborted ? new DOMException('The client disconnected', 'AbortError') : err);
      };
      const cleanup = (): void => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('error', onError);
      };
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('error', onError);
    });
  }
}

const same = (b: Buffer): Buffer => b;
