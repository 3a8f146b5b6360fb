import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Handler } from '@tsgi/core';
import type { Lifecycle } from '@tsgi/core/node';
import { NodeHost, type NodeAdapterOptions } from './exchange.js';

export { DEFAULT_MAX_BODY, type NodeAdapterOptions } from './exchange.js';

export type NodeListener = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Settles when init has run; rejects with its StartupError. */
  readonly ready: Promise<void>;
  /** In-flight requests and waitUntil work (what a shutdown drains). */
  readonly lifecycle: Lifecycle;
  readonly handler: Handler;
  /** Set while the server drains: every response then carries `Connection: close`. */
  draining: boolean;
};

/**
 * The handler as a node:http request listener (each request an Exchange,
 * exchange.ts). init runs once; requests that arrive earlier wait for it.
 */
export function toNodeListener(handler: Handler, options: NodeAdapterOptions = {}): NodeListener {
  const host = new NodeHost(handler, options);
  const listener = ((req: IncomingMessage, res: ServerResponse): void => host.serve(req, res)) as NodeListener;
  return Object.defineProperties(listener, {
    ready: { value: host.ready },
    lifecycle: { value: host.lifecycle },
    handler: { value: handler },
    draining: {
      get: () => host.draining,
      set: (v: boolean) => {
        host.draining = v;
      },
    },
  });
}
