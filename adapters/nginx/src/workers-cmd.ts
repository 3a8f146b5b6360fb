/**
 * `tsgi nginx workers <handler> --socket-dir DIR --processes N --user USER`: the Node workers of
 * workers mode for a system nginx (its config from `tsgi nginx conf --workers N --socket-dir DIR`),
 * supervised as `tsgi nginx run --workers` supervises them (core's WorkerPool, supervisor.ts), in the
 * foreground (systemd's Type=simple: `tsgi systemd nginx-workers`).
 *
 * What it makes in DIR (created when missing; an existing one must be ours):
 *   DIR                 0750 <us>:<nginx's group>  (the worker user needs nothing here: it gets its socket as fd 3)
 *   DIR/worker-<i>.sock 0660 <us>:<nginx's group>  (one per worker slot, the same across reloads)
 *   DIR/secret.conf     0600 <us>                  (`proxy_set_header X-Tsgi-Secret ...;`, read by nginx's master)
 * The secret is made when the file is missing and kept otherwise, so a restart of this command needs no
 * nginx reload (DIR on /run: a new one per boot). The directory is not the worker user's: an include that
 * nginx's master reads as root must not sit where the handler's user could replace it.
 *
 * SIGHUP: the handler as it is now, rebuilt; new workers accept on the same sockets while the old ones
 * drain (nginx is not reloaded). SIGTERM/SIGINT: the workers drain and run `close`; a second SIGINT: at once.
 */
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { stop as stopEsbuild } from 'esbuild';
import {
  StartupError,
  commonOptions,
  drainPeriod,
  envAllowList,
  lookupGroup,
  opsOptions,
  opsSettings,
  parseCommand,
  startupReason,
  workerAccount,
  type Account,
  type CommandSpec,
  type DrainPeriod,
  writeFileBeside,
} from '@tsgi/core/node';
import { SECRET_FILE } from './config.js';
import { Supervisor, stableSocketPath } from './supervisor.js';
import { buildWorkerBundle } from './workers-bundle.js';

/** Where a system nginx finds the workers (Debian: /run is a tmpfs, so it is new at every boot). */
export const DEFAULT_SOCKET_DIR = '/run/tsgi';
/** Debian's nginx runs its workers as www-data (nginx.conf `user www-data;`); other distributions' packages use nginx. */
const NGINX_GROUPS = ['www-data', 'nginx'];

