/**
 * The web Request of a request read by connection.ts: a LazyRequest over the
 * exchange (exchange.ts), whose head is parsed and whose body has arrived
 * whole before the handler runs (connection.ts hands a larger one to node:http).
 */
import { LazyRequest, originUrl } from '@tsgi/core/node';
import type { NginxExchange } from './exchange.js';

/** No constructor of its own (see LazyRequest): the exchange is its source. */
export class NginxRequest extends LazyRequest<NginxExchange> {
  get method(): string {
    return this._src.method;
  }

  protected makeUrl(): string {
    const x = this._src;
    return originUrl(x.scheme, x.authority, x.path);
  }

  protected rawHeaders(): readonly string[] {
    return this._src.headers;
  }

  protected hasBody(): boolean {
    return this._src.body !== undefined;
  }

  protected readBody(): Promise<Buffer> {
    return Promise.resolve(this._src.body!);
  }

  protected override readBodyAs<T>(convert: (body: Buffer) => T): Promise<T> {
    try {
      return Promise.resolve(convert(this._src.body!));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  protected openBody(): ReadableStream<Uint8Array> {
    const body = this._src.body!;
    // Not a byte stream: its enqueue would transfer (detach) the socket's buffer, which other data may share.
    return new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(new Uint8Array(body.buffer, body.byteOffset, body.byteLength));
        c.close();
      },
    });
  }

  protected watchAbort(ac: AbortController): void {
    this._src.conn.onGone(this._src, () => ac.abort(new DOMException('The client disconnected', 'AbortError')));
  }
}
