// `tsgi apache build|conf|run`: compile mod_tsgi, print a config snippet, or run
// a private Apache in the foreground (as mod_wsgi-express does).
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, openSync, readFileSync, readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { Socket, connect, createServer } from 'node:net';
import { constants as osSignals, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { StartupError, bundleWorker, loadHandler } from '@tsgi/core/node';
import { DEFAULT_MPM, serverConf, snippet, type DaemonOptions } from './config.js';
import { MsgType } from './protocol.js';

const USAGE = `usage:
  tsgi apache build
      compile mod_tsgi with apxs and print the .so path
  tsgi apache conf <handler> [--location /] [--processes N] [--name app] [--user U] [--group G] [--clear-env [--env NAME]...]
      print a config snippet to include in an existing Apache (LoadModule, TsgiDaemon, <Location>)
  tsgi apache run <handler> --port P [--host 127.0.0.1] [--processes N] [--location /] [--include FILE]...
      [--max-body BYTES] [--request-timeout S] [--queue-timeout S] [--connect-timeout S]
      [--graceful-timeout S] [--max-requests N] [--max-inflight N] [--user www-data] [--group G] [--threads N] [--log-level warn]
      [--clear-env [--env NAME]...]
      run a private Apache in the foreground (Ctrl-C stops it)`;

/** The worker script shipped with this package (dist/worker.js). */
export const WORKER_SCRIPT = fileURLToPath(new URL('./worker.js', import.meta.url));

export async function main(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  switch (sub) {
    case 'build':
      console.log(await modulePath());
      return 0;
    case 'conf':
      return conf(rest);
    case 'run':
      return run(rest);
    case undefined:
    case '--help':
    case '-h':
    case 'help':
      console.error(USAGE);
      return sub === undefined ? 2 : 0;
    default:
      throw new Error(`unknown subcommand '${sub}' (build, conf or run)`);
  }
}

/** Builds (or reuses) mod_tsgi.so through build.ts and returns its path. */
export async function modulePath(): Promise<string> {
  const { buildModule } = await import('./build.js');
  return (await buildModule()).so;
}

function int(name: string, v: string | undefined, min = 0): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < min) throw new StartupError(`--${name} must be an integer >= ${min}, got '${v}'`);
  return Number(v);
}

const COMMON = {
  location: { type: 'string', default: '/' },
  processes: { type: 'string' },
  name: { type: 'string', default: 'app' },
  user: { type: 'string' },
  group: { type: 'string' },
  'max-body': { type: 'string' },
  'request-timeout': { type: 'string' },
  'queue-timeout': { type: 'string' },
  'connect-timeout': { type: 'string' },
  'graceful-timeout': { type: 'string' },
  'max-requests': { type: 'string' },
  'max-inflight': { type: 'string' },
  'clear-env': { type: 'boolean', default: false },
  env: { type: 'string', multiple: true, default: [] as string[] },
} as const;

type Values = Record<string, string | string[] | boolean | undefined>;

function daemonFrom(v: Values, handler: string, worker: string, user?: string, group?: string): DaemonOptions {
  const s = (k: string) => v[k] as string | undefined;
  if (!/^[A-Za-z0-9_.-]+$/.test(s('name')!)) throw new StartupError(`--name must be a plain word, got '${s('name')}'`);
  const env = v.env as string[];
  if (env.length && !v['clear-env']) throw new StartupError('--env needs --clear-env (without it the workers get the whole environment)');
  for (const name of env) {
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(name) || name.startsWith('TSGI_')) throw new StartupError(`--env '${name}' is not a variable name (or is one of tsgi's TSGI_ names)`);
  }
  return {
    name: s('name')!,
    handler,
    worker,
    processes: int('processes', s('processes'), 1) ?? 1,
    node: process.execPath,
    user,
    group,
    maxRequests: int('max-requests', s('max-requests')),
    maxInflight: int('max-inflight', s('max-inflight')),
    requestTimeout: int('request-timeout', s('request-timeout')),
    queueTimeout: int('queue-timeout', s('queue-timeout')),
    connectTimeout: int('connect-timeout', s('connect-timeout')),
    gracefulTimeout: int('graceful-timeout', s('graceful-timeout')),
    maxBody: int('max-body', s('max-body')),
    clearEnv: v['clear-env'] === true,
    env,
  };
}