export const SOCKET_DIR = {
  type: 'string',
  value: 'DIR',
  default: DEFAULT_SOCKET_DIR,
  pattern: /^\/[^\s;{}"'\\]*$/,
  wants: 'an absolute path (no spaces, quotes, ; { } or \\)',
  help: "workers mode for a system nginx: the workers' sockets and the secret include",
} as const;

export const WORKERS = {
  command: 'tsgi nginx workers',
  summary: "run the Node workers (--processes N, default 1) for a system nginx (its config: tsgi nginx conf --workers N --socket-dir DIR); SIGHUP reloads, SIGTERM drains",
  args: [{ name: '<handler>', file: 'handler' }],
  options: {
    'socket-dir': SOCKET_DIR,
    workers: commonOptions.workers,
    user: commonOptions.user,
    group: commonOptions.group,
    'nginx-group': { type: 'string', value: 'GROUP', help: `nginx's workers' group, the sockets' group; default the first of ${NGINX_GROUPS.join(', ')} that exists` },
    'max-body': commonOptions['max-body'],
    'server-name': {
      type: 'string',
      value: 'HOST[:PORT]',
      default: 'localhost',
      pattern: /^[A-Za-z0-9.\-[\]:]+$/,
      wants: 'a host name, optionally with :port',
      help: 'the authority of an HTTP/1.0 request without Host (what nginx listens as)',
    },
    'clear-env': commonOptions['clear-env'],
    env: commonOptions.env,
    // The same entries as tsgi nginx run --workers (issue 12): same names, defaults and messages.
    ...opsOptions,
  },
} as const satisfies CommandSpec;

const TAG = 'tsgi nginx';
const say = (line: string): void => console.error(`${TAG}: ${line}`);

/** nginx's group: the one named, or the first of NGINX_GROUPS; not root: our own (nginx then runs as us). */
function socketGroup(name: string | undefined): { name: string; gid: number } {
  if (process.getuid?.() !== 0) {
    const gid = process.getgid!();
    if (name !== undefined && lookupGroup(name)?.gid !== gid) throw new StartupError(`--nginx-group ${name} needs root`);
    return { name: lookupGroup(String(gid))?.name ?? String(gid), gid };
  }
  const found = (name !== undefined ? [name] : NGINX_GROUPS).map(lookupGroup).find((g) => g !== undefined);
  if (!found) throw new StartupError(name !== undefined ? `no such group '${name}' (--nginx-group)` : `none of the groups ${NGINX_GROUPS.join(', ')} exists: pass --nginx-group`);
  return found;
}

/** DIR made or checked: ours (never a directory someone else could swap files in), 0750 us:<nginx's group>. */
function prepareSocketDir(dir: string, gid: number): void {
  if (!existsSync(dir)) mkdirSync(dir, { recursive: true, mode: 0o750 });
  const st = lstatSync(dir);
  if (!st.isDirectory()) throw new StartupError(`--socket-dir ${dir} is not a directory`);
  const uid = process.getuid?.() ?? 0;
  if (st.uid !== uid) throw new StartupError(`--socket-dir ${dir} belongs to uid ${st.uid}, not to us (uid ${uid}): remove it or pick another`);
  chownSync(dir, uid, gid);
  chmodSync(dir, 0o750);
}

const SECRET_LINE = /^proxy_set_header X-Tsgi-Secret ([0-9a-f]{64});\n?$/;

/** The secret of DIR/secret.conf, made (written atomically, 0600) when missing or not ours. */
function secretOf(dir: string): { secret: string; made: boolean } {
  const file = join(dir, SECRET_FILE);
  try {
    const m = SECRET_LINE.exec(readFileSync(file, 'utf8'));
    if (m && lstatSync(file).uid === (process.getuid?.() ?? 0) && (lstatSync(file).mode & 0o077) === 0) return { secret: m[1]!, made: false };
  } catch {
    /* missing: made below */
  }
  const secret = randomBytes(32).toString('hex');
  writeFileBeside(file, `proxy_set_header X-Tsgi-Secret ${secret};\n`, 0o600);
  return { secret, made: true };
}

/** A private dir for the bundle, 0710 us:<workers' group> (they reach the file they are told about), removed at the end. */
function bundleDir(account: Account | undefined): string {
  const dir = mkdtempSync(join(process.env.TMPDIR || tmpdir(), 'tsgi-workers-'));
  if (account) chownSync(dir, process.getuid!(), account.gid);
  chmodSync(dir, account ? 0o710 : 0o700);
  return dir;
}

async function bundle(handler: string, dir: string, account: Account | undefined, name: string): Promise<string> {
  const file = await buildWorkerBundle(handler, dir, [], name).finally(stopEsbuild);
  if (account) chownSync(file, process.getuid!(), account.gid);
  chmodSync(file, 0o640);
  return file;
}

export async function cmdWorkers(argv: string[]): Promise<number> {
  const { values: v, args, help } = parseCommand(WORKERS, argv);
  if (help) {
    console.log(help);
    return 0;
  }
  const handler = args[0]!;
  const keep = envAllowList(v['clear-env'], v.env);
  const account = workerAccount(v.user, v.group);
  const group = socketGroup(v['nginx-group']);
  const dir = resolve(v['socket-dir']);
  const n = v.workers ?? 1;
  const ops = opsSettings(v);

  // A stop asked for while starting ends the start cleanly.
  let stopLevel = 0;
  let sup: Supervisor | undefined;
  let done!: (code: number) => void;
  const finished = new Promise<number>((r) => (done = r));
  let ready = false;
  let reloading = false;
  let generation = 0;
  let work: string | undefined;

  let drain: DrainPeriod | undefined;
  let stopping = false;
  const stop = (fast: boolean): void => {
    stopLevel = fast ? 2 : Math.max(stopLevel, 1);
    // While starting: the start ends at its next step (and stops what it started).
    if (!sup || !ready) return;
    const s = sup;
    const stopNow = (): void => {
      if (stopping && !fast) return;
      stopping = true;
      void s.stop(fast ? 1_000 : undefined).then(() => done(0));
    };
    if (fast || ops.drainDelayMs === 0) {
      drain?.cut();
      return stopNow();
    }
    if (drain) return;
    // --drain-delay: the workers keep serving, their health path at 503, while nginx's balancer looks.
    drain = drainPeriod(ops.drainDelayMs, say);
    s.announceDrain();
    void drain.over.then(stopNow);
  };
  const onInt = (): void => stop(stopLevel >= 1);
  const onTerm = (): void => stop(false);
  const onHup = (): void => {
    if (!ready) return say('SIGHUP ignored while starting');
    if (reloading) return say('SIGHUP ignored: a reload is under way');
    reloading = true;
    void (async () => {
      try {
        const entry = await bundle(handler, work!, account, `worker-${++generation}.mjs`);
        // Same sockets: nothing to tell nginx.
        const ok = await sup!.roll(async () => {}, entry);
        if (!ok) throw new StartupError('a new worker did not start');
        if (!stopLevel) say('reloaded');
      } catch (err) {
        if (!stopLevel) say(`reload failed: ${startupReason(err)}; still serving the previous handler`);
      } finally {
        reloading = false;
      }
    })();
  };
  process.on('SIGINT', onInt);
  process.on('SIGTERM', onTerm);
  process.on('SIGHUP', onHup);
  try {
    prepareSocketDir(dir, group.gid);
    const { secret, made } = secretOf(dir);
    work = bundleDir(account);
    const entry = await bundle(handler, work, account, 'worker.mjs');
    if (stopLevel) return 0;
    sup = new Supervisor({
      entry,
      socketDir: dir,
      stableSockets: true,
      workers: n,
      maxBody: v['max-body'],
      uid: account?.uid,
      gid: account?.gid,
      socketGid: group.gid,
      account,
      secret,
      authority: v['server-name'],
      clearEnv: v['clear-env'] ? { keep } : undefined,
      cwd: work,
      stateFile: join(work, 'workers.json'),
      log: say,
      ops,
    });
    await sup.start();
    if (stopLevel) {
      await sup.stop(stopLevel > 1 ? 1_000 : undefined);
      return 0;
    }
    ready = true;
    if (made) say(`new secret in ${join(dir, SECRET_FILE)}: reload nginx if it is already running (systemctl reload nginx)`);
    const who = account ? `, user ${account.name}` : '';
    say(`ready: ${n} Node worker${n > 1 ? 's' : ''} on ${stableSocketPath(dir, 0).replace(/-0\.sock$/, '-*.sock')} (supervisor pid ${process.pid}${who}, group ${group.name}, state ${join(work, 'workers.json')})`);
    return await finished;
  } finally {
    process.off('SIGINT', onInt);
    process.off('SIGTERM', onTerm);
    process.off('SIGHUP', onHup);
    if (sup && !ready) await sup.stop(1_000);
    if (work) rmSync(work, { recursive: true, force: true });
  }
}
