// `tsgi apache build|conf|run`: compile mod_tsgi, print a config snippet, or run
// a private Apache in the foreground (as mod_wsgi-express does; the runner is core's).
import { chmodSync, existsSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  StartupError,
  bundleWorker,
  commonOptions,
  envAllowList,
  dispatch,
  loadHandler,
  parseCommand,
  runPrivateServer,
  serverOptions,
  workerAccount,
  type Account,
  type CommandSpec,
  type Values,
} from '@tsgi/core/node';
import { DEFAULT_MPM, serverConf, snippet, type DaemonOptions } from './config.js';
import { install, installedPaths, isInstalled, type Installed } from './install.js';
import { drainFlagPath } from './peers.js';
import { MsgType } from './protocol.js';

/**
 * An Apache access log line as nginx writes it: the last field, Apache's %D (microseconds), in seconds
 * ($request_time), and Apache's escapes (`\"`, `\\`, `\xhh`) as nginx's (`\x22`, `\x5C`, `\xHH`).
 */
export function secondsLast(line: string): string {
  const m = /^(.* )(\d+)$/.exec(line);
  const text = m ? `${m[1]}${(Number(m[2]) / 1e6).toFixed(3)}` : line;
  return text.replace(/\\(["\\]|x[0-9a-f]{2})/g, (_, c: string) => (c === '"' ? '\\x22' : c === '\\' ? '\\x5C' : `\\x${c.slice(1).toUpperCase()}`));
}

/** The worker script shipped with this package (dist/worker.js). */
export const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));

const HANDLER = [{ name: '<handler>', file: 'handler' }] as const;

/** What conf and run both put on the TsgiDaemon line. */
const DAEMON = {
  location: commonOptions.location,
  workers: commonOptions.workers,
  name: { type: 'string', value: 'NAME', default: 'app', pattern: /^[A-Za-z0-9_.-]+$/, wants: 'a plain word (letters, digits, _ . -)', help: 'the TsgiDaemon name' },
  user: commonOptions.user,
  group: commonOptions.group,
  'max-body': commonOptions['max-body'],
  'graceful-timeout': commonOptions['graceful-timeout'],
  // The operations options of every Node-backed host (issue 12); mod_tsgi's defaults are the same.
  'request-timeout': commonOptions['request-timeout'],
  'queue-timeout': commonOptions['queue-timeout'],
  'connect-timeout': { type: 'duration', value: 'DURATION', help: "how long a request may wait for a worker that is starting: 503 (default: mod_tsgi's)" },
  'max-requests': commonOptions['max-requests'],
  'max-inflight': commonOptions['max-inflight'],
  // Answered by each worker (per-worker figures: see README.md, "Operations").
  'max-heap': commonOptions['max-heap'],
  health: commonOptions.health,
  metrics: commonOptions.metrics,
  'metrics-public': commonOptions['metrics-public'],
  'server-timing': commonOptions['server-timing'],
  'clear-env': commonOptions['clear-env'],
  env: commonOptions.env,
} as const;

export const BUILD = { command: 'tsgi apache build', summary: 'compile mod_tsgi with apxs and print the .so path', options: {} } as const satisfies CommandSpec;

/** Where install puts the Debian tree (and conf looks for it). */
const ROOT = {
  type: 'string',
  value: 'DIR',
  default: '/',
  pattern: /^\/[^\s"\\]*$/,
  wants: 'an absolute path (no spaces, quotes or \\)',
  help: "install/conf: the tree holding Debian's Apache layout (DIR/etc/apache2, DIR/usr/lib/apache2/modules, DIR/var/lib/tsgi)",
} as const;

export const CONF = {
  command: 'tsgi apache conf',
  summary: 'print the config snippet of an installed handler (LoadModule, TsgiDaemon, <Location>: the paths tsgi apache install writes)',
  args: HANDLER,
  options: { ...DAEMON, root: ROOT },
} as const satisfies CommandSpec;

export const INSTALL = {
  command: 'tsgi apache install',
  summary: "install mod_tsgi and the handler into Debian's Apache (mods-available/tsgi.load, conf-available/tsgi-NAME.conf, /var/lib/tsgi/NAME)",
  args: HANDLER,
  options: { ...DAEMON, root: ROOT },
} as const satisfies CommandSpec;

const APACHE_LEVELS = ['emerg', 'alert', 'crit', 'error', 'warn', 'notice', 'info', 'debug', ...Array.from({ length: 8 }, (_, i) => `trace${i + 1}`)];

export const RUN = {
  command: 'tsgi apache run',
  summary: 'run a private Apache in the foreground (Ctrl-C or SIGTERM stops it gracefully, a second Ctrl-C at once; SIGHUP reloads)',
  args: HANDLER,
  options: {
    host: commonOptions.host,
    port: commonOptions.port,
    ...DAEMON,
    include: commonOptions.include,
    threads: { type: 'int', value: 'N', min: 1, max: 1024, help: 'event MPM ThreadsPerChild (default 64)' },
    'log-level': { ...commonOptions['log-level'], choices: APACHE_LEVELS },
    'server-root': commonOptions['server-root'],
    'no-access-log': commonOptions['no-access-log'],
    watch: commonOptions.watch,
    // The runner's, not TsgiDaemon's: `apachectl graceful-stop` has no drain period (README.md, "Operations").
    'drain-delay': commonOptions['drain-delay'],
  },
} as const satisfies CommandSpec;

export const commands: CommandSpec[] = [BUILD, CONF, RUN, INSTALL];

export function main(argv: string[]): Promise<number> {
  return dispatch(
    'tsgi apache',
    { build: { spec: BUILD, run: build }, conf: { spec: CONF, run: conf }, install: { spec: INSTALL, run: installCmd }, run: { spec: RUN, run } },
    argv,
  );
}

function printed(spec: CommandSpec): number {
  console.log(parseCommand(spec, ['--help']).help);
  return 0;
}

async function build(argv: string[]): Promise<number> {
  if (parseCommand(BUILD, argv).help) return printed(BUILD);
  // stdout is the path alone (scripts read it); what the build does goes to stderr.
  console.log(await modulePath(say('tsgi apache build')));
  return 0;
}

/** Progress lines on stderr, `prefix: ...`. */
const say =
  (prefix: string) =>
  (line: string): void =>
    void process.stderr.write(`${prefix}: ${line}\n`);

/**
 * Builds (or reuses) mod_tsgi.so through build.ts (in the user's cache) and returns its path;
 * `progress` hears what the build does. A build in a private temp dir (no usable cache) is
 * removed when this process exits, unless `keep` (tsgi apache build prints its path).
 */
export async function modulePath(progress?: (line: string) => void, keep = true): Promise<string> {
  const { buildModule } = await import('./build.js');
  const m = await buildModule({ progress });
  if (m.dispose) {
    if (keep) progress?.(`no usable cache directory ($XDG_CACHE_HOME/tsgi or ~/.cache/tsgi): built in ${dirname(m.so)}, not reused`);
    else process.once('exit', m.dispose);
  }
  return m.so;
}

const seconds = (ms: number | undefined): number | undefined => (ms === undefined ? undefined : ms / 1000);

/** The TsgiDaemon line's settings; `who`: the workers' user and group names, if any. */
function daemonFrom(v: Values<typeof DAEMON>, handler: string, worker: string, who: { user?: string; group?: string }): DaemonOptions {
  return {
    name: v.name,
    handler,
    worker,
    processes: v.workers ?? 1,
    node: process.execPath,
    user: who.user,
    group: who.group,
    maxRequests: v['max-requests'],
    maxInflight: v['max-inflight'],
    requestTimeout: seconds(v['request-timeout']),
    queueTimeout: seconds(v['queue-timeout']),
    connectTimeout: seconds(v['connect-timeout']),
    gracefulTimeout: seconds(v['graceful-timeout']),
    maxBody: v['max-body'],
    maxHeap: v['max-heap'] || undefined,
    health: v.health,
    metrics: v.metrics,
    metricsPublic: v['metrics-public'],
    serverTiming: v['server-timing'],
    clearEnv: v['clear-env'],
    // mod_tsgi keeps the TSGI_ names for its contract with the worker.
    env: envAllowList(v['clear-env'], v.env, 'TSGI_'),
  };
}

/** The account the installed workers run as: root picks as `run` does (never root); not root, ours. */
function installAccount(v: { user?: string; group?: string }): Account | undefined {
  return workerAccount(v.user, v.group);
}

/** The installed daemon's conf-available file: TsgiDaemon and <Location>, the paths all installed ones. */
function installedConf(v: Values<typeof DAEMON>, handler: string, p: Installed, account: Account | undefined, withModule: boolean): string {
  const daemon = daemonFrom(v, p.bundle, p.bundle, { user: account?.name, group: account && v.group ? account.group : undefined });
  return snippet({ so: withModule ? p.so : undefined, daemon, location: v.location }).replace(/^# tsgi: .*$/m, `# tsgi: ${handler} (installed by tsgi apache install)`);
}

async function conf(argv: string[]): Promise<number> {
  const { values: v, args, help } = parseCommand(CONF, argv);
  if (help) return printed(CONF);
  const handler = args[0]!;
  const account = installAccount(v);
  await loadHandler(handler);
  const p = installedPaths(v.root === '/' ? '' : v.root, v.name);
  // The snippet names installed files only (never this package's): they survive npm update.
  const text = installedConf(v, handler, p, account, true);
  if (!isInstalled(p)) console.error(`tsgi apache: ${v.name} is not installed (${p.bundle}): run tsgi apache install ${handler} --name ${v.name} first`);
  process.stdout.write(text);
  return 0;
}

async function installCmd(argv: string[]): Promise<number> {
  const { values: v, args, help } = parseCommand(INSTALL, argv);
  if (help) return printed(INSTALL);
  const handler = args[0]!;
  envAllowList(v['clear-env'], v.env, 'TSGI_');
  const account = installAccount(v);
  if (process.getuid?.() !== 0 && v.root === '/') throw new StartupError('installing into / needs root (or give --root DIR)');
  await loadHandler(handler);
  const p = await install({
    root: v.root === '/' ? '' : v.root,
    name: v.name,
    gid: account?.gid,
    bundle: (outfile) => bundleHandler(handler, outfile),
    conf: (paths) => installedConf(v, handler, paths, account, false),
  });
  const confdir = v.root === '/' ? '' : `APACHE_CONFDIR=${v.root.replace(/\/+$/, '')}/etc/apache2 `;
  console.log(
    [
      `installed ${v.name}:`,
      `  ${p.so}`,
      `  ${p.load}`,
      `  ${p.bundle}`,
      `  ${p.conf}`,
      `next: ${confdir}a2enmod tsgi && ${confdir}a2enconf tsgi-${v.name} && apachectl configtest && apachectl graceful`,
      `(a changed handler: run this command again, then apachectl graceful)`,
    ].join('\n'),
  );
  return 0;
}

// ---- run ----

/**
 * Bundles the worker runtime and the handler into one ES module, so a worker
 * running as an unprivileged user needs to read only that file.
 */
export async function bundleHandler(handler: string, outfile: string): Promise<void> {
  await bundleWorker({ handler, runtime: WORKER_SCRIPT, outfile });
}

/**
 * Whether a worker of the daemon accepts: it writes WELCOME on accept, and only
 * after `init` succeeded. The socket is in the server root's runtime dir.
 */
async function workerReady(dir: string, name: string): Promise<boolean> {
  const run = join(dir, 'run');
  const sockDir = readdirSync(run).find((f) => f.startsWith('tsgi.'));
  if (!sockDir) return false;
  return new Promise((res) => {
    const s = connect({ path: join(run, sockDir, `${name}.sock`) });
    const t = setTimeout(() => done(false), 1000);
    const done = (ok: boolean) => {
      clearTimeout(t);
      s.destroy();
      res(ok);
    };
    // The first byte pair is the frame header's version and type.
    s.once('data', (d: Buffer) => done(d.length >= 2 && d[1] === MsgType.WELCOME));
    s.once('error', () => done(false));
    s.once('end', () => done(false));
  });
}

/** mod_tsgi's line for a worker that could not start (worker_maintenance in mod_tsgi.c). */
const START_FAILED = /mod_tsgi: daemon \S+: worker #\d+ \(pid \d+\) could not start: (.*); next attempt in /;

const APACHE = existsSync('/usr/sbin/apache2') ? '/usr/sbin/apache2' : 'httpd';

async function run(argv: string[]): Promise<number> {
  const { values: v, args, help } = parseCommand(RUN, argv);
  if (help) return printed(RUN);
  const handler = args[0]!;
  envAllowList(v['clear-env'], v.env, 'TSGI_');
  let so = '';
  return runPrivateServer({
    name: 'apache',
    ...serverOptions(v),
    gracefulMs: v['graceful-timeout'],
    drainDelayMs: v['drain-delay'],
    watch: v.watch ? { handler } : undefined,
    // graceful-stop lets in-flight requests finish; TERM stops at once.
    stopSignals: ['SIGWINCH', 'SIGTERM'],
    async check() {
      // Wrong path, no fetch, syntax errors: before Apache starts.
      await loadHandler(handler);
      // A first build takes seconds: say so to someone at a terminal (piped stderr stays the start-up lines).
      so = await modulePath(process.stderr.isTTY ? say('tsgi apache run') : undefined, false);
    },
    async prepare(site) {
      site.subdir('run');
      // The DocumentRoot, for requests outside --location.
      site.subdir('htdocs', 0o755);
      // The handler and the worker runtime in one bundle: the worker user reads just that file.
      const app = join(site.dir, 'app.mjs');
      await bundleHandler(handler, app);
      chmodSync(app, 0o644);
      site.assertReadable(app);
      site.assertRunnable(process.execPath);
      // Apache opens its logs by path, and /dev/stderr cannot be opened when it is a socket (a
      // parent that spawned us with pipes); FIFOs survive graceful restarts without losing lines,
      // unlike piped loggers. The error log is held back until a worker is ready: a worker that
      // cannot start then gives its reason as the one line (decision 9).
      const errorLog = site.fifo('run/error.fifo', 'stderr', { hold: true });
      // Apache cannot print a duration in fractional seconds: its %D (µs) becomes nginx's $request_time
      // here, so every private server (and tsgi serve) prints the same line.
      const accessLog = v['no-access-log'] ? undefined : site.fifo('run/access.fifo', 'stdout', { line: secondsLast });
      const account: Account | undefined = site.account;
      const daemon = daemonFrom(v, app, app, { user: account?.name, group: account?.group });
      const mpm = { ...DEFAULT_MPM };
      if (v.threads) {
        mpm.threadsPerChild = v.threads;
        mpm.maxRequestWorkers = v.threads * mpm.serverLimit;
        mpm.minSpareThreads = Math.min(mpm.minSpareThreads, v.threads);
        mpm.maxSpareThreads = mpm.maxRequestWorkers;
      }
      const confFile = join(site.dir, 'httpd.conf');
      // Read by Apache's parent only (root, or us).
      writeFileSync(
        confFile,
        serverConf({
          root: site.dir,
          host: site.host,
          port: site.port,
          so,
          daemon,
          location: v.location,
          user: account?.name,
          group: account?.group,
          includes: v.include,
          mpm,
          logLevel: v['log-level'],
          gracefulShutdownTimeout: daemon.gracefulTimeout! + 5,
          errorLog,
          accessLog: accessLog !== undefined,
          accessLogFile: accessLog,
        }),
        { mode: 0o600 },
      );
      const n = daemon.processes!;
      return {
        command: APACHE,
        args: ['-DFOREGROUND', '-d', site.dir, '-f', confFile],
        // Ready once a worker accepts: it has run init.
        ready: () => workerReady(site.dir, daemon.name),
        startFailure: START_FAILED,
        async reload(server) {
          // The handler as it is now, built beside the live bundle and renamed over it only when it built;
          // then a graceful restart: new workers, the old ones drain.
          const next = join(site.dir, 'app.next.mjs');
          try {
            await bundleHandler(handler, next);
            chmodSync(next, 0o644);
            renameSync(next, app);
          } catch (err) {
            rmSync(next, { force: true });
            throw err;
          }
          server.kill('SIGUSR1');
          // mod_tsgi's reload gate says the outcome in the error log: `reloaded: N new workers ready` or `reload failed`.
          return 'reloading: graceful restart made; the previous workers serve until the new ones are ready';
        },
        details: [`${n} Node worker${n > 1 ? 's' : ''}`],
        // --drain-delay: Apache keeps serving; the workers see the flag (peers.ts) and answer the health path 503.
        draining: () => writeFileSync(drainFlagPath(app), '', { mode: 0o644, flag: 'wx' }),
      };
    },
  });
}
