/**
 * The one argument parser of every `tsgi` command (serve, apache build|conf|run,
 * nginx build|conf|run). A command is a spec: its positional arguments and its
 * options, typed (int, size, duration, file, ...) with ranges and defaults. The
 * options several commands share are defined once here (`commonOptions`), so
 * they have one name, meaning and default everywhere; `optionsTable` renders
 * them all for the root README, where a test keeps the table current.
 */
import { existsSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { StartupError } from './load.js';
import { startupReason } from './policy.js';

/** A mistake in how the command was typed: one line, then `hint` (the usage line). */
export class UsageError extends StartupError {
  override name = 'UsageError';
  constructor(
    message: string,
    readonly hint: string,
  ) {
    super(message);
  }
}

export type OptionType = 'boolean' | 'string' | 'int' | 'size' | 'duration' | 'file';

export interface OptionSpec {
  readonly type: OptionType;
  /** One letter: `-p`. */
  readonly short?: string;
  /** Other accepted spellings, without the dashes. */
  readonly aliases?: readonly string[];
  /** May be given more than once: the values in order (absent: []). */
  readonly multiple?: boolean;
  /** When absent, in the type's own unit (bytes, milliseconds). */
  readonly default?: string | number | boolean;
  /** int, size (bytes), duration (ms): the accepted range. */
  readonly min?: number;
  readonly max?: number;
  /** string: the accepted words. */
  readonly choices?: readonly string[];
  /** string: the form a value must have, and what to call that form in the error (`a path starting with /`). */
  readonly pattern?: RegExp;
  readonly wants?: string;
  /** file: what it is, in "<what> not found: <path>". */
  readonly what?: string;
  /** The value's name in the help: N, HOST, SIZE. */
  readonly value?: string;
  /** One line for the help and the README table. */
  readonly help: string;
}

export type Options = Readonly<Record<string, OptionSpec>>;

export interface ArgSpec {
  /** As shown: `<handler>`. */
  readonly name: string;
  /** The argument names a file that must exist (what to call it when it does not). */
  readonly file?: string;
}

export interface CommandSpec<O extends Options = Options> {
  /** The words that start it: `tsgi nginx run`. */
  readonly command: string;
  readonly summary: string;
  readonly args?: readonly ArgSpec[];
  readonly options: O;
}

type Num = 'int' | 'size' | 'duration';
type ValueOf<S extends OptionSpec> = S extends { multiple: true }
  ? S['type'] extends Num
    ? number[]
    : string[]
  : S['type'] extends 'boolean'
    ? boolean
    : S['type'] extends Num
      ? S extends { default: number }
        ? number
        : number | undefined
      : S extends { default: string }
        ? string
        : string | undefined;

export type Values<O extends Options> = { -readonly [K in keyof O]: ValueOf<O[K]> };

export interface Parsed<O extends Options> {
  values: Values<O>;
  /** The positional arguments (files resolved to absolute paths). */
  args: string[];
  /** Set when --help or -h was given: the text to print (and nothing else is done). */
  help?: string;
}

/** The 10 MiB request body limit of every command (node-http's own default is the same). */
export const DEFAULT_MAX_BODY = 10 * 1024 * 1024;
export const DEFAULT_PORT = 3000;
export const DEFAULT_GRACEFUL_MS = 10_000;
/** mod_wsgi-express's starting values: 60 s for a request, 45 s in the queue. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 60_000;
export const DEFAULT_QUEUE_TIMEOUT_MS = 45_000;
/** Who the workers of a private server run as when it is started as root, the first that exists. */
export const DEFAULT_WORKER_USERS = ['www-data', 'nginx', 'nobody'] as const;

/** The options several commands share: one definition each. */
export const commonOptions = {
  host: { type: 'string', value: 'HOST', default: '127.0.0.1', help: 'listen address' },
  port: { type: 'int', short: 'p', value: 'PORT', min: 0, max: 65535, default: DEFAULT_PORT, help: 'listen port; 0: any free one (the ready line says which)' },
  workers: {
    type: 'int',
    short: 'w',
    // TsgiDaemon's (and mod_wsgi's) word for it.
    aliases: ['processes'],
    value: 'N',
    min: 1,
    max: 256,
    help: 'Node worker processes; absent: serve runs the handler in its own process, apache starts 1, nginx runs it embedded in njs',
  },
  'max-body': { type: 'size', value: 'SIZE', default: DEFAULT_MAX_BODY, max: 2 ** 40, help: 'largest request body; 413 above it' },
  'graceful-timeout': {
    type: 'duration',
    value: 'DURATION',
    default: DEFAULT_GRACEFUL_MS,
    max: 86_400_000,
    help: 'how long a stop or a reload lets in-flight requests and waitUntil work finish',
  },
  user: { type: 'string', value: 'USER', help: `the workers' user (looked up through NSS); started as root, the first of ${DEFAULT_WORKER_USERS.join(', ')} that exists` },
  group: { type: 'string', value: 'GROUP', help: "the workers' group; default: the user's primary group" },
  'clear-env': { type: 'boolean', help: 'the workers get a clean environment: HOME, USER, LOGNAME, PATH and the --env names only' },
  env: { type: 'string', multiple: true, value: 'NAME', help: 'with --clear-env: a variable the workers keep' },
  location: { type: 'string', value: 'PATH', default: '/', pattern: /^\/\S*$/, wants: 'a URL path starting with /', help: 'the URL path the handler is mounted at (ctx.basePath); outside it the server answers 404' },
  include: { type: 'file', multiple: true, what: 'include file', value: 'FILE', help: 'a config file of yours, included in the generated config' },
  'server-root': { type: 'string', value: 'DIR', help: "where the private server's temp dir is made; default $TMPDIR, else /tmp (the worker user must reach it)" },
  'log-level': { type: 'string', value: 'LEVEL', default: 'warn', help: "the server's error log level" },
  preload: { type: 'string', multiple: true, value: 'NAME=FILE.json', help: 'read-only data the handler reads as the global NAME' },
  // Operations (issue 12): one name, meaning and default on every Node-backed host; ops/options.ts reads them.
  'request-timeout': {
    type: 'duration',
    value: 'DURATION',
    default: DEFAULT_REQUEST_TIMEOUT_MS,
    max: 86_400_000,
    help: 'the longest a request may go without progress (no response head, no body byte either way): request.signal aborts (TimeoutError), the client gets 504 or, once the head has left, the connection is cut; 0: no limit',
  },
  'max-inflight': { type: 'int', value: 'N', default: 0, max: 1_000_000, help: 'requests one worker process runs at once; more wait up to --queue-timeout, then 503 + Retry-After from the observed service time; 0: no limit' },
  'queue-timeout': { type: 'duration', value: 'DURATION', default: DEFAULT_QUEUE_TIMEOUT_MS, max: 86_400_000, help: 'how long a request may wait for a free slot (a worker, or --max-inflight) before 503 + Retry-After' },
  'max-requests': { type: 'int', value: 'N', default: 0, max: 2 ** 31 - 1, help: 'recycle a worker after about N requests (up to 10% jitter); 0: never' },
  'max-heap': { type: 'size', value: 'SIZE', default: 0, max: 2 ** 40, help: 'recycle a worker whose V8 heap used exceeds SIZE after a response (512M); 0: never' },
  health: { type: 'string', value: 'PATH', pattern: /^\/\S*$/, wants: 'a URL path starting with /', help: 'answer PATH 200 while a worker is ready, 503 before the first init and while draining' },
  metrics: { type: 'string', value: 'PATH', pattern: /^\/\S*$/, wants: 'a URL path starting with /', help: 'Prometheus metrics at PATH (loopback clients only unless --metrics-public); off by default' },
  'metrics-public': { type: 'boolean', help: 'serve --metrics to every client, not only loopback ones' },
  'server-timing': { type: 'boolean', help: 'add a Server-Timing header (queue, auth, fetch) to every response' },
  'drain-delay': {
    type: 'duration',
    value: 'DURATION',
    default: 0,
    max: 3_600_000,
    help: 'on SIGTERM/SIGINT keep serving this long while --health answers 503 draining (a load balancer takes the instance out), then stop gracefully; a second Ctrl-C ends it; 0: stop at once',
  },
  // ---- the development loop (issue 11)
  watch: { type: 'boolean', help: 'reload gracefully (as SIGHUP does) when the handler or a file it imports changes' },
  'no-access-log': { type: 'boolean', help: 'no access log line per request on stdout' },
} as const satisfies Options;

const HELP: OptionSpec = { type: 'boolean', short: 'h', help: 'this text' };

/** The usage line of a command: `usage: tsgi nginx run <handler> [options]`. */
export function usageLine(spec: CommandSpec): string {
  return `usage: ${[spec.command, ...(spec.args ?? []).map((a) => a.name)].join(' ')} [options]`;
}

const hintOf = (spec: CommandSpec): string => `${usageLine(spec)}   (${spec.command} --help lists them)`;

/** Damerau-Levenshtein distance (a swap of neighbours counts as one edit). */
function distance(a: string, b: string): number {
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i]![j] = Math.min(d[i]![j]!, d[i - 2]![j - 2]! + 1);
    }
  }
  return d[a.length]![b.length]!;
}

