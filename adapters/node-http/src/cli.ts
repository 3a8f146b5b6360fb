// `tsgi serve`: the handler on node:http, in this process or in --workers N.
import { commonOptions, envAllowList, parseCommand, type CommandSpec } from '@tsgi/core/node';
import { isServeWorker, serve } from './serve.js';

export const SERVE = {
  command: 'tsgi serve',
  summary: 'serve the handler on node:http (Ctrl-C or SIGTERM stops gracefully; SIGHUP reloads)',
  args: [{ name: '<handler>', file: 'handler' }],
  options: {
    host: commonOptions.host,
    port: commonOptions.port,
    unix: { type: 'string', value: 'PATH', help: 'listen on a Unix socket instead of HOST:PORT' },
    workers: commonOptions.workers,
    'max-body': commonOptions['max-body'],
    'graceful-timeout': commonOptions['graceful-timeout'],
    'clear-env': commonOptions['clear-env'],
    env: commonOptions.env,
  },
} as const satisfies CommandSpec;

export const commands: CommandSpec[] = [SERVE];

/** `tsgi serve`; start-up errors throw (the tsgi command prints one line and exits 1). */
export async function main(argv: string[]): Promise<number | void> {
  const { values: v, args, help } = parseCommand(SERVE, argv);
  if (help) {
    console.log(help);
    return 0;
  }
  const keepEnv = envAllowList(v['clear-env'], v.env);
  try {
    const server = await serve(args[0]!, {
      port: v.port,
      host: v.host,
      unixSocket: v.unix,
      workers: v.workers,
      maxBodySize: v['max-body'],
      gracefulTimeout: v['graceful-timeout'],
      clearEnv: v['clear-env'],
      keepEnv,
    });
    const workers = (v.workers ?? 1) > 1 ? `, ${v.workers} workers` : '';
    if (!isServeWorker) console.error(`tsgi serve: ready on ${server.url} (node pid ${process.pid}${workers})`);
  } catch (err) {
    // A worker already printed its one line.
    if ((err as { reported?: boolean }).reported) return 1;
    throw err;
  }
}
