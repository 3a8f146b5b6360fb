import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import type { TLSSocket } from 'node:tls';
import { requestAuthority, type UrlRefusal } from '@tsgi/core';
import { LazyRequest, originUrl } from '@tsgi/core/node';

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

/**
 * Where the request goes (core's requestAuthority: the authority from an
 * absolute-form target, else from the one Host header), or why it is refused
 * with 400 before anything runs.
 */
export function requestTarget(req: IncomingMessage): { authority: string; path: string; absolute: boolean } | UrlRefusal {
  const raw = req.rawHeaders;
  let hosts: string[] | undefined;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i]!;
    if (name.length === 4 && name.toLowerCase() === 'host') (hosts ??= []).push(raw[i + 1]!);
  }
  const http10 = req.httpVersionMajor === 1 && req.httpVersionMinor === 0;
  const target = req.url ?? '/';
  const where = requestAuthority(target, hosts ?? [], http10, hosts ? '' : localAuthority(req));
  if ('status' in where) return where;
  // absolute-form (RFC 9112 3.2.2): its authority replaces the Host header too.
  return { authority: where.authority, path: where.path, absolute: target.charCodeAt(0) !== 47 && /^https?:\/\//i.test(target) };
}

/** A Request served straight from node's IncomingMessage (see LazyRequest). */
export class NodeRequest extends LazyRequest {
  readonly _req: IncomingMessage;
  readonly _res: ServerResponse;
  private _opts: RequestOptions;
  private _authority: string;
  private _path: string;
  private _absolute: boolean;

  /**
   * `authority` and `path` come from requestTarget (already checked);
   * `absolute`: the target was absolute-form, so the handler's Host header is its authority.
   */
  constructor(req: IncomingMessage, res: ServerResponse, opts: RequestOptions, authority: string, path: string, absolute = false) {
    super();
    this._req = req;
    this._res = res;
    this._opts = opts;
    this._authority = authority;
    this._path = path;
    this._absolute = absolute;
  }

  get method(): string {
    return this._req.method ?? 'GET';
  }

  protected makeUrl(): string {
    // The scheme is the connection's (or a trusted proxy's), never the request target's.
    const req = this._req;
    let scheme = this._opts.scheme ?? ((req.socket as TLSSocket).encrypted ? 'https' : 'http');
    if (this._opts.trustProxy) {
      const p = req.headers['x-forwarded-proto'];
      if (p === 'https' || p === 'http') scheme = p;
    }
    return originUrl(scheme, this._authority, this._path);
  }

  protected rawHeaders(): readonly string[] {
    const raw = this._req.rawHeaders;
    const hidden = this._opts.hidden;
    if (!hidden && !this._absolute) return raw;
    const out: string[] = [];
    let host = false;
    for (let i = 0; i < raw.length; i += 2) {
      const lower = raw[i]!.toLowerCase();
      if (hidden?.includes(lower)) continue;
      if (this._absolute && lower === 'host') {
        // At most one Host reaches here (requestTarget refuses two).
        out.push(raw[i]!, this._authority);
        host = true;
      } else out.push(raw[i]!, raw[i + 1]!);
    }
    if (this._absolute && !host) out.push('host', this._authority);
    return out;
  }

  protected watchAbort(ac: AbortController): void {
    const res = this._res;
    const gone = (): void => {
      if (!res.writableFinished) ac.abort(new DOMException('The client disconnected', 'AbortError'));
    };
    if (res.destroyed || res.closed) gone();
    else res.once('close', gone);
  }

  protected hasBody(): boolean {
    const m = this.method;
    if (m === 'GET' || m === 'HEAD') return false;
    const h = this._req.headers;
    return h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
  }

  protected openBody(): ReadableStream<Uint8Array> {
    return Readable.toWeb(this.limitedSource()) as unknown as ReadableStream<Uint8Array>;
  }

  /** The IncomingMessage, or a pass-through that errors past the limit. */
  private limitedSource(): Readable {
    const req = this._req;
    const limit = this._opts.maxBodySize;
    if (!Number.isFinite(limit)) return req;
    let seen = 0;
    const out = new Readable({ read: () => req.resume() });
    const onData = (chunk: Buffer): void => {
      seen += chunk.length;
      if (seen > limit) {
        req.off('data', onData);
        req.pause();
        this._opts.onTooLarge(this);
        out.destroy(new BodyTooLargeError(limit));
      } else if (!out.push(chunk)) req.pause();
    };
    req.on('data', onData);
    req.once('end', () => out.push(null));
    req.once('error', (err) => out.destroy(err));
    req.once('aborted', () => out.destroy(new DOMException('The client disconnected', 'AbortError')));
    return out;
  }

  /** Collects the body without Web streams (srvx/Hono do the same). */
  protected readBody(): Promise<Buffer> {
    const req = this._req;
    const limit = this._opts.maxBodySize;
    // Small bodies usually arrive with the headers: take them from the buffer, no listeners.
    if (req.complete && req.readableLength <= limit) {
      const chunks: Buffer[] = [];
      let c: Buffer | null;
      while ((c = req.read() as Buffer | null) !== null) chunks.push(c);
      return Promise.resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks));
    }
    return new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      let seen = 0;
      const onData = (c: Buffer): void => {
        seen += c.length;
        if (seen > limit) {
          cleanup();
          req.pause();
          this._opts.onTooLarge(this);
          reject(new BodyTooLargeError(limit));
          return;
        }
        chunks.push(c);
      };
      const onEnd = (): void => {
        cleanup();
        resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, seen));
      };
      const onAbort = (): void => {
        cleanup();
        reject(new DOMException('The client disconnected', 'AbortError'));
      };
      const onError = (err: Error): void => {
        cleanup();
        reject(err);
      };
      const cleanup = (): void => {
        req.off('data', onData);
        req.off('end', onEnd);
        req.off('aborted', onAbort);
        req.off('error', onError);
      };
      if (req.readableEnded) return resolve(Buffer.alloc(0));
      req.on('data', onData);
      req.on('end', onEnd);
      req.on('aborted', onAbort);
      req.on('error', onError);
    });
  }
}
