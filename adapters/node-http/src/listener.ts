import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Handler } from '@tsgi/core';
import type { Lifecycle } from '@tsgi/core/node';
import { NodeHost, type NodeAdapterOptions } from './exchange.js';
import { WebSocketHost, type WebSocketOptions } from './websocket.js';

export { DEFAULT_MAX_BODY, type NodeAdapterOptions } from './exchange.js';

export type NodeListener = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Settles when init has run; rejects with its StartupError. */
  readonly ready: Promise<void>;
  /** In-flight requests and waitUntil work (what a shutdown drains). */
  readonly lifecycle: Lifecycle;
  readonly handler: Handler;
  /** Set while the server drains: every response then carries `Connection: close`. */
  draining: boolean;
  /**
   * node:http's `upgrade` event (`server.on('upgrade', listener.upgrade)`): a
   * WebSocket upgrade runs the handler's hooks (websocket.ts); any other
   * upgrade request, or any to a handler without `websocket`, is served by fetch.
   */
  readonly upgrade: (req: IncomingMessage, socket: Duplex, head: Buffer) => void;
  /** Closes the open WebSockets with 1001 (a shutdown after its graceful timeout); resolves when they are gone. */
  readonly closeSockets: () => Promise<void>;
};

/**
 * The handler as a node:http request listener (each request an Exchange,
 * exchange.ts). init runs once; requests that arrive earlier wait for it.
 */
export function toNodeListener(handler: Handler, options: NodeAdapterOptions & WebSocketOptions = {}): NodeListener {
  const host = new NodeHost(handler, options);
  const sockets = new WebSocketHost(host, options);
  const listener = ((req: IncomingMessage, res: ServerResponse): void => host.serve(req, res)) as NodeListener;
  return Object.defineProperties(listener, {
    ready: { value: host.ready },
    lifecycle: { value: host.lifecycle },
    handler: { value: handler },
    upgrade: { value: (req: IncomingMessage, socket: Duplex, head: Buffer) => sockets.upgrade(req, socket, head) },
    closeSockets: { value: () => sockets.closeAll() },
    draining: {
      get: () => host.draining,
      set: (v: boolean) => {
        host.draining = v;
      },
    },
  });
}
