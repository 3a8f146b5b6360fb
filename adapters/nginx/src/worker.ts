/**
 * One Node worker of workers mode: the node-http adapter on the Unix socket
 * the supervisor passes as fd 3. The supervisor keeps its own copy of that
 * listening socket, so connections that arrive while a crashed worker is
 * being replaced wait in the backlog instead of failing.
 *
 * Bundled (with the handler, @tsgi/node-http and @tsgi/core) into the run's
 * temp dir by `tsgi nginx run --workers N`, and started as the unprivileged user.
 */
import { createServer } from 'node:http';
import { assertHandler, type Handler } from '@tsgi/core';
import { toNodeListener } from '@tsgi/node-http';

/** Exit code of a worker that cannot start (bad handler, failing init): not respawned. */
export const EXIT_STARTUP = 78;

export async function runWorker(mod: unknown, where: string): Promise<void> {
  let handler: Handler;
  try {
    handler = assertHandler(mod, where);
  } catch (err) {
    console.error(`tsgi: ${(err as Error).message}`);
    process.exit(EXIT_STARTUP);
  }
  const maxBodySize = Number(process.env.TSGI_MAX_BODY) || undefined;
  const listener = toNodeListener(handler, { server: 'nginx', trustProxy: true, phases: true, maxBodySize });
  try {
    await listener.ready;
  } catch (err) {
    console.error(`tsgi: ${(err as Error).message}`);
    process.exit(EXIT_STARTUP);
  }
  // Longer than nginx's upstream keepalive_timeout (60 s): nginx closes idle connections first.
  const server = createServer({ keepAliveTimeout: 75_000, requestTimeout: 0 }, listener);
  server.listen({ fd: 3 }, () => process.send?.({ tsgi: 'ready' }));

  let stopping = false;
  const stop = async (): Promise<void> => {
    if (stopping) return;
    stopping = true;
    const closed = new Promise<void>((r) => server.close(() => r()));
    server.closeIdleConnections();
    const drained = await listener.lifecycle.drain(Number(process.env.TSGI_GRACEFUL_MS) || 10_000);
    if (!drained) console.error('[tsgi] worker shutdown: in-flight work still running; closing anyway');
    server.closeAllConnections();
    await closed;
    if (handler.close) {
      try {
        await handler.close();
      } catch (err) {
        console.error('[tsgi] close() threw', err);
      }
    }
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop());
  // Ctrl-C reaches the whole process group; the supervisor decides when workers stop.
  process.on('SIGINT', () => {});
  process.on('disconnect', () => void stop());
}