function handlerArg(positionals: string[]): string {
  if (positionals.length !== 1) throw new StartupError(`expected one handler path, got ${positionals.length}\n${USAGE}`);
  return resolve(positionals[0]!);
}

async function conf(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: COMMON, allowPositionals: true });
  const handler = handlerArg(positionals);
  await loadHandler(handler);
  const so = await modulePath();
  console.log(
    snippet({
      so,
      daemon: daemonFrom(values, handler, WORKER_SCRIPT, values.user, values.group),
      location: values.location,
    }),
  );
  return 0;
}

// ---- run ----

interface Account {
  name: string;
  uid: number;
  gid: number;
}

function account(name: string): Account {
  const r = spawnSync('getent', ['passwd', name], { encoding: 'utf8' });
  const f = r.status === 0 ? r.stdout.trim().split(':') : [];
  if (f.length < 4) throw new StartupError(`no such user '${name}' for the workers (--user)`);
  return { name, uid: Number(f[2]), gid: Number(f[3]) };
}

function groupId(name: string): number {
  const r = spawnSync('getent', ['group', name], { encoding: 'utf8' });
  const f = r.status === 0 ? r.stdout.trim().split(':') : [];
  if (f.length < 3) throw new StartupError(`no such group '${name}' (--group)`);
  return Number(f[2]);
}

/** Whether `who` may use `path` with the rwx `bits` (4, 2, 1), judged from modes alone. */
function allowed(path: string, who: { uid: number; gid: number }, bits: number): boolean {
  const st = statSync(path);
  const mode = st.uid === who.uid ? st.mode >> 6 : st.gid === who.gid ? st.mode >> 3 : st.mode;
  return (mode & bits) === bits;
}

/** Every directory from / down to `dir` must be searchable by the worker user. */
function reachable(dir: string, who: { uid: number; gid: number }): string | undefined {
  let p = resolve(dir);
  const chain: string[] = [];
  for (;;) {
    chain.unshift(p);
    const up = dirname(p);
    if (up === p) break;
    p = up;
  }
  return chain.find((d) => !allowed(d, who, 1));
}

/**
 * Bundles the worker runtime and the handler into one ES module, so a worker
 * running as an unprivileged user needs to read only that file.
 */
export async function bundleHandler(handler: string, outfile: string): Promise<void> {
  await bundleWorker({ handler, runtime: WORKER_SCRIPT, outfile });
}

function portOpen(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host, port });
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

/** Fails with one line when host:port cannot be bound (Apache would say "serving"-less "Unable to open logs"). */
function assertListenable(host: string, port: number): Promise<void> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'address in use' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EADDRNOTAVAIL' ? 'address not available' : err.message;
      rej(new StartupError(`cannot listen on ${hostPort(host, port)}: ${why}`));
    });
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => res()));
  });
}

const hostPort = (host: string, port: number) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

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

