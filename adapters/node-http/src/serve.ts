import cluster, { type Worker } from 'node:cluster';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
import type { Handler } from '@tsgi/core';
import { loadHandler, StartupError } from '@tsgi/core/node';
import { toNodeListener, type NodeAdapterOptions, type NodeListener } from './listener.js';

export interface ServeOptions extends NodeAdapterOptions {
  port?: number;
  host?: string;
  unixSocket?: string;
  /** Worker processes (node:cluster); 0 or 1 serves in this process. */
  workers?: number;
  /** How long shutdown waits for in-flight requests and waitUntil work (ms, default 10 s). */
  gracefulTimeout?: number;
  /** Stop on SIGTERM/SIGINT (default true). */
  handleSignals?: boolean;
}

export interface TsgiServer {
  /** http://host:port/ or unix:/path */
  url: string;
  /** Stops accepting, drains in-flight requests and waitUntil work, runs close(). */
  close(): Promise<void>;
}

// A worker that exits with this code failed to start; respawning it would only loop.
const EXIT_STARTUP = 78;

async function resolveHandler(h: Handler | string): Promise<Handler> {
  return typeof h === 'string' ? loadHandler(h) : h;
}

function listen(server: Server, opts: ServeOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new StartupError(`cannot listen on ${opts.unixSocket ?? `${opts.host ?? '127.0.0.1'}:${opts.port ?? 3000}`}: ${err.code ?? err.message}`)),
    );
    const onListening = (): void => {
      const a = server.address();
      if (typeof a === 'string') return resolve(`unix:${a}`);
      const { address, port } = a as AddressInfo;
      resolve(`http://${address.includes(':') ? `[${address}]` : address}:${port}/`);
    };
    if (opts.unixSocket) {
      // A socket file left by a crashed run would make listen fail with EADDRINUSE.
      if (!cluster.isWorker && existsSync(opts.unixSocket)) unlinkSync(opts.unixSocket);
      server.listen(opts.unixSocket, onListening);
    } else server.listen(opts.port ?? 3000, opts.host ?? '127.0.0.1', onListening);
  });
}

async function shutdown(server: Server, listener: NodeListener, timeout: number): Promise<void> {
  const closed = new Promise<void>((r) => server.close(() => r()));
  server.closeIdleConnections();
  const drained = await listener.lifecycle.drain(timeout);
  if (!drained) console.error(`[tsgi] shutdown: in-flight work still running after ${timeout} ms; closing anyway`);
  server.closeAllConnections();
  await closed;
  if (listener.handler.close) {
    try {
      await listener.handler.close();
    } catch (err) {
      console.error('[tsgi] close() threw', err);
    }
  }
}

function onSignals(stop: () => Promise<void>): () => void {
  const handler = (): void => {
    void stop().then(() => process.exit(0));
  };
  process.once('SIGTERM', handler);
  process.once('SIGINT', handler);
  return () => {
    process.off('SIGTERM', handler);
    process.off('SIGINT', handler);
  };
}

async function serveHere(handler: Handler | string, opts: ServeOptions): Promise<TsgiServer> {
  const h = await resolveHandler(handler);
  const listener = toNodeListener(h, opts);
  await listener.ready; // a failing init stops start-up before we listen
  const server = createServer({ keepAliveTimeout: 5_000 }, listener);
  const url = await listen(server, opts);
  const timeout = opts.gracefulTimeout ?? 10_000;
  let stopping: Promise<void> | undefined;
  const close = (): Promise<void> => (stopping ??= shutdown(server, listener, timeout));
  const off = opts.handleSignals === false ? () => {} : onSignals(close);
  return {
    url,
    close: () => close().finally(off),
  };
}

/** Primary side of `workers: N`: fork, respawn crashed workers, stop them all on close. */
async function servePrimary(opts: ServeOptions): Promise<TsgiServer> {
  const n = opts.workers!;
  const timeout = opts.gracefulTimeout ?? 10_000;
  let stopping = false;
  let url = '';
  const recentDeaths: number[] = [];

  const fork = (): Promise<Worker> =>
    new Promise((resolve, reject) => {
      const w = cluster.fork();
      let up = false;
      w.once('listening', (a) => {
        up = true;
        url ||= a.addressType === -1 ? `unix:${opts.unixSocket}` : `http://${opts.host ?? '127.0.0.1'}:${a.port}/`;
        resolve(w);
      });
      w.once('exit', (code, signal) => {
        if (!up) {
          // The worker printed its own one-line reason (exit 78); don't repeat it.
          const e = new StartupError(`worker failed to start (exit ${code ?? signal})`);
          if (code === EXIT_STARTUP) (e as StartupError & { reported?: boolean }).reported = true;
          return reject(e);
        }
        if (stopping) return;
        console.error(`[tsgi] worker ${w.process.pid} died (${signal ?? `exit ${code}`}); respawning`);
        const now = Date.now();
        recentDeaths.push(now);
        while (recentDeaths.length && recentDeaths[0]! < now - 10_000) recentDeaths.shift();
        // Back off when workers crash in a loop, so a broken handler doesn't spin the CPU.
        const delay = recentDeaths.length > n * 3 ? 1_000 : 0;
        setTimeout(() => {
          if (!stopping) fork().catch((err) => console.error(`[tsgi] ${(err as Error).message}`));
        }, delay).unref();
      });
    });

  try {
    // One worker first: a handler that cannot start fails once, with one message.
    await fork();
    await Promise.all(Array.from({ length: n - 1 }, fork));
  } catch (err) {
    stopping = true;
    for (const w of Object.values(cluster.workers ?? {})) w?.kill('SIGKILL');
    throw err;
  }

  let closing: Promise<void> | undefined;
  const close = (): Promise<void> =>
    (closing ??= (async () => {
      stopping = true;
      const all = Object.values(cluster.workers ?? {}).filter((w): w is Worker => !!w);
      await Promise.all(
        all.map(
          (w) =>
            new Promise<void>((resolve) => {
              if (w.isDead()) return resolve();
              const t = setTimeout(() => w.kill('SIGKILL'), timeout + 2_000);
              w.once('exit', () => {
                clearTimeout(t);
                resolve();
              });
              w.process.kill('SIGTERM');
            }),
        ),
      );
    })());
  const off = opts.handleSignals === false ? () => {} : onSignals(close);
  return { url, close: () => close().finally(off) };
}

/**
 * Serves a handler (object or module path) on node:http. With `workers: N > 1`
 * the calling script runs again in N cluster workers, as cluster always does;
 * each worker's call to serve() listens on the shared port or socket.
 */
export async function serve(handler: Handler | string, opts: ServeOptions = {}): Promise<TsgiServer> {
  if ((opts.workers ?? 0) > 1 && cluster.isPrimary) {
    if (typeof handler === 'string' && !existsSync(handler)) throw new StartupError(`handler not found: ${handler}`);
    return servePrimary(opts);
  }
  if (cluster.isWorker) {
    try {
      return await serveHere(handler, opts);
    } catch (err) {
      console.error(`tsgi: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(EXIT_STARTUP);
    }
  }
  return serveHere(handler, opts);
}
