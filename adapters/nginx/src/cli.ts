/**
 * `tsgi nginx build|conf|run`. User errors throw StartupError with one line;
 * the tsgi dispatcher prints it and exits 1. `run` is core's private-server
 * runner with nginx's config, bundle and workers.
 */
import { spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, readFileSync, readdirSync, renameSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { stop as stopEsbuild } from 'esbuild';
import {
  DEFAULT_GRACEFUL_MS,
  StartupError,
  UsageError,
  commonOptions,
  DEFAULT_OPS,
  STALL_GRACE_MS,
  envAllowList,
  existingFile,
  opsOptions,
  opsSettings,
  dispatch,
  parseCommand,
  runPrivateServer,
  serverOptions,
  usageLine,
  type CommandSpec,
} from '@tsgi/core/node';
import { buildNjs, formatReport } from './build.js';
import { DEBIAN_ACCESS_LOG, SECRET_FILE, mainConf, snippet, type Mode, type Part } from './config.js';
import { findJsModule, nginxBinary } from './nginx.js';
import { Supervisor, stableSocketPath } from './supervisor.js';
import { buildWorkerBundle } from './workers-bundle.js';
import { SOCKET_DIR, WORKERS, cmdWorkers } from './workers-cmd.js';

export { WORKERS };

const HANDLER = [{ name: '<handler>', file: 'handler' }] as const;
const OUT = { type: 'string', short: 'o', value: 'DIR', help: 'the build directory (build: required; conf: default ./tsgi-nginx)' } as const;
/** nginx's proxy_read_timeout (s) for the workers' request-timeout (ms): past their 504 and their stall limit; a day for no limit. */
export function nginxReadTimeout(requestTimeoutMs: number): number {
  if (requestTimeoutMs <= 0) return 86_400;
  return Math.max(300, Math.ceil((requestTimeoutMs + STALL_GRACE_MS) / 1000) + 10);
}

/** Whether `--name` was typed (an option whose default embedded mode does not take). */
const typedOption = (argv: readonly string[], name: string): boolean => argv.some((a) => a === `--${name}` || a.startsWith(`--${name}=`));

/** The option each operations setting comes from (for the embedded-mode refusal). */
const OPS_FLAG = {
  maxInflight: 'max-inflight',
  maxRequests: 'max-requests',
  maxHeapBytes: 'max-heap',
  healthPath: 'health',
  metricsPath: 'metrics',
  // No health path to flip in njs (no state shared across its VMs), so a drain period would only delay the stop.
  drainDelayMs: 'drain-delay',
} as const;
const NGINX_LEVELS = ['debug', 'info', 'notice', 'warn', 'error', 'crit', 'alert', 'emerg'];

export const BUILD = {
  command: 'tsgi nginx build',
  summary: 'bundle the handler and the njs bridge into DIR/tsgi.js (njs 0.7.9) and print the load-time report',
  args: HANDLER,
  options: {
    out: OUT,
    preload: commonOptions.preload,
    // What njs can honour of the operations options (issue 12), baked into the bundle: the same entries,
    // so the same defaults (README.md, "Operations": what the deadline costs in njs, and --request-timeout 0).
    'request-timeout': commonOptions['request-timeout'],
    'server-timing': commonOptions['server-timing'],
  },
} as const satisfies CommandSpec;

export const CONF = {
  command: 'tsgi nginx conf',
  summary: 'print a config snippet for an existing nginx (embedded, or --workers N for Node workers of yours)',
  args: HANDLER,
  options: {
    location: commonOptions.location,
    workers: commonOptions.workers,
    'max-body': commonOptions['max-body'],
    out: OUT,
    preload: commonOptions.preload,
    'socket-dir': SOCKET_DIR,
    // workers: nginx's proxy_read_timeout outlasts the workers' deadline (give what tsgi nginx workers gets).
    'request-timeout': commonOptions['request-timeout'],
    part: {
      type: 'string',
      value: 'PART',
      default: 'both',
      choices: ['http', 'server', 'both'],
      help: 'conf: print only the http-level part, only the server-level part, or both split by marker lines',
    },
  },
} as const satisfies CommandSpec;

export const RUN = {
  command: 'tsgi nginx run',
  summary: 'start a private nginx in the foreground (Ctrl-C or SIGTERM stops it gracefully, a second Ctrl-C at once; SIGHUP reloads)',
  args: HANDLER,
  options: {
    host: commonOptions.host,
    port: commonOptions.port,
    workers: commonOptions.workers,
    'max-body': commonOptions['max-body'],
    location: commonOptions.location,
    include: commonOptions.include,
    'include-server': { type: 'file', multiple: true, what: 'include file', value: 'FILE', help: 'a config file of yours, included inside the generated server {}' },
    user: commonOptions.user,
    group: commonOptions.group,
    preload: commonOptions.preload,
    'clear-env': commonOptions['clear-env'],
    env: commonOptions.env,
    'log-level': { ...commonOptions['log-level'], choices: NGINX_LEVELS },
    'server-root': commonOptions['server-root'],
    ...opsOptions,
    'no-access-log': commonOptions['no-access-log'],
    watch: commonOptions.watch,
  },
} as const satisfies CommandSpec;

export const commands: CommandSpec[] = [BUILD, CONF, RUN, WORKERS];

/** --preload NAME=FILE.json: read-only data (js_preload_object embedded; bundled in workers mode). */
function preloads(list: readonly string[]): { name: string; file: string }[] {
  return list.map((v) => {
    const m = /^([A-Za-z_$][\w$]*)=(.+)$/.exec(v);
    if (!m) throw new StartupError(`--preload wants NAME=FILE.json, got '${v}'`);
    const file = existingFile(m[2]!, 'preload file');
    try {
      JSON.parse(readFileSync(file, 'utf8'));
    } catch (err) {
      throw new StartupError(`preload file ${file} is not JSON: ${(err as Error).message}`);
    }
    return { name: m[1]!, file };
  });
}

async function cmdBuild(argv: string[]): Promise<number> {
  const { values: v, args, help } = parseCommand(BUILD, argv);
  if (help) return printed(help);
  if (!v.out) throw new UsageError('build needs -o <dir>', `${usageLine(BUILD)} -o DIR`);
  // The report goes to stdout; what the build is doing meanwhile to stderr.
  const progress = (line: string): void => void process.stderr.write(`tsgi nginx build: ${line}\n`);
  const r = await buildNjs({ handler: args[0]!, outDir: v.out, preload: preloads(v.preload), progress, requestTimeoutMs: v['request-timeout'], serverTiming: v['server-timing'] });
  console.log(formatReport(r));
  return 0;
}

function cmdConf(argv: string[]): number {
  const { values: v, args, help } = parseCommand(CONF, argv);
  if (help) return printed(help);
  const mode: Mode = v.workers ? 'workers' : 'embedded';
  const buildDir = resolve(v.out ?? 'tsgi-nginx');
  const dir = v['socket-dir'];
  const n = v.workers ?? 0;
  // The paths `tsgi nginx workers` makes: one socket per slot and the secret include.
  const timeout = v['request-timeout'] !== DEFAULT_OPS.requestTimeoutMs ? ` --request-timeout ${v['request-timeout']}ms` : '';
  const workersCommand = `tsgi nginx workers ${args[0]!} --socket-dir ${dir} --processes ${n} --user www-data${timeout}`;
  // Embedded: the deadline is baked into the bundle, by the build.
  const buildCommand = `tsgi nginx build ${args[0]!} -o ${buildDir}${timeout}`;
  process.stdout.write(
    snippet({
      mode,
      handler: args[0]!,
      buildDir,
      location: v.location,
      maxBody: v['max-body'],
      bundle: join(buildDir, 'tsgi.js'),
      preload: preloads(v.preload),
      sockets: n ? Array.from({ length: n }, (_, i) => stableSocketPath(dir, i)) : undefined,
      readTimeout: nginxReadTimeout(v['request-timeout']),
      secretFile: n ? join(dir, SECRET_FILE) : undefined,
      // A system nginx logs at http level already: embedded mode's location logs itself, in the tsgi format, instead.
      locationAccessLog: mode === 'embedded' ? DEBIAN_ACCESS_LOG : undefined,
      part: v.part as Part,
      workersCommand,
      buildCommand,
    }),
  );
  return 0;
}

function printed(help: string): number {
  console.log(help);
  return 0;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, 'utf8');
      // pid (comm) state ppid ...: comm may hold spaces, so split after the last ')'.
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) out.push(Number(d));
    } catch {
      /* gone */
    }
  }
  return out;
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** SIGHUP the master and wait until the old worker processes have gone (they finish their requests first). */
async function reloadNginx(master: ChildProcess, timeoutMs = 60_000): Promise<void> {
  const pid = master.pid!;
  const before = childrenOf(pid);
  master.kill('SIGHUP');
  const deadline = Date.now() + timeoutMs;
  let sawNew = false;
  while (Date.now() < deadline) {
    await sleep(50);
    if (master.exitCode !== null || master.signalCode !== null) throw new StartupError('nginx exited during reload');
    const now = childrenOf(pid);
    sawNew ||= now.some((c) => !before.includes(c));
    if (sawNew && !before.some(alive)) return;
  }
  throw new StartupError('nginx reload did not complete (see the error log above)');
}

