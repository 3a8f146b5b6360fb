// The one argument parser of every `tsgi` command (core/src/node/args.ts).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { StartupError, UsageError, commonOptions, didYouMean, failureLines, helpText, parseCommand, pickCommand, type CommandSpec } from '@tsgi/core/node';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-args-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const handler = join(dir, 'handler.ts');
writeFileSync(handler, 'export default { fetch: () => new Response("x") };\n');

const spec = {
  command: 'tsgi demo run',
  summary: 'run a demo',
  args: [{ name: '<handler>', file: 'handler' }],
  options: {
    host: commonOptions.host,
    port: commonOptions.port,
    workers: commonOptions.workers,
    location: commonOptions.location,
    'max-body': commonOptions['max-body'],
    'graceful-timeout': commonOptions['graceful-timeout'],
    'clear-env': commonOptions['clear-env'],
    env: commonOptions.env,
    include: { type: 'file', multiple: true, what: 'include file', value: 'FILE', help: 'a config file (repeatable)' },
    'log-level': { type: 'string', value: 'LEVEL', default: 'warn', choices: ['debug', 'info', 'warn', 'error'], help: 'error log level' },
    out: { type: 'string', short: 'o', value: 'DIR', help: 'where to write' },
  },
} as const satisfies CommandSpec;

const parse = (...argv: string[]) => parseCommand(spec, ['', ...argv].slice(1));
const fails = (argv: string[]): StartupError => {
  try {
    parseCommand(spec, argv);
  } catch (err) {
    expect(err).toBeInstanceOf(StartupError);
    return err as StartupError;
  }
  throw new Error(`${argv.join(' ')} was accepted`);
};

describe('parseCommand', () => {
  it('the defaults, in their own units (bytes, milliseconds), and the handler as an absolute path', () => {
    const r = parse(handler);
    expect(r.help).toBeUndefined();
    expect(r.args).toEqual([handler]);
    expect(r.values).toEqual({
      host: '127.0.0.1',
      port: 3000,
      workers: undefined,
      'max-body': 10 * 1024 * 1024,
      'graceful-timeout': 10_000,
      'clear-env': false,
      env: [],
      include: [],
      location: '/',
      'log-level': 'warn',
      out: undefined,
    });
  });

  it('--name value, --name=value, -x value, -xvalue, aliases, repeatable options in order, last one wins otherwise', () => {
    const r = parse(handler, '--port=8080', '-p', '8081', '--processes', '3', '--env', 'A', '--env=B', '-o/tmp/x', '--include', handler, '--include', handler);
    expect(r.values.port).toBe(8081);
    expect(r.values.workers).toBe(3);
    expect(r.values.env).toEqual(['A', 'B']);
    expect(r.values.out).toBe('/tmp/x');
    expect(r.values.include).toEqual([handler, handler]);
  });

  it('sizes take K, M and G (1024-based), durations ms, s, m and h (a bare number is seconds)', () => {
    expect(parse(handler, '--max-body', '512k').values['max-body']).toBe(512 * 1024);
    expect(parse(handler, '--max-body', '10M').values['max-body']).toBe(10 * 1024 * 1024);
    expect(parse(handler, '--max-body', '1g').values['max-body']).toBe(1024 ** 3);
    expect(parse(handler, '--max-body', '123').values['max-body']).toBe(123);
    expect(parse(handler, '--graceful-timeout', '1500ms').values['graceful-timeout']).toBe(1500);
    expect(parse(handler, '--graceful-timeout', '2.5').values['graceful-timeout']).toBe(2500);
    expect(parse(handler, '--graceful-timeout', '2m').values['graceful-timeout']).toBe(120_000);
    expect(parse(handler, '--graceful-timeout', '1h').values['graceful-timeout']).toBe(3_600_000);
    expect(parse(handler, '--graceful-timeout', '3s').values['graceful-timeout']).toBe(3000);
  });

  it('bad values: one line naming the option as typed, what it wants and what it got', () => {
    const cases: [string[], string][] = [
      [['--port', '70000'], "--port must be an integer from 0 to 65535, got '70000'"],
      [['--port', 'http'], "--port must be an integer from 0 to 65535, got 'http'"],
      [['-p', '-1'], "-p must be an integer from 0 to 65535, got '-1'"],
      [['--processes', '0'], "--processes must be an integer from 1 to 256, got '0'"],
      [['--workers', '2.5'], "--workers must be an integer from 1 to 256, got '2.5'"],
      [['--max-body', '10x'], "--max-body must be a size in bytes (K, M or G suffix allowed), got '10x'"],
      [['--max-body', '2048G'], "--max-body must be a size from 0 to 1024G, got '2048G'"],
      [['--graceful-timeout', 'soon'], "--graceful-timeout must be a duration (seconds, or with ms, s, m or h), got 'soon'"],
      [['--log-level', 'loud'], "--log-level must be one of debug, info, warn, error, got 'loud'"],
      [['--log-level', 'wrn'], "--log-level must be one of debug, info, warn, error, got 'wrn' (did you mean warn?)"],
      [['--include', join(dir, 'nope.conf')], `include file not found: ${join(dir, 'nope.conf')}`],
      [['--location', 'app'], "--location must be a URL path starting with /, got 'app'"],
    ];
    for (const [argv, msg] of cases) {
      const err = fails([handler, ...argv]);
      expect(err.message, argv.join(' ')).toBe(msg);
      expect(err).not.toBeInstanceOf(UsageError);
    }
  });

  it('a missing or a directory handler is not found', () => {
    expect(fails([join(dir, 'nope.ts')]).message).toBe(`handler not found: ${join(dir, 'nope.ts')}`);
    expect(fails([dir]).message).toBe(`handler not found: ${dir}`);
  });

  it('usage errors: unknown options (with a suggestion), missing values, flags with values, missing and extra arguments', () => {
    const cases: [string[], string][] = [
      [[handler, '--prot', '8080'], 'unknown option --prot (did you mean --port?)'],
      [[handler, '--max-bdy=1'], 'unknown option --max-bdy (did you mean --max-body?)'],
      [[handler, '--clear-env', '--evn', 'A'], 'unknown option --evn (did you mean --env?)'],
      [[handler, '--bogus'], 'unknown option --bogus'],
      [[handler, '-x'], 'unknown option -x'],
      [[handler, '--port'], '--port needs a value'],
      [[handler, '--port', '--host', 'x'], '--port needs a value'],
      [[handler, '--clear-env=yes'], '--clear-env takes no value'],
      [[], 'missing <handler>'],
      [[handler, 'extra'], "unexpected argument 'extra'"],
    ];
    for (const [argv, msg] of cases) {
      const err = fails(argv);
      expect(err, argv.join(' ')).toBeInstanceOf(UsageError);
      expect(err.message, argv.join(' ')).toBe(msg);
      expect((err as UsageError).hint).toBe('usage: tsgi demo run <handler> [options]   (tsgi demo run --help lists them)');
    }
  });

  it('-- ends the options', () => {
    const dash = join(dir, '-dash.ts');
    writeFileSync(dash, '');
    expect(parse('--port', '1', '--', dash).args).toEqual([dash]);
  });

  it('--help and -h win over anything else and give the help text', () => {
    for (const argv of [['--help'], [handler, '-h'], ['--bogus', '--help']]) expect(parseCommand(spec, argv).help).toBe(helpText(spec));
  });
});

