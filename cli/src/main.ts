// The `tsgi` command: dispatches to each adapter's own CLI module. Every
// failure prints one line (`tsgi <command>: ...`, a usage error adds the
// usage line) and exits 1.
import { readFileSync } from 'node:fs';
import { failureLines, pickCommand, type CommandSpec } from '@tsgi/core/node';

type Cli = { main(argv: string[]): Promise<number | void>; commands: CommandSpec[] };

const COMMANDS: Record<string, { load: () => Promise<Cli>; summary: string }> = {
  serve: { load: () => import('@tsgi/node-http/cli'), summary: 'serve the handler on node:http (tsgi serve <handler> [options])' },
  apache: { load: () => import('@tsgi/apache/cli'), summary: "mod_tsgi: build the module, install it into Debian's Apache, print a config snippet, or run a private Apache (build|conf|install|run)" },
  nginx: { load: () => import('@tsgi/nginx/cli'), summary: 'the handler in njs or behind nginx: build a bundle, print a snippet, run a private nginx, or the workers for a system nginx (build|conf|run|workers)' },
  systemd: { load: () => import('./systemd.js'), summary: 'print a systemd unit for tsgi serve or tsgi nginx workers (serve|nginx-workers)' },
};

const VERSION = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

const HELP = [
  'usage: tsgi <command> ...',
  ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(8)}${c.summary}`),
  '',
  'tsgi <command> --help lists its options; tsgi --version (-v) prints the version.',
].join('\n');

/** Every command's spec, as the root README's options table lists them. */
export async function commandSpecs(): Promise<CommandSpec[]> {
  const all = await Promise.all(Object.values(COMMANDS).map(async (c) => (await c.load()).commands));
  return all.flat();
}

export async function main(argv: string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  if (cmd === '--version' || cmd === '-v') return void console.log(`tsgi ${VERSION}`);
  if (cmd === '--help' || cmd === '-h') return void console.log(HELP);
  let prefix = 'tsgi';
  try {
    const name = pickCommand(cmd, Object.keys(COMMANDS), 'tsgi');
    prefix = `tsgi ${name}`;
    const code = await (await COMMANDS[name]!.load()).main(rest);
    if (typeof code === 'number') process.exitCode = code;
  } catch (err) {
    // One clear line, no stack: StartupError and friends carry the whole story.
    for (const line of failureLines(prefix, err)) console.error(line);
    process.exitCode = 1;
  }
}
