import { parseArgs } from 'node:util';
import { StartupError } from '@tsgi/core/node';
import { isServeWorker, serve } from './serve.js';

const USAGE =
  'usage: tsgi serve <handler.ts|.js|.mjs> [--port 3000] [--host 127.0.0.1] [--unix PATH] [--workers N] [--max-body BYTES] [--clear-env [--env NAME]...]';

function int(name: string, v: string | undefined, min: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new StartupError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return n;
}

/** `tsgi serve`: one clear line on any start-up error, non-zero exit. */
export async function main(argv: string[]): Promise<number | void> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        port: { type: 'string', short: 'p' },
        host: { type: 'string' },
        unix: { type: 'string' },
        workers: { type: 'string', short: 'w' },
        'max-body': { type: 'string' },
        'clear-env': { type: 'boolean' },
        env: { type: 'string', multiple: true },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new StartupError(`${(err as Error).message}\n${USAGE}`);
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length !== 1) throw new StartupError(USAGE);
  if (values.env && !values['clear-env']) throw new StartupError('--env needs --clear-env (without it, the whole environment is kept)');
  try {
    const server = await serve(positionals[0]!, {
      port: int('port', values.port, 0) ?? 3000,
      host: values.host ?? '127.0.0.1',
      unixSocket: values.unix,
      workers: int('workers', values.workers, 1),
      maxBodySize: int('max-body', values['max-body'], 0),
      clearEnv: values['clear-env'],
      keepEnv: values.env,
    });
    if (!isServeWorker) console.log(`tsgi: listening on ${server.url}`);
  } catch (err) {
    if ((err as { reported?: boolean }).reported) return 1;
    throw err;
  }
}