async function cmdRun(argv: string[]): Promise<number> {
  // Everything the user typed is checked before anything starts.
  const { values: v, args, help } = parseCommand(RUN, argv);
  if (help) return printed(help);
  const handler = args[0]!;
  const workers = v.workers;
  const keep = envAllowList(v['clear-env'], v.env);
  if (v['clear-env'] && !workers) throw new StartupError('--clear-env is for the Node workers of --workers N (embedded nginx passes only `env NAME;` variables)');
  const clearEnv = v['clear-env'] ? { keep } : undefined;
  const ops = opsSettings(v);
  if (!workers) {
    // Embedded nginx runs no Node process: what needs one is refused, not silently ignored. The bridge
    // has the request deadline and Server-Timing (njs's timer, Date.now()); no queue: --queue-timeout
    // (non-zero by default) is refused only when typed.
    const typed = typedOption(argv, 'queue-timeout') ? 'queue-timeout' : undefined;
    const need = typed ?? (['maxInflight', 'maxRequests', 'maxHeapBytes', 'healthPath', 'metricsPath', 'drainDelayMs'] as const).map((k) => (ops[k] !== DEFAULT_OPS[k] ? OPS_FLAG[k] : undefined)).find(Boolean);
    if (need) throw new StartupError(`--${need} needs --workers N (embedded nginx runs the handler in njs, without a Node process to time, queue or recycle)`);
  }
  const preload = preloads(v.preload);
  // What the njs bridge honours, baked into its bundle.
  const embeddedOps = { requestTimeoutMs: ops.requestTimeoutMs, serverTiming: ops.serverTiming };
  const mode: Mode = workers ? 'workers' : 'embedded';
  const nginx = nginxBinary();
  const jsModule = mode === 'embedded' ? findJsModule() : undefined;

  return runPrivateServer({
    name: 'nginx',
    ...serverOptions(v),
    gracefulMs: DEFAULT_GRACEFUL_MS,
    drainDelayMs: ops.drainDelayMs,
    watch: v.watch ? { handler, preload } : undefined,
    // QUIT: graceful (in-flight requests finish); TERM: fast.
    stopSignals: ['SIGQUIT', 'SIGTERM'],
    async prepare(site) {
      // Everything nginx and the workers read lives in the private root (the project dir may be
      // 0700): the conf with the workers' secret, the bundle, the sockets and the log FIFO.
      const dir = site.dir;
      site.subdir('tmp');
      const account = site.account;
      const copied = (files: readonly string[], tag: string, ext = '.conf'): string[] =>
        files.map((f, i) => {
          const to = join(dir, `${tag}-${i}${ext}`);
          // Read by nginx's master only, while it loads the config.
          writeFileSync(to, readFileSync(f), { mode: 0o600 });
          chmodSync(to, 0o600);
          return to;
        });
      let sup: Supervisor | undefined;
      let bundle: string | undefined;
      let generation = 0;
      const conf = join(dir, 'nginx.conf');
      // The access log goes to our stdout: nginx can only open a path, and /dev/stdout fails when stdout
      // is a socket (as Node's pipes are). Only nginx's master (root, or us) opens it: it holds query strings.
      const accessLog = v['no-access-log'] ? 'off' : site.fifo('access.log', 'stdout');
      const writeConf = (): void => {
        writeFileSync(
          conf,
          mainConf({
            mode,
            dir,
            host: site.host,
            port: site.port,
            location: v.location,
            maxBody: v['max-body'],
            bundle,
            sockets: sup?.sockets,
            include: copied(v.include, 'include'),
            includeServer: copied(v['include-server'], 'include-server'),
            preload: preload.map((p, i) => ({ name: p.name, file: copied([p.file], `preload-${i}`, '.json')[0]! })),
            secret: sup?.secret,
            readTimeout: nginxReadTimeout(ops.requestTimeoutMs),
            user: account?.name,
            group: account?.group,
            jsModule,
            accessLog,
            errorLogLevel: v['log-level'],
          }),
          { mode: 0o600 },
        );
        // It holds the workers' secret; nginx's master reads it as root (or as us).
        chmodSync(conf, 0o600);
      };
      if (mode === 'embedded') {
        // Loaded in njs before nginx starts: a handler that cannot work stops here with one line.
        const r = await buildNjs({ handler, outDir: dir, validate: true, init: true, preload, ...embeddedOps }).finally(stopEsbuild);
        for (const w of r.report.warnings) site.say(`warning: ${w}`);
        bundle = r.file;
      } else {
        site.assertRunnable(process.execPath);
        const entry = await buildWorkerBundle(handler, dir, preload).finally(stopEsbuild);
        const s = new Supervisor({
          entry,
          socketDir: site.subdir('sockets'),
          workers: workers!,
          maxBody: v['max-body'],
          uid: account?.uid,
          gid: account?.gid,
          account,
          authority: site.authority,
          clearEnv,
          cwd: dir,
          stateFile: join(dir, 'workers.json'),
          ops,
        });
        sup = s;
        // After nginx has gone (its connections drained); at once after a second Ctrl-C.
        site.onTeardown((fast) => s.stop(fast ? 1_000 : undefined));
        await s.start();
      }
      writeConf();
      const check = spawnSync(nginx, ['-t', '-q', '-p', dir, '-c', conf], { encoding: 'utf8' });
      if (check.status !== 0) {
        const line = `${check.stderr}`.split('\n').find((l) => l.includes('[emerg]')) ?? check.stderr.trim();
        throw new StartupError(`nginx rejected the generated config: ${line}`);
      }
      return {
        command: nginx,
        args: ['-p', dir, '-c', conf],
        details: [workers ? `${workers} Node worker${workers > 1 ? 's' : ''}` : 'embedded', `conf ${conf}`],
        // nginx's graceful stop waits for its WebSocket tunnels: the workers end them (1001) after the graceful timeout.
        stopping: () => sup?.socketsGoingAway(DEFAULT_GRACEFUL_MS),
        // --drain-delay: nginx keeps serving; the workers' health path answers 503 until nginx is told to quit.
        draining: () => sup?.announceDrain(),
        async reload(master) {
          if (sup) {
            // Rebuilt from the handler as it is now; the new workers run the new bundle.
            const entry = await buildWorkerBundle(handler, dir, preload, `worker-${++generation}.mjs`).finally(stopEsbuild);
            const ok = await sup.roll(async () => {
              // The supervisor's socket list is already the new one.
              writeConf();
              await reloadNginx(master);
            }, entry);
            if (!ok) throw new StartupError('a new worker did not start');
          } else {
            // Built next to the live bundle; only a bundle njs accepts replaces it.
            const next = await buildNjs({ handler, outDir: dir, fileName: 'tsgi.next.js', validate: true, init: true, preload, ...embeddedOps }).finally(stopEsbuild);
            renameSync(next.file, bundle!);
            await reloadNginx(master);
          }
        },
      };
    },
  });
}

export function main(argv: string[]): Promise<number> {
  return dispatch(
    'tsgi nginx',
    { build: { spec: BUILD, run: cmdBuild }, conf: { spec: CONF, run: cmdConf }, run: { spec: RUN, run: cmdRun }, workers: { spec: WORKERS, run: cmdWorkers } },
    argv,
  );
}