async function run(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      ...COMMON,
      port: { type: 'string' },
      host: { type: 'string', default: '127.0.0.1' },
      include: { type: 'string', multiple: true, default: [] },
      threads: { type: 'string' },
      'log-level': { type: 'string', default: 'warn' },
      'server-root': { type: 'string' },
    },
  });
  const handler = handlerArg(positionals);
  const port = int('port', values.port, 1);
  if (port === undefined || port > 65535) throw new StartupError('--port P is required (1-65535)');
  const includes = values.include.map((f) => resolve(f));
  for (const f of includes) if (!existsSync(f)) throw new StartupError(`--include file not found: ${f}`);
  if (!/^[a-z]+[0-9]*$/.test(values['log-level'])) throw new StartupError(`bad --log-level '${values['log-level']}'`);
  const threads = int('threads', values.threads, 1);

  // Fail before Apache starts: wrong path, no fetch, syntax errors, a busy port.
  await loadHandler(handler);
  await assertListenable(values.host, port);

  const root = process.getuid?.() === 0;
  const userName = values.user ?? (root ? 'www-data' : undefined);
  const who = userName ? account(userName) : { name: '', uid: process.getuid!(), gid: process.getgid!() };
  const groupName = values.group ?? (userName ? (spawnSync('id', ['-gn', userName], { encoding: 'utf8' }).stdout.trim() || userName) : undefined);
  if (values.group) who.gid = groupId(values.group);
  if (root && who.uid === 0) throw new StartupError('the workers must not run as root: pick another --user');

  const so = await modulePath();

  // The server root must be reachable by the worker user; try TMPDIR, then /tmp.
  const bases = [...new Set([tmpdir(), '/tmp'])];
  const base = values['server-root'] ? resolve(values['server-root']) : bases.find((b) => !reachable(b, who));
  if (!base) {
    throw new StartupError(`no temporary directory the worker user '${userName}' can reach (tried ${bases.join(', ')}); pass --server-root DIR`);
  }
  const blocked = reachable(base, who);
  if (blocked) throw new StartupError(`worker user '${userName}' cannot reach ${blocked} (needs o+x); pass another --server-root`);
  const nodeBlocked = reachable(dirname(process.execPath), who) ?? (allowed(process.execPath, who, 5) ? undefined : process.execPath);
  if (nodeBlocked) throw new StartupError(`worker user '${userName}' cannot run node at ${process.execPath} (${nodeBlocked})`);

  mkdirSync(base, { recursive: true });
  const dir = mkdtempSync(join(base, 'tsgi-apache-'));
  let cleaned = false;
  const cleanup = () => {
    if (cleaned) return;
    cleaned = true;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    chmodSync(dir, 0o755);
    for (const d of ['run', 'htdocs']) mkdirSync(join(dir, d), { mode: 0o755 });
    chmodSync(join(dir, 'run'), 0o755);
    chmodSync(join(dir, 'htdocs'), 0o755);
    const app = join(dir, 'app.mjs');
    await bundleHandler(handler, app);
    chmodSync(app, 0o644);
    if (!allowed(app, who, 4)) throw new StartupError(`worker user '${userName}' cannot read ${app}`);
    // SIGHUP: the handler as it is now. Built beside the live bundle, renamed over it only when it built.
    const rebuild = async () => {
      const next = join(dir, 'app.next.mjs');
      try {
        await bundleHandler(handler, next);
        chmodSync(next, 0o644);
        renameSync(next, app);
        return true;
      } catch (err) {
        rmSync(next, { force: true });
        console.error(`tsgi apache: reload failed: ${(err as Error).message.split('\n')[0]}; still serving the previous handler`);
        return false;
      }
    };

    const procs = int('processes', values.processes, 1) ?? 1;
    const daemon = daemonFrom(values, app, app, root ? userName : undefined, root ? groupName : undefined);
    daemon.processes = procs;
    const mpm = { ...DEFAULT_MPM };
    if (threads) {
      mpm.threadsPerChild = threads;
      mpm.maxRequestWorkers = threads * mpm.serverLimit;
      mpm.minSpareThreads = Math.min(mpm.minSpareThreads, threads);
      mpm.maxSpareThreads = mpm.maxRequestWorkers;
    }
    // Apache opens its logs by path, and /dev/stderr cannot be opened when it is a socket (a
    // parent that spawned us with pipes). FIFOs we copy to our stderr/stdout work everywhere and,
    // unlike piped loggers, survive graceful restarts without losing lines.
    const errorLog = join(dir, 'run', 'error.fifo');
    const accessLog = join(dir, 'run', 'access.fifo');
    for (const f of [errorLog, accessLog]) {
      if (spawnSync('mkfifo', ['-m', '600', f]).status !== 0) throw new StartupError(`cannot create the FIFO ${f}`);
    }
    const confFile = join(dir, 'httpd.conf');
    writeFileSync(
      confFile,
      serverConf({
        root: dir,
        host: values.host,
        port,
        so,
        daemon,
        location: values.location,
        user: root ? userName : undefined,
        group: root ? groupName : undefined,
        includes,
        mpm,
        logLevel: values['log-level'],
        gracefulShutdownTimeout: (daemon.gracefulTimeout ?? 15) + 5,
        errorLog,
        accessLogFile: accessLog,
      }),
      { mode: 0o644 },
    );
    return await foreground(confFile, dir, values.host, port, daemon.name, [errorLog, accessLog], rebuild, cleanup);
  } finally {
    cleanup();
  }
}