/** The candidate `word` was most likely meant to be, if one is close enough (one edit for short words, two otherwise). */
export function didYouMean(word: string, candidates: readonly string[]): string | undefined {
  const limit = word.length <= 3 ? 1 : 2;
  let best: string | undefined;
  let bestD = limit + 1;
  for (const c of candidates) {
    const dd = distance(word, c);
    if (dd < bestD) [best, bestD] = [c, dd];
  }
  return best;
}

const orList = (words: readonly string[]): string => (words.length < 2 ? words.join('') : `${words.slice(0, -1).join(', ')} or ${words[words.length - 1]}`);

/** The subcommand `word` names among `choices` (of `where`: `tsgi nginx`), or a usage error with a suggestion. */
export function pickCommand(word: string | undefined, choices: readonly string[], where: string): string {
  const hint = `usage: ${where} ${choices.join('|')} ...   (${where} --help)`;
  if (word === undefined || word === '') throw new UsageError(`missing command (${orList(choices)})`, hint);
  if (choices.includes(word)) return word;
  const near = didYouMean(word, choices);
  throw new UsageError(`unknown command '${word}' (${near ? `did you mean ${near}?` : orList(choices)})`, hint);
}

const SIZE = /^(\d+)([kmg])?$/i;
const DURATION = /^(\d+(?:\.\d+)?)(ms|s|m|h)?$/;
const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Bytes as the help shows them: 10M, 512K, 1000. */
function showSize(n: number): string {
  for (const [u, k] of [['G', 30], ['M', 20], ['K', 10]] as const) if (n >= 2 ** k && n % 2 ** k === 0) return `${n / 2 ** k}${u}`;
  return String(n);
}

