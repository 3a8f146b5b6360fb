/**
 * WebSocket on node:http: the handler's `websocket` hooks on the server's
 * `upgrade` event, with the `ws` package doing the framing (noServer,
 * permessage-deflate off). Every Node host uses it: `tsgi serve` (also with
 * --workers), toNodeListener users (`server.on('upgrade', listener.upgrade)`)
 * and nginx workers mode.
 *
 * An upgrade request is one Exchange (exchange.ts) on a ServerResponse of its
 * own: the host's checks (400), then core's runUpgrade (authenticate,
 * authorize, upgrade); a refusal is written as any response and the
 * connection closes. Accepted, the socket holds the request's in-flight slot
 * until it closes (so a graceful stop waits for it, then sends 1001), and the
 * `log` hook runs then, with status 101.
 *
 * Limits: a message larger than the host's request body limit (maxBodySize)
 * closes the socket with 1009; a peer whose unsent data exceeds
 * `maxWebSocketBuffered` (4 MiB by default) is closed with 1008 on the next
 * `send` instead of buffering more (a client that reads slowly never makes the
 * server hold more than that plus one message).
 */
import { ServerResponse, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import { isWebSocketUpgrade, runSocketHook, runUpgrade, type Context, type Peer, type WebSocketHooks } from '@tsgi/core';
import { sendOwn, type Exchange, type NodeHost } from './exchange.js';

export interface WebSocketOptions {
  /** Unsent bytes a peer may have queued before `send` closes it with 1008 (default 4 MiB). */
  maxWebSocketBuffered?: number;
}

export const DEFAULT_WS_MAX_BUFFERED = 4 * 1024 * 1024;
/** After the server sent its close frame (1001 at shutdown), how long the client has to answer before the connection is cut. */
export const WS_CLOSE_WAIT_MS = 2_000;
const GOING_AWAY = 1001;
const POLICY = 1008;
const INTERNAL = 1011;

// RFC 6455 4.1: the key is 16 random bytes in base64.
const KEY = /^[+/0-9A-Za-z]{21}[AQgw]==$/;

class NodePeer implements Peer {
  /** Message payload bytes sent (what `log` reports as bytes). */
  sent = 0;

  constructor(
    private readonly ws: WebSocket,
    readonly request: Request,
    readonly ctx: Context,
    private readonly maxBuffered: number,
  ) {}

  get id(): string {
    return this.ctx.id;
  }

  get bufferedAmount(): number {
    return this.ws.bufferedAmount;
  }

  send(data: string | Uint8Array | ArrayBuffer): boolean {
    const ws = this.ws;
    if (ws.readyState !== WebSocket.OPEN) return false;
    if (ws.bufferedAmount > this.maxBuffered) {
      // The client does not read what it is sent: stop here rather than buffer without bound.
      ws.close(POLICY, 'send buffer full');
      return false;
    }
    const binary = typeof data !== 'string';
    this.sent += binary ? data.byteLength : Buffer.byteLength(data);
    ws.send(data, { binary });
    return true;
  }

  close(code?: number, reason?: string): void {
    this.ws.close(code, reason);
  }
}

function bytesOf(data: RawData): Uint8Array {
  const b = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
  return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
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

/** The WebSocket side of one NodeHost: the `ws` server, the open sockets. */
export class WebSocketHost {
  private readonly wss: WebSocketServer;
  private readonly open = new Set<WebSocket>();
  /** The end of the exchange of a socket being handed to ws (once: whichever of ws's refusal, the socket's close or the socket's end comes first). */
  private readonly handing = new WeakMap<Duplex, (status: number, bytes: number) => void>();
  private readonly maxBuffered: number;

  constructor(
    private readonly host: NodeHost,
    options: WebSocketOptions = {},
  ) {
    this.maxBuffered = options.maxWebSocketBuffered ?? DEFAULT_WS_MAX_BUFFERED;
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: host.maxBody, clientTracking: false });
    // A handshake ws itself refuses (a malformed Sec-WebSocket-Protocol): answered here, so the exchange ends.
    this.wss.on('wsClientError', (_err: Error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
      this.handing.get(socket)?.(400, 0);
    });
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
    if (req.method !== 'GET' || !KEY.test(req.headers['sec-websocket-key'] ?? '')) {
      return sendOwn(res, 400, 'Bad Request\n', true);
    }
    if (req.headers['sec-websocket-version'] !== '13') {
      // RFC 6455 4.4: name the version this server speaks.
      res.setHeader('sec-websocket-version', '13');
      return sendOwn(res, 426, 'Upgrade Required\n', true);
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
      let ended = false;
      const end = (status: number, bytes: number): void => {
        if (ended) return;
        ended = true;
        socket.off('close', gone);
        x.end(status, bytes);
      };
      // The client left while the hooks ran (node:http's sockets are half-open: a FIN leaves it
      // writable), or ws refused: no socket opens and the slot is freed.
      const gone = (): void => end(499, 0);
      socket.once('close', gone);
      this.handing.set(socket, end);
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        socket.off('close', gone);
        this.opened(ws, hooks, x, end);
      });
    });
  }

  private opened(ws: WebSocket, hooks: WebSocketHooks, x: Exchange, end: (status: number, bytes: number) => void): void {
    const log = this.host.log;
    const peer = new NodePeer(ws, x.request as unknown as Request, x.ctx, this.maxBuffered);
    const fail = (): void => {
      if (ws.readyState === WebSocket.OPEN) ws.close(INTERNAL, 'internal error');
    };
    this.open.add(ws);
    ws.on('message', (data, isBinary) => {
      runSocketHook(hooks, 'message', peer, isBinary ? bytesOf(data) : data.toString(), log, fail);
    });
    // Protocol errors (a bad frame, invalid UTF-8, a message over maxPayload): ws closes the socket itself.
    ws.on('error', (err) => runSocketHook(hooks, 'error', peer, err, log, () => {}));
    ws.once('close', (code, reason) => {
      this.open.delete(ws);
      runSocketHook(hooks, 'close', peer, { code, reason: reason.toString() }, log, () => {});
      // The response object never finished (the socket left it): it ends here, so `log` runs now and
      // peer.request.signal aborts (what the handler tied to the socket's life is released).
      x.res.destroy();
      x.res.emit('close');
      end(101, peer.sent);
    });
    runSocketHook(hooks, 'open', peer, undefined, log, fail);
  }

  /**
   * Closes every open socket with `code` (1001: the server is going away),
   * waits up to WS_CLOSE_WAIT_MS for the clients' close frames, then cuts what
   * is left. Resolves when all are closed.
   */
  closeAll(code = GOING_AWAY, reason = 'server shutting down'): Promise<void> {
    const all = [...this.open];
    if (!all.length) return Promise.resolve();
    const done = all.map((ws) => new Promise<void>((r) => (ws.readyState === WebSocket.CLOSED ? r() : ws.once('close', () => r()))));
    for (const ws of all) ws.close(code, reason);
    const timer = setTimeout(() => {
      for (const ws of all) ws.terminate();
    }, WS_CLOSE_WAIT_MS);
    return Promise.all(done).then(() => clearTimeout(timer));
  }
}