describe('helpText', () => {
  it('a usage line, the summary, and one line per option with its value and default', () => {
    const text = helpText(spec);
    const lines = text.split('\n');
    expect(lines[0]).toBe('usage: tsgi demo run <handler> [options]');
    expect(lines[1]).toBe('  run a demo');
    expect(text).toMatch(/^ {2}--host HOST {2,}listen address \(default 127\.0\.0\.1\)$/m);
    expect(text).toMatch(/^ {2}-p, --port PORT {2,}.* \(default 3000\)$/m);
    expect(text).toMatch(/^ {2}-w, --workers N \(also --processes\) {2,}/m);
    expect(text).toMatch(/^ {2}--max-body SIZE {2,}.* \(default 10M\)$/m);
    expect(text).toMatch(/^ {2}--graceful-timeout DURATION {2,}.* \(default 10s\)$/m);
    expect(text).toMatch(/^ {2}--env NAME {2,}.*\(repeatable\)/m);
    expect(text).toMatch(/^ {2}-h, --help {2,}this text$/m);
  });
});

describe('didYouMean and pickCommand', () => {
  it('suggests the closest word within a small edit distance (a swap counts as one), or none', () => {
    expect(didYouMean('ngnix', ['serve', 'apache', 'nginx'])).toBe('nginx');
    expect(didYouMean('rn', ['build', 'conf', 'run'])).toBe('run');
    expect(didYouMean('srve', ['serve', 'apache', 'nginx'])).toBe('serve');
    expect(didYouMean('port', ['host', 'port'])).toBe('port');
    expect(didYouMean('frobnicate', ['build', 'conf', 'run'])).toBeUndefined();
    expect(didYouMean('x', ['build', 'conf', 'run'])).toBeUndefined();
  });

  it('an unknown or a missing subcommand is a usage error that lists the choices', () => {
    expect(pickCommand('run', ['build', 'conf', 'run'], 'tsgi nginx')).toBe('run');
    const unknown = (() => {
      try {
        pickCommand('rnu', ['build', 'conf', 'run'], 'tsgi nginx');
      } catch (err) {
        return err as UsageError;
      }
    })();
    expect(unknown).toBeInstanceOf(UsageError);
    expect(unknown!.message).toBe("unknown command 'rnu' (did you mean run?)");
    expect(unknown!.hint).toBe('usage: tsgi nginx build|conf|run ...   (tsgi nginx --help)');
    expect(() => pickCommand(undefined, ['build', 'conf', 'run'], 'tsgi nginx')).toThrow('missing command (build, conf or run)');
    expect(() => pickCommand('frob', ['build', 'conf', 'run'], 'tsgi nginx')).toThrow("unknown command 'frob' (build, conf or run)");
  });
});

describe('failureLines', () => {
  it('one line with the prefix, the first line of the message only; a usage error adds its hint', () => {
    expect(failureLines('tsgi serve', new StartupError('handler not found: /x\nmore'))).toEqual(['tsgi serve: handler not found: /x']);
    expect(failureLines('tsgi nginx', new UsageError('unknown option --x', 'usage: tsgi nginx run ...'))).toEqual(['tsgi nginx: unknown option --x', 'usage: tsgi nginx run ...']);
    expect(failureLines('tsgi', 'a string')).toEqual(['tsgi: a string']);
  });
});