const showDuration = (ms: number): string => (ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`);

function showDefault(o: OptionSpec): string | undefined {
  if (o.default === undefined || o.type === 'boolean') return undefined;
  if (o.type === 'size') return showSize(o.default as number);
  if (o.type === 'duration') return showDuration(o.default as number);
  return String(o.default);
}

/** A file that must exist: its absolute path, or "<what> not found: <path>". */
export function existingFile(path: string, what: string): string {
  const p = resolve(path);
  if (!existsSync(p) || !statSync(p).isFile()) throw new StartupError(`${what} not found: ${p}`);
  return p;
}

function convert(o: OptionSpec, shown: string, v: string): string | number {
  const min = o.min ?? 0;
  switch (o.type) {
    case 'int': {
      const n = /^\d+$/.test(v) ? Number(v) : NaN;
      const range = o.max === undefined ? `>= ${min}` : `from ${min} to ${o.max}`;
      if (!(n >= min && n <= (o.max ?? Number.MAX_SAFE_INTEGER))) throw new StartupError(`${shown} must be an integer ${range}, got '${v}'`);
      return n;
    }
    case 'size': {
      const m = SIZE.exec(v);
      if (!m) throw new StartupError(`${shown} must be a size in bytes (K, M or G suffix allowed), got '${v}'`);
      const n = Number(m[1]) * 2 ** ({ k: 10, m: 20, g: 30 }[m[2]?.toLowerCase() ?? ''] ?? 0);
      if (n < min || n > (o.max ?? Number.MAX_SAFE_INTEGER)) throw new StartupError(`${shown} must be a size from ${showSize(min)} to ${showSize(o.max ?? Number.MAX_SAFE_INTEGER)}, got '${v}'`);
      return n;
    }
    case 'duration': {
      const m = DURATION.exec(v);
      if (!m) throw new StartupError(`${shown} must be a duration (seconds, or with ms, s, m or h), got '${v}'`);
      const n = Math.round(Number(m[1]) * UNIT_MS[m[2] ?? 's']!);
      if (n < min || n > (o.max ?? Number.MAX_SAFE_INTEGER)) throw new StartupError(`${shown} must be a duration from ${showDuration(min)} to ${showDuration(o.max!)}, got '${v}'`);
      return n;
    }
    case 'file':
      return existingFile(v, o.what ?? 'file');
    default:
      if (o.choices && !o.choices.includes(v)) {
        const near = didYouMean(v, o.choices);
        throw new StartupError(`${shown} must be one of ${o.choices.join(', ')}, got '${v}'${near ? ` (did you mean ${near}?)` : ''}`);
      }
      if (o.pattern && !o.pattern.test(v)) throw new StartupError(`${shown} must be ${o.wants ?? `like ${o.pattern}`}, got '${v}'`);
      return v;
  }
}

/** A value-taking option's next word is missing when there is none or it is another option. */
const isOptionWord = (t: string | undefined): boolean => t === undefined || (t.startsWith('-') && t.length > 1 && !/^-\d/.test(t));

/**
 * Parses `argv` (the words after the command's own) by `spec`. Throws
 * UsageError for an unknown option (with "did you mean"), a missing value or a
 * wrong number of arguments; StartupError for a bad value or a missing file.
 */
export function parseCommand<O extends Options>(spec: CommandSpec<O>, argv: readonly string[]): Parsed<O> {
  const all: Options = { ...spec.options, help: HELP };
  const end = argv.indexOf('--');
  const flags = end < 0 ? argv : argv.slice(0, end);
  if (flags.includes('--help') || flags.includes('-h')) return { values: {} as Values<O>, args: [], help: helpText(spec) };

  const byLong = new Map<string, string>();
  const byShort = new Map<string, string>();
  for (const [name, o] of Object.entries(all)) {
    byLong.set(name, name);
    for (const a of o.aliases ?? []) byLong.set(a, name);
    if (o.short) byShort.set(o.short, name);
  }
  const hint = hintOf(spec);
  const raw = new Map<string, { shown: string; v: string }[]>();
  const positionals: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const t = argv[i]!;
    if (i === end) {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    let key: string | undefined;
    let shown: string;
    let inline: string | undefined;
    if (t.startsWith('--')) {
      const eq = t.indexOf('=');
      shown = eq > 0 ? t.slice(0, eq) : t;
      inline = eq > 0 ? t.slice(eq + 1) : undefined;
      key = byLong.get(shown.slice(2));
      if (!key) {
        const near = didYouMean(shown.slice(2), [...byLong.keys()]);
        throw new UsageError(`unknown option ${shown}${near ? ` (did you mean --${near}?)` : ''}`, hint);
      }
    } else if (isOptionWord(t)) {
      shown = t.slice(0, 2);
      key = byShort.get(t[1]!);
      if (!key) throw new UsageError(`unknown option ${shown}`, hint);
      if (t.length > 2) inline = t.slice(t[2] === '=' ? 3 : 2);
    } else {
      positionals.push(t);
      continue;
    }
    const o = all[key]!;
    let v: string;
    if (o.type === 'boolean') {
      if (inline !== undefined) throw new UsageError(`${shown} takes no value`, hint);
      v = 'true';
    } else if (inline !== undefined) v = inline;
    else {
      if (isOptionWord(argv[i + 1])) throw new UsageError(`${shown} needs a value`, hint);
      v = argv[++i]!;
    }
    raw.set(key, [...(raw.get(key) ?? []), { shown, v }]);
  }

  const values: Record<string, unknown> = {};
  for (const [name, o] of Object.entries(spec.options)) {
    const given = raw.get(name) ?? [];
    if (o.type === 'boolean') values[name] = given.length > 0;
    else if (o.multiple) values[name] = given.map((g) => convert(o, g.shown, g.v));
    else if (given.length) values[name] = convert(o, given[given.length - 1]!.shown, given[given.length - 1]!.v);
    else values[name] = o.default;
  }
  const want = spec.args ?? [];
  if (positionals.length < want.length) throw new UsageError(`missing ${want[positionals.length]!.name}`, hint);
  if (positionals.length > want.length) throw new UsageError(`unexpected argument '${positionals[want.length]}'`, hint);
  const args = positionals.map((p, i) => (want[i]!.file ? existingFile(p, want[i]!.file!) : p));
  return { values: values as Values<O>, args };
}

/** `-p, --port PORT (also --x)`: how an option is written in the help and the table. */
function signature(name: string, o: OptionSpec): string {
  const long = `--${name}${o.value ? ` ${o.value}` : ''}`;
  const also = o.aliases?.length ? ` (also ${o.aliases.map((a) => `--${a}`).join(', ')})` : '';
  return `${o.short ? `-${o.short}, ` : ''}${long}${also}`;
}

function describe(o: OptionSpec): string {
  const def = showDefault(o);
  return `${o.help}${o.multiple ? ' (repeatable)' : ''}${def !== undefined ? ` (default ${def})` : ''}`;
}

/** How the value types are written, for the help and the README. */
export const VALUE_FORMS: Partial<Record<OptionType, string>> = {
  size: 'SIZE: bytes, or with a K, M or G suffix (1024-based): 512K, 10M',
  duration: 'DURATION: seconds (fractions allowed), or with ms, s, m or h: 1.5, 500ms, 2m',
};

/** The text of `--help`: the usage line, the summary, one line per option, how sizes and durations are written. */
export function helpText(spec: CommandSpec): string {
  const opts = Object.values(spec.options);
  const rows = Object.entries({ ...spec.options, help: HELP }).map(([name, o]) => [signature(name, o), describe(o)] as const);
  const width = Math.max(...rows.map(([s]) => s.length)) + 2;
  const forms = Object.entries(VALUE_FORMS)
    .filter(([type]) => opts.some((o) => o.type === type))
    .map(([, form]) => form!);
  return [usageLine(spec), `  ${spec.summary}`, '', 'options:', ...rows.map(([s, d]) => `  ${s.padEnd(width)}${d}`), ...(forms.length ? ['', ...forms] : [])].join('\n');
}

/** The help of a command with subcommands (`tsgi nginx --help`). */
export function groupHelp(where: string, subs: readonly { name: string; spec: CommandSpec }[]): string {
  const width = Math.max(...subs.map((s) => s.name.length)) + 2;
  return [`usage: ${where} <command> ...`, ...subs.map((s) => `  ${s.name.padEnd(width)}${s.spec.summary}`), '', `${where} <command> --help lists its options.`].join('\n');
}

/**
 * A command with subcommands (`tsgi nginx build|conf|run`): `--help` lists them,
 * a misspelled one is a usage error with a suggestion; otherwise the one named
 * runs with the rest of `argv`.
 */
export async function dispatch(
  where: string,
  subs: Readonly<Record<string, { spec: CommandSpec; run(argv: string[]): number | Promise<number> }>>,
  argv: readonly string[],
): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub === '--help' || sub === '-h') {
    console.log(groupHelp(where, Object.entries(subs).map(([name, s]) => ({ name, spec: s.spec }))));
    return 0;
  }
  return subs[pickCommand(sub, Object.keys(subs), where)]!.run(rest);
}

/**
 * Every option of `specs` as one markdown table: option, default, meaning, the
 * commands that take it. An option shared with one definition is one row; two
 * definitions under one name would show as two rows.
 */
export function optionsTable(specs: readonly CommandSpec[]): string {
  const rows = new Map<string, { sig: string; def: string; help: string; commands: string[] }>();
  for (const spec of specs) {
    for (const [name, o] of Object.entries(spec.options)) {
      const sig = signature(name, o);
      const def = showDefault(o) ?? '';
      const help = `${o.help}${o.multiple ? ' (repeatable)' : ''}`;
      const key = JSON.stringify([sig, def, help]);
      const row = rows.get(key) ?? { sig, def, help, commands: [] };
      row.commands.push(spec.command.replace(/^tsgi /, ''));
      rows.set(key, row);
    }
  }
  const cell = (s: string): string => s.replace(/\|/g, '\\|');
  const sorted = [...rows.values()].sort((a, b) => a.sig.replace(/^-\w, /, '').localeCompare(b.sig.replace(/^-\w, /, '')));
  return [
    '| option | default | meaning | commands |',
    '|---|---|---|---|',
    ...sorted.map((r) => `| \`${cell(r.sig)}\` | ${r.def ? `\`${cell(r.def)}\`` : ''} | ${cell(r.help)} | ${r.commands.map((c) => `\`${c}\``).join(', ')} |`),
  ].join('\n');
}

/** What a failed command prints: `<prefix>: <the first line of the error>`, and a usage error's hint. */
export function failureLines(prefix: string, err: unknown): string[] {
  const lines = [`${prefix}: ${startupReason(err)}`];
  if (err instanceof UsageError) lines.push(err.hint);
  return lines;
}

/** `--env NAME` checks for `--clear-env`: the names, or a one-line error. `reserved`: a prefix the server keeps for itself. */
export function envAllowList(clearEnv: boolean, names: readonly string[], reserved?: string): string[] {
  if (names.length && !clearEnv) throw new StartupError('--env needs --clear-env (without it the workers get the whole environment)');
  for (const n of names) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(n)) throw new StartupError(`--env '${n}' is not a variable name`);
    if (reserved && n.startsWith(reserved)) throw new StartupError(`--env '${n}': ${reserved} names are tsgi's own`);
  }
  return [...names];
}
