/**
 * WebSocket on node:http: the handler's `websocket` hooks on the server's
 * `upgrade` event, with core's WebSocketKit (`@tsgi/core/node`: ws framing,
 * the Peer, its 4 MiB unsent limit, 1001 at shutdown). Every Node host on
 * node:http uses it: `tsgi serve` (also with --workers), toNodeListener users
 * (`server.on('upgrade', listener.upgrade)`) and nginx workers mode.
 *
 * An upgrade request is one Exchange (exchange.ts) on a ServerResponse of its
 * own: the host's checks (400), then core's runUpgrade (authenticate,
 * authorize, upgrade); a refusal is written as any response and the
 * connection closes. Accepted, the socket holds the request's in-flight slot
 * until it closes (so a graceful stop waits for it, then sends 1001), and the
 * `log` hook runs then, with status 101.
 */
import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { isWebSocketUpgrade, runUpgrade, type WebSocketHooks } from '@tsgi/core';
import { DEFAULT_WS_MAX_BUFFERED, WS_CLOSE_WAIT_MS, WS_GOING_AWAY, WebSocketKit, handshakeRefusal } from '@tsgi/core/node';
import { sendOwn, type NodeHost } from './exchange.js';

export { DEFAULT_WS_MAX_BUFFERED, WS_CLOSE_WAIT_MS };

export interface WebSocketOptions {
  /** Unsent bytes a peer may have queued before `send` closes it with 1008 (default 4 MiB). */
  maxWebSocketBuffered?: number;
}

/** A response for the request on `socket`, which node:http has handed over (no parser any more). */
function responseOn(req: IncomingMessage, socket: Duplex): ServerResponse {
  const res = new ServerResponse(req);
  res.shouldKeepAlive = false;
  res.assignSocket(socket as Socket);
  // The server's own end-of-response handling is not attached to a handed-over socket.
  res.once('finish', () => socket.end());
  return res;
}

/** Answers an upgrade request on its handed-over socket with the host's own plain response, and closes. */
export function refuseOnSocket(req: IncomingMessage, socket: Duplex, status: number, text: string): void {
  socket.on('error', () => {});
  sendOwn(responseOn(req, socket), status, text, true);
}

/** The WebSocket side of one NodeHost: core's kit on node:http's upgrade event. */
export class WebSocketHost {
  private readonly kit: WebSocketKit;

  constructor(
    private readonly host: NodeHost,
    options: WebSocketOptions = {},
  ) {
    this.kit = new WebSocketKit({ maxPayload: host.maxBody, maxBuffered: options.maxWebSocketBuffered, log: host.log });
  }

  /** node:http's `upgrade` event. */
  upgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const host = this.host;
    socket.on('error', () => {}); // a client reset before ws took over: the exchange ends on 'close'
    const res = responseOn(req, socket);
    const hooks = host.handler.websocket;
    // Not a WebSocket handler or not a WebSocket upgrade: an ordinary request for fetch (the Upgrade header is ignored).
    if (!hooks || !isWebSocketUpgrade(req.headers.upgrade)) return host.serve(req, res);
    if (host.draining) return sendOwn(res, 503, 'Service Unavailable\n', true);
    const h = req.headers;
    const hasBody = h['transfer-encoding'] !== undefined || (h['content-length'] !== undefined && h['content-length'] !== '0');
    const no = handshakeRefusal(req.method ?? '', h['sec-websocket-key'], h['sec-websocket-version'], hasBody);
    if (no) {
      for (const [k, v] of Object.entries(no.headers)) res.setHeader(k, v);
      return sendOwn(res, no.status, no.text, true);
    }
    void host.ready.then(
      () => this.accept(req, res, socket, head, hooks),
      () => sendOwn(res, 503, 'Service Unavailable\n', true),
    );
  }

  private accept(req: IncomingMessage, res: ServerResponse, socket: Duplex, head: Buffer, hooks: WebSocketHooks): void {
    const host = this.host;
    const x = host.open(req, res);
    if (!x) return;
    void runUpgrade(host.handler, x.request as unknown as Request, x.ctx, host.log).then((refused) => {
      if (refused) return x.send(refused);
      res.detachSocket(socket as Socket);
      this.kit.accept(req, socket, head, {
        hooks,
        request: x.request as unknown as Request,
        ctx: x.ctx,
        ended: (status, bytes) => {
          if (status === 101) {
            // The response object never finished (the socket left it): it ends here, so `log` runs now and
            // peer.request.signal aborts (what the handler tied to the socket's life is released).
            x.res.destroy();
            x.res.emit('close');
          }
          x.end(status, bytes);
        },
      });
    });
  }

  /**
   * Closes every open socket with `code` (1001: the server is going away),
   * waits up to WS_CLOSE_WAIT_MS for the clients' close frames, then cuts what
   * is left. Resolves when all are closed.
   */
  closeAll(code = WS_GOING_AWAY, reason = 'server shutting down'): Promise<void> {
    return this.kit.closeAll(code, reason);
  }
}
