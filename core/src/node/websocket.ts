/**
 * WebSocket for every Node host (node:http's `upgrade` event, Apache's
 * mod_tsgi tunnel): the `ws` package does the framing (noServer,
 * permessage-deflate off); this kit holds the rules the hosts share, once:
 * the handshake checks made before any hook runs, the Peer the hooks see
 * (with the unsent-bytes limit), the hooks' dispatch, and closing every open
 * socket with 1001 when the server goes away.
 *
 * Limits: a message larger than the host's request body limit (maxPayload)
 * closes the socket with 1009; a peer whose unsent data exceeds `maxBuffered`
 * (4 MiB by default) is closed with 1008 on the next `send` instead of
 * buffering more (a client that reads slowly never makes the server hold more
 * than that plus one message).
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocket, WebSocketServer, type RawData } from 'ws';
import type { Context, Peer, WebSocketHooks } from '../contract.js';
import { runSocketHook, type ErrorLogger } from '../pipeline.js';

export const DEFAULT_WS_MAX_BUFFERED = 4 * 1024 * 1024;
/** After the server sent its close frame (1001 at shutdown), how long the client has to answer before the connection is cut. */
export const WS_CLOSE_WAIT_MS = 2_000;
export const WS_GOING_AWAY = 1001;
const POLICY = 1008;
const INTERNAL = 1011;

// RFC 6455 4.1: the key is 16 random bytes in base64.
const KEY = /^[+/0-9A-Za-z]{21}[AQgw]==$/;

/** A handshake refused before any hook runs. */
export interface HandshakeRefusal {
  status: 400 | 426;
  text: string;
  /** 426 names the version this server speaks (RFC 6455 4.4). */
  headers: Record<string, string>;
}

/**
 * The checks every host makes on a WebSocket upgrade request before its hooks
 * run: GET only (RFC 6455 4.1), no body (a handshake has none; its bytes would
 * be read as frames), a well-formed Sec-WebSocket-Key: else 400; version 13,
 * else 426. Null: acceptable.
 */
export function handshakeRefusal(method: string, key: string | undefined, version: string | undefined, hasBody: boolean): HandshakeRefusal | null {
  if (method !== 'GET' || hasBody || !KEY.test(key ?? '')) return { status: 400, text: 'Bad Request\n', headers: {} };
  if (version !== '13') return { status: 426, text: 'Upgrade Required\n', headers: { 'sec-websocket-version': '13' } };
  return null;
}

class SocketPeer implements Peer {
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

/** One accepted upgrade: what its hooks see, and what the host does when it ends. */
export interface SocketSession {
  hooks: WebSocketHooks;
  request: Request;
  ctx: Context;
  /** The socket opened (ws wrote the 101 head); `close` ends it as closeAll does (1001 by default). */
  opened?(close: (code?: number, reason?: string) => Promise<void>): void;
  /**
   * The exchange is over: 101 and the message bytes sent once an open socket
   * closed (after its close hook), or 400 when ws refused the handshake
   * (answered on the socket), or 499 when the client left before it opened.
   */
  ended(status: number, bytes: number): void;
}

export interface WebSocketKitOptions {
  /** Largest message accepted (the host's body limit; 0 = none, as in ws). */
  maxPayload: number;
  /** Unsent bytes a peer may have queued before `send` closes it with 1008 (default 4 MiB). */
  maxBuffered?: number;
  log: ErrorLogger;
}

/** The `ws` side of one host: the handshakes, the open sockets and their hooks. */
export class WebSocketKit {
  private readonly wss: WebSocketServer;
  private readonly open = new Set<WebSocket>();
  /** The end of a session whose socket is being handed to ws (once: ws's refusal, the socket's close). */
  private readonly handing = new WeakMap<Duplex, (status: number) => void>();
  private readonly maxBuffered: number;
  private readonly log: ErrorLogger;

  constructor(o: WebSocketKitOptions) {
    this.maxBuffered = o.maxBuffered ?? DEFAULT_WS_MAX_BUFFERED;
    this.log = o.log;
    this.wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, maxPayload: o.maxPayload, clientTracking: false });
    // A handshake ws itself refuses (a malformed Sec-WebSocket-Protocol): answered here, so the session ends.
    this.wss.on('wsClientError', (_err: Error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
      socket.destroy();
      this.handing.get(socket)?.(400);
    });
  }

  /** Open sockets. */
  get size(): number {
    return this.open.size;
  }

  /**
   * Completes the handshake on `socket` (ws writes the 101 head to it) and
   * runs the session's hooks on the socket it opens. `req` needs only
   * `method` and (lower-case) `headers`.
   */
  accept(req: Pick<IncomingMessage, 'method' | 'headers'>, socket: Duplex, head: Buffer, s: SocketSession): void {
    let ended = false;
    const end = (status: number, bytes: number): void => {
      if (ended) return;
      ended = true;
      socket.off('close', gone);
      s.ended(status, bytes);
    };
    // The client left while the hooks ran, or ws refused: no socket opens.
    const gone = (): void => end(499, 0);
    socket.once('close', gone);
    this.handing.set(socket, (status) => end(status, 0));
    this.wss.handleUpgrade(req as IncomingMessage, socket, head, (ws) => {
      socket.off('close', gone);
      this.handing.delete(socket);
      this.opened(ws, s, end);
    });
  }

  private opened(ws: WebSocket, s: SocketSession, end: (status: number, bytes: number) => void): void {
    const hooks = s.hooks;
    const log = this.log;
    const peer = new SocketPeer(ws, s.request, s.ctx, this.maxBuffered);
    const fail = (): void => {
      if (ws.readyState === WebSocket.OPEN) ws.close(INTERNAL, 'internal error');
    };
    this.open.add(ws);
    s.opened?.((code, reason) => closeSocket(ws, code, reason));
    ws.on('message', (data, isBinary) => {
      runSocketHook(hooks, 'message', peer, isBinary ? bytesOf(data) : data.toString(), log, fail);
    });
    // Protocol errors (a bad frame, invalid UTF-8, a message over maxPayload): ws closes the socket itself.
    ws.on('error', (err) => runSocketHook(hooks, 'error', peer, err, log, () => {}));
    ws.once('close', (code, reason) => {
      this.open.delete(ws);
      runSocketHook(hooks, 'close', peer, { code, reason: reason.toString() }, log, () => {});
      end(101, peer.sent);
    });
    runSocketHook(hooks, 'open', peer, undefined, log, fail);
  }

  /**
   * Closes every open socket with `code` (1001: the server is going away),
   * waits up to WS_CLOSE_WAIT_MS for the clients' close frames, then cuts what
   * is left. Resolves when all are closed (their close hooks have run).
   */
  closeAll(code = WS_GOING_AWAY, reason = 'server shutting down'): Promise<void> {
    return Promise.all([...this.open].map((ws) => closeSocket(ws, code, reason))).then(() => {});
  }
}

/** Sends the close frame, waits up to WS_CLOSE_WAIT_MS for the client's, then cuts the connection. */
function closeSocket(ws: WebSocket, code = WS_GOING_AWAY, reason = 'server shutting down'): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => ws.terminate(), WS_CLOSE_WAIT_MS);
    ws.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    ws.close(code, reason);
  });
}
