// `tsgi serve`: the handler on node:http, in this process or in --workers N.
import { commonOptions, envAllowList, parseCommand, startupReason, watchHandler, type CommandSpec } from '@tsgi/core/node';
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
    location: commonOptions.location,
    'no-access-log': commonOptions['no-access-log'],
    watch: commonOptions.watch,
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
      basePath: v.location,
      // One line per request on stdout, as nginx run and apache run relay theirs.
      accessLog: v['no-access-log'] ? undefined : (line) => void process.stdout.write(`${line}\n`),
      gracefulTimeout: v['graceful-timeout'],
      clearEnv: v['clear-env'],
      keepEnv,
    });
    const workers = (v.workers ?? 1) > 1 ? `, ${v.workers} workers` : '';
    const at = server.url.startsWith('http') ? server.url.replace(/\/$/, '') + v.location : server.url;
    if (isServeWorker) return;
    console.error(`tsgi serve: ready on ${at} (node pid ${process.pid}${workers})`);
    if (v.watch) {
      const say = (line: string): void => console.error(`tsgi serve: ${line}`);
      try {
        // The SIGHUP path: serve() prints "reloaded" or the build's one line.
        const w = await watchHandler({ handler: args[0]!, say, reload: () => server.reload() });
        process.once('exit', () => w.close());
      } catch (err) {
        say(`not watching: ${startupReason(err)}`);
      }
    }
  } catch (err) {
    // A worker already printed its one line.
    if ((err as { reported?: boolean }).reported) return 1;
    throw err;
  }
}
