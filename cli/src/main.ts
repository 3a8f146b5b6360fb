// The `tsgi` command: dispatches to each adapter's own CLI module.
const USAGE = `usage:
  tsgi serve <handler> [--port 3000] [--host 127.0.0.1] [--unix PATH] [--workers N] [--max-body BYTES] [--clear-env [--env NAME]...]
  tsgi apache build|conf|run ...   (tsgi apache --help)
  tsgi nginx build|conf|run ...    (tsgi nginx --help)`;

type Cli = { main(argv: string[]): Promise<number | void> };

const commands: Record<string, () => Promise<Cli>> = {
  serve: () => import('@tsgi/node-http/cli'),
  apache: () => import('@tsgi/apache/cli'),
  nginx: () => import('@tsgi/nginx/cli'),
};

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  const load = cmd ? commands[cmd] : undefined;
  if (!load) {
    console.error(cmd && cmd !== '--help' && cmd !== '-h' ? `tsgi: unknown command '${cmd}'\n${USAGE}` : USAGE);
    process.exitCode = cmd === '--help' || cmd === '-h' ? 0 : 2;
    return;
  }
  try {
    const code = await (await load()).main(rest);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    // One clear line, no stack: StartupError and friends carry the whole story.
    console.error(`tsgi ${cmd}: ${err instanceof Error ? err.message : String(err)}`);
    process.exitCode = 1;
  }
}
