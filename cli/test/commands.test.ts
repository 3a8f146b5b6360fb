// Every `tsgi` command's command line, through the one parser (core/src/node/args.ts):
// the same option has the same name, meaning and default everywhere; unknown options are
// errors everywhere, with a suggestion; --help per command; tsgi --version. Nothing here
// starts a server (cli/test/runner.test.ts does).
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { optionsTable } from '@tsgi/core/node';
import { runCli } from '@tsgi/conformance/testing';
import { commandSpecs } from '../src/main.js';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-cli-test-'));
chmodSync(dir, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const handler = join(dir, 'handler.ts');
writeFileSync(handler, 'export default { fetch: () => new Response("x") };\n');

const repo = fileURLToPath(new URL('../../', import.meta.url));
const version = (JSON.parse(readFileSync(join(repo, 'cli/package.json'), 'utf8')) as { version: string }).version;

interface Cmd {
  words: string[];
  /** What its messages start with. */
  prefix: string;
  options: string[];
}

const COMMANDS: Cmd[] = [
  { words: ['serve'], prefix: 'tsgi serve', options: ['host', 'port', 'workers', 'max-body', 'graceful-timeout', 'clear-env', 'env'] },
  { words: ['apache', 'run'], prefix: 'tsgi apache', options: ['host', 'port', 'workers', 'max-body', 'graceful-timeout', 'user', 'group', 'clear-env', 'env', 'location', 'include', 'server-root', 'log-level'] },
  { words: ['apache', 'conf'], prefix: 'tsgi apache', options: ['workers', 'max-body', 'graceful-timeout', 'user', 'group', 'clear-env', 'env', 'location'] },
  { words: ['apache', 'install'], prefix: 'tsgi apache', options: ['workers', 'max-body', 'graceful-timeout', 'user', 'group', 'clear-env', 'env', 'location'] },
  { words: ['nginx', 'run'], prefix: 'tsgi nginx', options: ['host', 'port', 'workers', 'max-body', 'user', 'group', 'clear-env', 'env', 'location', 'include', 'server-root', 'log-level'] },
  { words: ['nginx', 'conf'], prefix: 'tsgi nginx', options: ['workers', 'max-body', 'location'] },
  { words: ['nginx', 'build'], prefix: 'tsgi nginx', options: ['preload'] },
  { words: ['nginx', 'workers'], prefix: 'tsgi nginx', options: ['workers', 'max-body', 'user', 'group', 'clear-env', 'env'] },
];
const has = (opt: string): Cmd[] => COMMANDS.filter((c) => c.options.includes(opt));
const lines = (s: string): string[] => s.trim().split('\n');

describe('tsgi', () => {
  it('--version and -v print the package version', async () => {
    for (const flag of ['--version', '-v']) {
      const r = await runCli([flag]);
      expect(r.code).toBe(0);
      expect(r.stdout).toBe(`tsgi ${version}\n`);
    }
  });

  it('--help lists the commands on stdout; no command is a usage error', async () => {
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    for (const c of ['serve', 'apache', 'nginx', '--version']) expect(help.stdout).toContain(c);
    const none = await runCli([]);
    expect(none.code).toBe(1);
    expect(lines(none.stderr)[0]).toBe('tsgi: missing command (serve, apache, nginx or systemd)');
  });

  it('a misspelled command or subcommand: did you mean', async () => {
    const cases: [string[], string][] = [
      [['ngnix'], "tsgi: unknown command 'ngnix' (did you mean nginx?)"],
      [['srve', handler], "tsgi: unknown command 'srve' (did you mean serve?)"],
      [['nginx', 'rn', handler], "tsgi nginx: unknown command 'rn' (did you mean run?)"],
      [['apache', 'cnf', handler], "tsgi apache: unknown command 'cnf' (did you mean conf?)"],
      [['nginx', 'frobnicate'], "tsgi nginx: unknown command 'frobnicate' (build, conf, run or workers)"],
      [['apache'], 'tsgi apache: missing command (build, conf, install or run)'],
    ];
    for (const [args, first] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(lines(r.stderr), args.join(' ')).toEqual([first, expect.stringMatching(/^usage: tsgi /)]);
    }
  });

  it('tsgi apache --help and tsgi nginx --help list their subcommands', async () => {
    for (const server of ['apache', 'nginx']) {
      const r = await runCli([server, '--help']);
      expect(r.code).toBe(0);
      for (const sub of ['build', 'conf', 'run']) expect(r.stdout).toMatch(new RegExp(`^ {2}${sub} {2,}\\S`, 'm'));
    }
  });
});

describe('every command', () => {
  it('--help: its usage line and every option on stdout, exit 0', async () => {
    for (const c of COMMANDS) {
      const r = await runCli([...c.words, '--help']);
      expect(r.code, c.words.join(' ')).toBe(0);
      expect(lines(r.stdout)[0]).toBe(`usage: tsgi ${c.words.join(' ')} <handler> [options]`);
      for (const o of [...c.options, 'help']) expect(r.stdout, `${c.words.join(' ')} --${o}`).toMatch(new RegExp(`^ {2}(-\\w, )?--${o}\\b`, 'm'));
    }
  });

  it('an unknown option: one line naming it, then the usage line, exit 1', async () => {
    for (const c of COMMANDS) {
      const r = await runCli([...c.words, handler, '--bogus']);
      expect(r.code, c.words.join(' ')).toBe(1);
      expect(lines(r.stderr)).toEqual([
        `${c.prefix}: unknown option --bogus`,
        `usage: tsgi ${c.words.join(' ')} <handler> [options]   (tsgi ${c.words.join(' ')} --help lists them)`,
      ]);
    }
  });

  it('a misspelled option: did you mean', async () => {
    for (const c of has('max-body')) {
      const r = await runCli([...c.words, handler, '--max-bdy', '1']);
      expect(lines(r.stderr)[0], c.words.join(' ')).toBe(`${c.prefix}: unknown option --max-bdy (did you mean --max-body?)`);
    }
    for (const c of has('port')) {
      const r = await runCli([...c.words, handler, '--prot', '1']);
      expect(lines(r.stderr)[0], c.words.join(' ')).toBe(`${c.prefix}: unknown option --prot (did you mean --port?)`);
    }
  });

  it('a handler that does not exist: one line, exit 1', async () => {
    for (const c of COMMANDS) {
      const r = await runCli([...c.words, join(dir, 'nope.ts')]);
      expect(r.code, c.words.join(' ')).toBe(1);
      expect(lines(r.stderr)).toEqual([`${c.prefix}: handler not found: ${join(dir, 'nope.ts')}`]);
    }
  });

  it('--port and --workers: the same range and the same one-line error', async () => {
    for (const c of has('port')) {
      const r = await runCli([...c.words, handler, '--port', '70000']);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toEqual([`${c.prefix}: --port must be an integer from 0 to 65535, got '70000'`]);
    }
    for (const c of has('workers')) {
      const r = await runCli([...c.words, handler, '--workers', '0']);
      expect(r.code).toBe(1);
      expect(lines(r.stderr)).toEqual([`${c.prefix}: --workers must be an integer from 1 to 256, got '0'`]);
    }
  });

  it('--max-body takes a size, --graceful-timeout a duration: one-line errors', async () => {
    for (const c of has('max-body')) {
      const r = await runCli([...c.words, handler, '--max-body', 'lots']);
      expect(lines(r.stderr), c.words.join(' ')).toEqual([`${c.prefix}: --max-body must be a size in bytes (K, M or G suffix allowed), got 'lots'`]);
    }
    for (const c of has('graceful-timeout')) {
      const r = await runCli([...c.words, handler, '--graceful-timeout', 'soon']);
      expect(lines(r.stderr), c.words.join(' ')).toEqual([`${c.prefix}: --graceful-timeout must be a duration (seconds, or with ms, s, m or h), got 'soon'`]);
    }
  });

  it('--env without --clear-env, or a name that is no variable name: the same line everywhere', async () => {
    for (const c of has('env')) {
      const alone = await runCli([...c.words, handler, '--env', 'DATABASE_URL', ...(c.words[0] === 'nginx' ? ['--workers', '1'] : [])]);
      expect(alone.code).toBe(1);
      expect(lines(alone.stderr), c.words.join(' ')).toEqual([`${c.prefix}: --env needs --clear-env (without it the workers get the whole environment)`]);
      const bad = await runCli([...c.words, handler, '--clear-env', '--env', 'A-B', ...(c.words[0] === 'nginx' ? ['--workers', '1'] : [])]);
      expect(lines(bad.stderr), c.words.join(' ')).toEqual([`${c.prefix}: --env 'A-B' is not a variable name`]);
    }
  });
});

describe('values reach the server config', () => {
  it('apache conf: sizes and durations in the TsgiDaemon line; --processes is --workers', async () => {
    const r = await runCli(['apache', 'conf', handler, '--max-body', '1m', '--graceful-timeout', '1500ms', '--request-timeout', '2m', '--processes', '2']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/TsgiDaemon app .*processes=2 .*request-timeout=120 .*graceful-timeout=1\.5 max-body=1048576/);
    const w = await runCli(['apache', 'conf', handler, '--workers', '3']);
    expect(w.stdout).toMatch(/TsgiDaemon app .*processes=3 /);
  });

  it('the defaults are the same on every command: 10M bodies, 10 s graceful timeout', async () => {
    const a = await runCli(['apache', 'conf', handler]);
    expect(a.stdout).toMatch(/TsgiDaemon app .*graceful-timeout=10 max-body=10485760/);
    const n = await runCli(['nginx', 'conf', handler]);
    expect(n.stdout).toContain('client_max_body_size 10485760;');
    const n1 = await runCli(['nginx', 'conf', handler, '--max-body', '1m']);
    expect(n1.stdout).toContain('client_max_body_size 1048576;');
  });
});

describe('the options table', () => {
  it('each shared option has one name, meaning and default on every command that has it', async () => {
    const table = optionsTable(await commandSpecs());
    const rows = table.split('\n').slice(2);
    const names = rows.map((r) => /^\| `(?:-\w, )?(--[\w-]+)/.exec(r)?.[1]);
    expect(names.filter((n, i) => names.indexOf(n) !== i), table).toEqual([]);
    for (const o of ['host', 'port', 'workers', 'max-body', 'graceful-timeout', 'user', 'group', 'clear-env', 'env', 'location', 'include', 'server-root', 'log-level']) {
      const row = rows.find((r) => names[rows.indexOf(r)] === `--${o}`);
      expect(row, o).toBeDefined();
      for (const c of has(o)) expect(row, `${o} on ${c.words.join(' ')}`).toContain(`\`${c.words.join(' ')}\``);
    }
  });

  it('the root README carries the table as the commands define it', async () => {
    const readme = readFileSync(join(repo, 'README.md'), 'utf8');
    expect(readme).toContain(optionsTable(await commandSpecs()));
  });
});