const APACHE = existsSync('/usr/sbin/apache2') ? '/usr/sbin/apache2' : 'httpd';

async function foreground(
  conf: string,
  dir: string,
  host: string,
  port: number,
  daemon: string,
  [errorLog, accessLog]: [string, string],
  rebuild: () => Promise<boolean>,
  cleanup: () => void,
): Promise<number> {
  // Until a worker is ready the error log is held back: a worker that cannot start makes this
  // command say so in one line (decision 9), and Apache's noise around it would bury that line.
  let held: Buffer[] | null = [];
  let failure: string | undefined;
  let onFailure = () => {};
  const copyError = (d: Buffer) => {
    if (!held) return process.stderr.write(d);
    held.push(d);
    const m = START_FAILED.exec(Buffer.concat(held).toString('utf8'));
    if (m && failure === undefined) {
      failure = m[1]!;
      onFailure();
    }
    return true;
  };
  const release = () => {
    if (held) process.stderr.write(Buffer.concat(held));
    held = null;
  };
  // Opened read-write so they never read EOF between Apache's restarts; closed when Apache is gone.
  const logs = ([[errorLog, copyError], [accessLog, (d: Buffer) => process.stdout.write(d)]] as const).map(([file, out]) => {
    const s = new Socket({ fd: openSync(file, 'r+'), readable: true, writable: false });
    s.on('data', out);
    s.on('error', () => {});
    return s;
  });
  // Own process group: a terminal Ctrl-C reaches only us, and we ask Apache for a graceful stop.
  // setpriv --pdeathsig: if we are killed outright, Apache still gets SIGTERM instead of lingering.
  const cmd = existsSync('/usr/bin/setpriv') ? ['/usr/bin/setpriv', '--pdeathsig', 'TERM', APACHE] : [APACHE];
  const child = spawn(cmd[0]!, [...cmd.slice(1), '-DFOREGROUND', '-d', dir, '-f', conf], { stdio: 'inherit', detached: true });
  let exited = false;
  const done = new Promise<number>((res) => {
    child.once('exit', (code, signal) => {
      exited = true;
      if (signal && failure === undefined) console.error(`tsgi apache: apache2 ended by ${signal}`);
      res(code ?? 128 + (signal ? (osSignals.signals[signal] ?? 0) : 1));
    });
    child.once('error', (err) => {
      exited = true;
      console.error(`tsgi apache: cannot start ${APACHE}: ${err.message}`);
      res(1);
    });
  });
  let stops = 0;
  const stop = () => {
    if (exited || !child.pid) return;
    // First signal: graceful-stop (in-flight requests finish); a second one stops at once.
    process.kill(child.pid, stops++ === 0 ? 'SIGWINCH' : 'SIGTERM');
  };
  // Reloads one after another: rebuild, then a graceful restart (new workers, the old ones drain).
  let reloading = Promise.resolve();
  const graceful = () => {
    reloading = reloading.then(async () => {
      if ((await rebuild()) && !exited && child.pid) process.kill(child.pid, 'SIGUSR1');
    });
  };
  // Before it ever served, a worker that cannot start stops everything (decision 9); afterwards
  // mod_tsgi retries with back-off.
  onFailure = () => {
    if (!exited && child.pid) process.kill(child.pid, 'SIGTERM');
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  process.on('SIGHUP', graceful);
  try {
    // "serving" once the port answers and a worker accepts (its init has run).
    void (async () => {
      for (let i = 0; i < 1200 && !exited && failure === undefined; i++) {
        if ((await portOpen(host, port)) && (await workerReady(dir, daemon))) {
          if (!exited && failure === undefined) {
            release();
            console.error(`tsgi apache: serving http://${hostPort(host, port)}/ (apache pid ${child.pid}, server root ${dir}); Ctrl-C stops`);
          }
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
    const code = await done;
    if (failure !== undefined) throw new StartupError(failure);
    return code;
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
    process.off('SIGHUP', graceful);
    // Let the last error-log lines through.
    await new Promise((r) => setTimeout(r, 100));
    if (failure === undefined) release();
    for (const s of logs) s.destroy();
    cleanup();
  }
}

/** For tests and tools: read a generated config back. */
export function readConf(dir: string): string {
  return readFileSync(join(dir, 'httpd.conf'), 'utf8');
}
