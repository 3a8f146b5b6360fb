/**
 * `tsgi nginx build|conf|run`. User errors throw StartupError with one line;
 * the tsgi dispatcher prints it and exits 1.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, renameSync, constants, openSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer as createNetServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stop as stopEsbuild } from 'esbuild';
import { StartupError } from '@tsgi/core/node';
import { buildNjs, formatReport } from './build.js';
import { mainConf, snippet, type Mode } from './config.js';
import { findJsModule, nginxBinary } from './nginx.js';
import { Supervisor } from './supervisor.js';
import { buildWorkerBundle } from './workers-bundle.js';

export const USAGE = `usage:
  tsgi nginx build <handler> -o <dir>
      bundle the handler + njs bridge into <dir>/tsgi.js (njs 0.7.9), print the load-time report
  tsgi nginx conf <handler> [--location /] [--workers N] [--max-body BYTES] [-o <build dir>]
      print an nginx config snippet
  tsgi nginx run <handler> --port P [--host 127.0.0.1] [--workers N] [--include FILE]...
                 [--include-server FILE]... [--max-body BYTES] [--location /] [--user NAME]
                 [--preload NAME=FILE.json]... [--clear-env [--env NAME]...]
      start a private nginx in the foreground (Ctrl-C stops it; SIGHUP reloads gracefully)`;

export const DEFAULT_MAX_BODY = 10 * 1024 * 1024;

interface Args {
  positional: string[];
  flags: Map<string, string[]>;
}

const VALUED = new Set(['--preload', '-o', '--out', '--location', '--workers', '--port', '--host', '--include', '--include-server', '--max-body', '--user', '--env']);
const BOOLEAN = new Set(['--help', '-h', '--clear-env']);

function parse(argv: string[]): Args {
  const a: Args = { positional: [], flags: new Map() };
  for (let i = 0; i < argv.length; i++) {
    const t = argv[i]!;
    if (t.startsWith('-')) {
      const eq = t.indexOf('=');
      const name = eq > 0 ? t.slice(0, eq) : t;
      if (BOOLEAN.has(name)) {
        a.flags.set(name, ['true']);
        continue;
      }
      if (!VALUED.has(name)) throw new StartupError(`unknown option ${name}\n${USAGE}`);
      const v = eq > 0 ? t.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new StartupError(`${name} needs a value`);
      a.flags.set(name, [...(a.flags.get(name) ?? []), v]);
    } else a.positional.push(t);
  }
  return a;
}

const one = (a: Args, ...names: string[]): string | undefined => {
  for (const n of names) {
    const v = a.flags.get(n);
    if (v) return v[v.length - 1];
  }
  return undefined;
};

function int(a: Args, name: string, min: number, max: number): number | undefined {
  const v = one(a, name);
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new StartupError(`${name} must be an integer from ${min} to ${max}, got '${v}'`);
  return n;
}

function handlerArg(a: Args): string {
  const h = a.positional[0];
  if (!h) throw new StartupError(`missing <handler>\n${USAGE}`);
  const file = resolve(h);
  if (!existsSync(file) || !statSync(file).isFile()) throw new StartupError(`handler not found: ${file}`);
  return file;
}

/** --preload NAME=FILE.json: read-only data (js_preload_object embedded; bundled in workers mode). */
function preloads(a: Args): { name: string; file: string }[] {
  return (a.flags.get('--preload') ?? []).map((v) => {
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

function existingFile(f: string, what: string): string {
  const p = resolve(f);
  if (!existsSync(p) || !statSync(p).isFile()) throw new StartupError(`${what} not found: ${p}`);
  return p;
}

interface Account {
  name: string;
  uid: number;
  gid: number;
  /** The name of its primary group (nginx's `user NAME GROUP`). */
  group: string;
  home: string;
}

/** `getent DB KEY` split on ':' (NSS: /etc/passwd, LDAP, sssd alike), or undefined. */
function getent(db: 'passwd' | 'group', key: string): string[] | undefined {
  const r = spawnSync('getent', [db, key], { encoding: 'utf8' });
  return r.status === 0 && r.stdout ? r.stdout.split('\n')[0]!.split(':') : undefined;
}

/** Unprivileged account for nginx and Node workers when we run as root. */
function workerUser(name: string | undefined): Account | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const wanted = name ? [name] : ['www-data', 'nginx', 'nobody'];
  for (const w of wanted) {
    const e = getent('passwd', w);
    if (!e) continue;
    const gid = Number(e[3]);
    return { name: e[0]!, uid: Number(e[2]), gid, group: getent('group', String(gid))?.[0] ?? String(gid), home: e[5] || '/' };
  }
  throw new StartupError(`user ${wanted.join('/')} not found (needed to run nginx and the workers unprivileged)`);
}

/** --clear-env [--env NAME]...: the names allowed into the workers' clean environment. */
function envPolicy(a: Args, workers: boolean): { keep: string[] } | undefined {
  const keep = a.flags.get('--env') ?? [];
  for (const k of keep) if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(k)) throw new StartupError(`--env wants a variable name, got '${k}'`);
  if (!a.flags.has('--clear-env')) {
    if (keep.length) throw new StartupError('--env NAME lists what --clear-env lets through; add --clear-env');
    return undefined;
  }
  if (!workers) throw new StartupError('--clear-env is for the Node workers of --workers N (embedded nginx passes only `env NAME;` variables)');
  return { keep };
}

/**
 * A directory only we and `account`'s group (nginx's and the Node workers') can enter: 0710, so
 * the group can reach the paths it is told about but not list them; 0700 when we do not switch user.
 */
function privateDir(path: string, account: Account | undefined): void {
  if (!existsSync(path)) mkdirSync(path);
  if (account) {
    chownSync(path, 0, account.gid);
    chmodSync(path, 0o710);
  } else chmodSync(path, 0o700);
}

async function cmdBuild(a: Args): Promise<number> {
  const handler = handlerArg(a);
  const out = one(a, '-o', '--out');
  if (!out) throw new StartupError('build needs -o <dir>');
  const r = await buildNjs({ handler, outDir: out, preload: preloads(a) });
  console.log(formatReport(r));
  return 0;
}

function cmdConf(a: Args): number {
  const handler = handlerArg(a);
  const workers = int(a, '--workers', 1, 256);
  const mode: Mode = workers ? 'workers' : 'embedded';
  const buildDir = resolve(one(a, '-o', '--out') ?? 'tsgi-nginx');
  console.log(
    snippet({
      mode,
      handler,
      buildDir,
      location: one(a, '--location') ?? '/',
      maxBody: int(a, '--max-body', 0, 2 ** 40) ?? DEFAULT_MAX_BODY,
      bundle: join(buildDir, 'tsgi.js'),
      preload: preloads(a),
      sockets: workers ? Array.from({ length: workers }, (_, i) => `/run/tsgi/worker-${i}.sock`) : undefined,
    }),
  );
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

/**
 * The access log goes to our stdout through a FIFO: nginx can only open a
 * path, and /dev/stdout fails when stdout is a socket (as Node's pipes are).
 */
function relayFifo(path: string): { path: string; close(): void } {
  // Only nginx's master (root, or us) opens it: the log holds query strings, tokens and all.
  const r = spawnSync('mkfifo', ['-m', '0600', path]);
  if (r.status !== 0) throw new StartupError(`cannot create ${path} (mkfifo)`);
  // Non-blocking open of the read end, and a write end of our own so nginx reopening it never means EOF.
  const rfd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
  const wfd = openSync(path, constants.O_WRONLY);
  const sock = new Socket({ fd: rfd, readable: true, writable: false });
  sock.pipe(process.stdout, { end: false });
  return {
    path,
    close() {
      sock.destroy();
      try {
        closeSync(wfd);
      } catch {
        /* closed */
      }
    },
  };
}

/** Fails early and clearly when something already listens there (our ready probe would be fooled). */
function assertPortFree(host: string, port: number): Promise<void> {
  return new Promise((resolveP, reject) => {
    const s = createNetServer();
    s.once('error', (err: NodeJS.ErrnoException) =>
      reject(new StartupError(`cannot listen on ${host}:${port}: ${err.code === 'EADDRINUSE' ? 'address already in use' : err.code ?? err.message}`)),
    );
    s.listen({ host, port, exclusive: true }, () => s.close(() => resolveP()));
  });
}

function waitForPort(host: string, port: number, nginx: ChildProcess, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  return new Promise((resolveP, reject) => {
    const attempt = (): void => {
      if (nginx.exitCode !== null || nginx.signalCode !== null) {
        reject(new StartupError(`nginx failed to start (exit ${nginx.exitCode ?? nginx.signalCode}; its error is above)`));
        return;
      }
      const s = connect({ host, port });
      s.once('connect', () => {
        s.destroy();
        resolveP();
      });
      s.once('error', () => {
        s.destroy();
        if (Date.now() > deadline) reject(new StartupError(`nginx did not listen on ${host}:${port}`));
        else setTimeout(attempt, 50);
      });
    };
    attempt();
  });
}

async function cmdRun(a: Args): Promise<number> {
  // Everything the user typed is checked before anything starts.
  const handler = handlerArg(a);
  const port = int(a, '--port', 1, 65535);
  if (port === undefined) throw new StartupError('run needs --port P');
  const host = one(a, '--host') ?? '127.0.0.1';
  const workers = int(a, '--workers', 1, 256);
  const maxBody = int(a, '--max-body', 0, 2 ** 40) ?? DEFAULT_MAX_BODY;
  const clearEnv = envPolicy(a, workers !== undefined);
  const location = one(a, '--location') ?? '/';
  const include = (a.flags.get('--include') ?? []).map((f) => existingFile(f, 'include file'));
  const includeServer = (a.flags.get('--include-server') ?? []).map((f) => existingFile(f, 'include file'));
  const preload = preloads(a);
  const mode: Mode = workers ? 'workers' : 'embedded';
  const nginx = nginxBinary();
  const jsModule = mode === 'embedded' ? findJsModule() : undefined;
  const user = workerUser(one(a, '--user'));
  await assertPortFree(host, port);
  // A SIGHUP while starting would kill us (default action) and leave the temp dir; ignore it until ready.
  const earlyHup = (): void => console.error('tsgi nginx: SIGHUP ignored while starting');
  process.on('SIGHUP', earlyHup);
  // A stop asked for while starting (its default action would leave the temp dir) happens once started.
  let stopAsked = false;
  const earlyStop = (): void => {
    stopAsked = true;
  };
  process.on('SIGTERM', earlyStop);
  process.on('SIGINT', earlyStop);
  const offEarly = (): void => {
    process.off('SIGHUP', earlyHup);
    process.off('SIGTERM', earlyStop);
    process.off('SIGINT', earlyStop);
  };

  // Everything nginx and the workers read lives here (the project dir may be 0700), and nobody else
  // may enter it: it holds the conf with the workers' secret, the bundle, the sockets and the log FIFO.
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-nginx-'));
  privateDir(dir, user);
  privateDir(join(dir, 'tmp'), user);
  const cleanup = (): void => {
    accessLog?.close();
    rmSync(dir, { recursive: true, force: true });
  };
  const copied = (files: string[], tag: string, ext = '.conf'): string[] =>
    files.map((f, i) => {
      const to = join(dir, `${tag}-${i}${ext}`);
      // Read by nginx's master only, while it loads the config.
      writeFileSync(to, readFileSync(f), { mode: 0o600 });
      chmodSync(to, 0o600);
      return to;
    });

  let sup: Supervisor | undefined;
  let master: ChildProcess | undefined;
  let bundle: string | undefined;
  let accessLog: { path: string; close(): void } | undefined;
  const conf = join(dir, 'nginx.conf');
  const writeConf = (): void => {
    writeFileSync(
      conf,
      mainConf({
        mode,
        dir,
        host,
        port,
        location,
        maxBody,
        bundle,
        sockets: sup?.sockets,
        include: copied(include, 'include'),
        includeServer: copied(includeServer, 'include-server'),
        preload: preload.map((p, i) => ({ name: p.name, file: copied([p.file], `preload-${i}`, '.json')[0]! })),
        secret: sup?.secret,
        user: user?.name,
        group: user?.group,
        jsModule,
        accessLog: accessLog?.path,
      }),
      { mode: 0o600 },
    );
    // It holds the workers' secret; nginx's master reads it as root (or as us).
    chmodSync(conf, 0o600);
  };
  try {
    if (mode === 'embedded') {
      // Loaded in njs before nginx starts: a handler that cannot work stops here with one line.
      const r = await buildNjs({ handler, outDir: dir, validate: true, init: true, preload }).finally(stopEsbuild);
      for (const w of r.report.warnings) console.error(`tsgi nginx: warning: ${w}`);
      bundle = r.file;
    } else {
      const entry = await buildWorkerBundle(handler, dir, preload).finally(stopEsbuild);
      const socketDir = join(dir, 'sockets');
      privateDir(socketDir, user);
      sup = new Supervisor({
        entry,
        socketDir,
        workers: workers!,
        maxBody,
        uid: user?.uid,
        gid: user?.gid,
        account: user,
        authority: `${host.includes(':') ? `[${host}]` : host}:${port}`,
        clearEnv,
        cwd: dir,
        stateFile: join(dir, 'workers.json'),
      });
      await sup.start();
    }
    accessLog = relayFifo(join(dir, 'access.log'));
    writeConf();
    const check = spawnSync(nginx, ['-t', '-q', '-p', dir, '-c', conf], { encoding: 'utf8' });
    if (check.status !== 0) {
      const line = `${check.stderr}`.split('\n').find((l) => l.includes('[emerg]')) ?? check.stderr.trim();
      throw new StartupError(`nginx rejected the generated config: ${line}`);
    }
    // setpriv --pdeathsig: nginx gets SIGTERM if this command is killed outright (no orphan holding the port).
    const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((f) => existsSync(f));
    const [cmd, args] = setpriv
      ? [setpriv, ['--pdeathsig', 'SIGTERM', nginx, '-p', dir, '-c', conf]]
      : [nginx, ['-p', dir, '-c', conf]];
    master = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'] });
    await waitForPort(host, port, master);
  } catch (err) {
    offEarly();
    master?.kill('SIGKILL');
    await sup?.stop(2_000);
    cleanup();
    throw err;
  }

  const m = master;
  return new Promise<number>((resolveRun) => {
    let stopping = false;
    let reloading: Promise<void> = Promise.resolve();
    let generation = 0;
    const finish = async (code: number): Promise<void> => {
      process.off('SIGINT', onStop);
      process.off('SIGTERM', onStop);
      process.off('SIGHUP', onHup);
      await sup?.stop();
      cleanup();
      resolveRun(code);
    };
    const onStop = (): void => {
      if (stopping) return;
      stopping = true;
      // Graceful (QUIT) first; fast (TERM) and KILL if it lingers.
      m.kill('SIGQUIT');
      const t1 = setTimeout(() => m.kill('SIGTERM'), 10_000);
      const t2 = setTimeout(() => m.kill('SIGKILL'), 15_000);
      m.once('exit', () => {
        clearTimeout(t1);
        clearTimeout(t2);
        void finish(0);
      });
    };
    const onHup = (): void => {
      reloading = reloading.then(async () => {
        if (stopping) return;
        try {
          if (sup) {
            // Rebuild from the handler as it is now; the new workers run the new bundle.
            const entry = await buildWorkerBundle(handler, dir, preload, `worker-${++generation}.mjs`).finally(stopEsbuild);
            const ok = await sup.roll(async () => {
              // The supervisor's socket list is already the new one.
              writeConf();
              await reloadNginx(m);
            }, entry);
            if (!ok) throw new StartupError('a new worker did not start; the old workers keep serving');
          } else {
            // Build next to the live bundle; only a bundle nginx accepts replaces it.
            const next = await buildNjs({ handler, outDir: dir, fileName: 'tsgi.next.js', validate: true, init: true, preload }).finally(stopEsbuild);
            renameSync(next.file, bundle!);
            await reloadNginx(m);
          }
          console.error('tsgi nginx: reloaded');
        } catch (err) {
          // A stop during the reload ends it; that is no failure to report.
          if (!stopping) console.error(`tsgi nginx: reload failed: ${(err as Error).message}`);
        }
      });
    };
    process.on('SIGINT', onStop);
    process.on('SIGTERM', onStop);
    process.on('SIGHUP', onHup);
    offEarly();
    m.once('exit', (code, signal) => {
      if (stopping) return;
      stopping = true;
      console.error(`tsgi nginx: nginx exited unexpectedly (${signal ?? `exit ${code}`})`);
      void finish(1);
    });
    if (stopAsked) return onStop();
    // Only now: whoever reads this line may signal us at once.
    console.error(
      `tsgi nginx: ready on http://${host.includes(':') ? `[${host}]` : host}:${port}${location} ` +
        `(${mode}${workers ? `, ${workers} Node worker${workers > 1 ? 's' : ''}` : ''}; conf ${conf})`,
    );
  });
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  if (!cmd || cmd === '--help' || cmd === '-h' || cmd === 'help') {
    console.error(USAGE);
    return cmd ? 0 : 2;
  }
  const a = parse(rest);
  if (a.flags.has('--help') || a.flags.has('-h')) {
    console.error(USAGE);
    return 0;
  }
  switch (cmd) {
    case 'build':
      return cmdBuild(a);
    case 'conf':
      return cmdConf(a);
    case 'run':
      return cmdRun(a);
    default:
      throw new StartupError(`unknown nginx command '${cmd}'\n${USAGE}`);
  }
}
