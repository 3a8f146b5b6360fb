/**
 * The private-server runner behind `tsgi apache run` and `tsgi nginx run`: a
 * real Apache or nginx in the foreground from a generated config, as
 * mod_wsgi-express does. The steps are the same for both servers, so they live
 * here once; each CLI only says what to build and how its server is started,
 * checked and reloaded:
 *
 *   signals handled from the first moment (a stop while starting is a clean stop)
 *   -> the CLI's own checks -> the port probe -> the worker user (NSS)
 *   -> a private temp dir -> the CLI prepares it (bundle, FIFOs, config)
 *   -> the server under `setpriv --pdeathsig`, in its own process group
 *   -> wait until it answers -> the ready line
 *   -> INT/TERM: graceful, then fast, then KILL; HUP: reload
 *   -> teardown and the temp dir removed on every way out.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, chownSync, closeSync, constants, existsSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync } from 'node:fs';
import { Socket, connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir, userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { listenError } from './listen-handle.js';
import { StartupError, type Preload } from './load.js';
import { watchHandler, type Watching } from './watch.js';
import { DEFAULT_WORKER_USERS } from './args.js';
import { startupReason } from './policy.js';
import { drainPeriod, type DrainPeriod } from './shutdown.js';

/** Who the workers (and the server's own children) run as. */
export interface Account {
  name: string;
  uid: number;
  gid: number;
  /** The name of the group in `gid`. */
  group: string;
  home: string;
}

/** `getent DB KEY` split on ':': NSS, so /etc/passwd, LDAP and sssd accounts alike. */
function getent(db: 'passwd' | 'group', key: string): string[] | undefined {
  const r = spawnSync('getent', [db, key], { encoding: 'utf8' });
  const f = r.status === 0 && r.stdout ? r.stdout.split('\n')[0]!.split(':') : [];
  return f.length >= 3 ? f : undefined;
}

/** A user by name (or uid), through NSS. */
export function lookupUser(key: string): { name: string; uid: number; gid: number; home: string } | undefined {
  const f = getent('passwd', key);
  return f && f.length >= 6 ? { name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5] || '/' } : undefined;
}

/** A group by name (or gid), through NSS. */
export function lookupGroup(key: string): { name: string; gid: number } | undefined {
  const f = getent('group', key);
  return f ? { name: f[0]!, gid: Number(f[2]) } : undefined;
}

/**
 * The workers' account (`--user`, `--group`). Started as root: the user named,
 * else the first of DEFAULT_WORKER_USERS that exists, never root; its primary
 * group unless `group` is given. Not root: undefined (everything runs as us),
 * and naming anyone else is an error.
 */
export function workerAccount(user?: string, group?: string): Account | undefined {
  if (process.getuid?.() !== 0) {
    const me = userInfo();
    if (user !== undefined && user !== me.username) throw new StartupError(`--user ${user} needs root (tsgi runs as ${me.username})`);
    if (group !== undefined && lookupGroup(group)?.gid !== process.getgid?.()) throw new StartupError(`--group ${group} needs root (tsgi runs as ${me.username})`);
    return undefined;
  }
  const pw = (user !== undefined ? [user] : DEFAULT_WORKER_USERS).map(lookupUser).find((u) => u !== undefined);
  if (!pw) throw new StartupError(user !== undefined ? `no such user '${user}' (--user)` : `none of the users ${DEFAULT_WORKER_USERS.join(', ')} exists to run the workers: pass --user`);
  if (pw.uid === 0) throw new StartupError('the workers must not run as root: pick another --user');
  const gr = lookupGroup(group ?? String(pw.gid));
  if (group !== undefined && !gr) throw new StartupError(`no such group '${group}' (--group)`);
  return { name: pw.name, uid: pw.uid, gid: gr?.gid ?? pw.gid, group: gr?.name ?? String(pw.gid), home: pw.home };
}

/** host:port as a URL writes it: [::1]:8080. */
export const hostPort = (host: string, port: number): string => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/**
 * Fails with one line (`cannot listen on HOST:PORT: address in use`) when the
 * address cannot be bound, before any server starts (whose own message would
 * bury it, and whose ready probe a stranger on the port would fool). Port 0:
 * the free port found, for the server to bind next.
 */
export function claimPort(host: string, port: number): Promise<number> {
  return new Promise((res, rej) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => rej(listenError({ host, port }, err.code)));
    srv.listen({ host, port, exclusive: true }, () => {
      const got = (srv.address() as AddressInfo).port;
      srv.close(() => res(got));
    });
  });
}

function portAnswers(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect({ host, port });
    const done = (ok: boolean): void => {
      clearTimeout(t);
      s.destroy();
      res(ok);
    };
    const t = setTimeout(() => done(false), 1000);
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
  });
}

type Who = { uid: number; gid: number };

/** Whether `who` may use `path` with the rwx `bits` (4, 2, 1), judged from its modes. */
function allowed(path: string, who: Who, bits: number): boolean {
  const st = statSync(path);
  if (who.uid === 0) return true;
  const mode = st.uid === who.uid ? st.mode >> 6 : st.gid === who.gid ? st.mode >> 3 : st.mode;
  return (mode & bits) === bits;
}

/** The first directory from / down to `dir` that `who` cannot search, if any. */
function blockedOn(dir: string, who: Who): string | undefined {
  const chain: string[] = [];
  for (let p = resolve(dir); ; p = dirname(p)) {
    chain.unshift(p);
    if (dirname(p) === p) break;
  }
  return chain.find((d) => !allowed(d, who, 1));
}

/** Everything a CLI may do in its server's private temp dir while preparing it. */
export interface Site {
  readonly dir: string;
  /** The workers' account when started as root; undefined: all runs as us. */
  readonly account?: Account;
  readonly host: string;
  /** The port to listen on (0 asked for: the free one found). */
  readonly port: number;
  /** host:port, as in the URL. */
  readonly authority: string;
  /** A subdirectory, private like the root unless a `mode` is given (one the server's children must list). */
  subdir(name: string, mode?: number): string;
  /**
   * A FIFO in the root (0600: only the server's master, root, opens it) whose
   * lines are copied to our stdout or stderr. `hold`: kept back until the
   * server is ready and scanned for the launch's `startFailure`.
   */
  fifo(name: string, to: 'stdout' | 'stderr', opts?: { hold?: boolean; line?: (line: string) => string }): string;
  /** One line unless the worker user can read `file`. */
  assertReadable(file: string): void;
  /** One line unless the worker user can run `file` and reach it. */
  assertRunnable(file: string): void;
  /** Runs once the server has gone, or if it never started; last registered first. `fast`: a stop at once was asked for. */
  onTeardown(fn: (fast: boolean) => unknown): void;
  /** `tsgi <name>: <line>` on stderr. */
  say(line: string): void;
}

/** How the prepared server is started, checked and reloaded. */
export interface Launch {
  command: string;
  args: string[];
  /** Besides its port answering: whether it serves yet (Apache: a worker accepts). */
  ready?(): Promise<boolean>;
  /** A line of the held log that means it cannot start: its group 1 is printed as the one line. */
  startFailure?: RegExp;
  /**
   * SIGHUP: onto the handler as it is now. A throw is printed; the old handler keeps serving. It may resolve
   * with the line to print instead of `reloaded` (Apache: the new workers' readiness comes later, from mod_tsgi).
   */
  reload(server: ChildProcess): Promise<string | void>;
  /** Shown in the ready line after the pid and the server root. */
  details?: string[];
  /**
   * A graceful stop begins (called before the server gets its graceful signal). nginx workers mode:
   * nginx waits for its open WebSocket tunnels, so the workers are told to close theirs (1001) when
   * the graceful timeout ends.
   */
  stopping?(): void;
  /** The drain period (PrivateServer.drainDelayMs) begins: the workers' health path answers 503 from now on. */
  draining?(): void;
}

export interface PrivateServer {
  /** 'apache', 'nginx': lines say `tsgi <name>: `, the ready line `<name> pid N`. */
  name: string;
  host: string;
  port: number;
  location: string;
  user?: string;
  group?: string;
  /** Where the temp dir is made (--server-root); default TMPDIR, else /tmp. */
  serverRoot?: string;
  gracefulMs: number;
  /**
   * --drain-delay: a stop first keeps the server serving this long (Launch.draining: the health path says
   * 503, for load balancers), then signals it to stop gracefully. A second Ctrl-C meanwhile: the fast stop.
   */
  drainDelayMs?: number;
  /** The server's graceful and fast stop signals (Apache: WINCH, TERM; nginx: QUIT, TERM). */
  stopSignals: readonly [NodeJS.Signals, NodeJS.Signals];
  /** Checks before anything is made (the handler loads, ...). */
  check?(): Promise<void>;
  /** --watch: once ready, a change to this handler or a file it imports reloads as SIGHUP does (watch.ts). */
  watch?: { handler: string; preload?: readonly Preload[] };
  prepare(site: Site): Promise<Launch>;
}

/** The runner's settings that are the shared command-line options (args.ts commonOptions). */
export function serverOptions(v: {
  host: string;
  port: number;
  location: string;
  user?: string;
  group?: string;
  'server-root'?: string;
}): Pick<PrivateServer, 'host' | 'port' | 'location' | 'user' | 'group' | 'serverRoot'> {
  return { host: v.host, port: v.port, location: v.location, user: v.user, group: v.group, serverRoot: v['server-root'] };
}

const READY_WITHIN_MS = 60_000;
/** How long a fast stop may take before KILL: Apache itself escalates to KILL for its children after 9 s. */
const FAST_STOP_MS = 30_000;
const SETPRIV = ['/usr/bin/setpriv', '/bin/setpriv'].find((f) => existsSync(f));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** mkfifo(1), tried again if a signal meant for us (a hang-up sent to the whole group while starting) killed it. */
function makeFifo(path: string): void {
  for (let attempt = 0; attempt < 3; attempt++) {
    const r = spawnSync('mkfifo', ['-m', '0600', path]);
    if (r.status === 0) return;
    if (!r.signal) break;
  }
  throw new StartupError(`cannot create the FIFO ${path} (mkfifo)`);
}

/** A log FIFO copied to one of our streams (exported for its test). */
export class Relay {
  private sock: Socket;
  private wfd: number;
  held: Buffer[] | null;
  /** With a line rewrite: the part of the last chunk after its last newline. */
  private partial = '';

  constructor(
    path: string,
    private out: NodeJS.WriteStream,
    hold: boolean,
    private onHeld: (text: string) => void,
    private line?: (line: string) => string,
  ) {
    makeFifo(path);
    // Our own write end: the server reopening its log (a restart) never makes us read EOF.
    const rfd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK);
    this.wfd = openSync(path, constants.O_WRONLY);
    this.sock = new Socket({ fd: rfd, readable: true, writable: false });
    this.sock.on('error', () => {});
    this.held = hold ? [] : null;
    this.sock.on('data', (d: Buffer) => (this.line ? this.rewrite(d) : this.emit(d)));
  }

  private emit(d: Buffer): void {
    if (!this.held) return void this.out.write(d);
    this.held.push(d);
    this.onHeld(Buffer.concat(this.held).toString('utf8'));
  }

  /** Whole lines only, each rewritten (a server's log line into the common format). */
  private rewrite(d: Buffer): void {
    const text = this.partial + d.toString('latin1');
    const end = text.lastIndexOf('\n');
    this.partial = text.slice(end + 1);
    if (end < 0) return;
    const lines = text.slice(0, end).split('\n').map((l) => this.line!(l));
    this.emit(Buffer.from(lines.join('\n') + '\n', 'latin1'));
  }

  release(): void {
    if (this.held) this.out.write(Buffer.concat(this.held));
    this.held = null;
  }

  close(): void {
    // A last line the server did not end (it died mid-write) is still shown.
    if (this.line && this.partial) this.emit(Buffer.from(this.line(this.partial) + '\n', 'latin1'));
    this.partial = '';
    this.sock.destroy();
    try {
      closeSync(this.wfd);
    } catch {
      /* closed */
    }
  }
}

/** Runs a private server until it is stopped; resolves with the exit code. Start-up failures throw StartupError. */
export function runPrivateServer(o: PrivateServer): Promise<number> {
  return new PrivateRun(o).run();
}

class PrivateRun {
  private readonly tag: string;
  /** 0 running; 1 graceful stop asked; 2 fast; 3 KILL. */
  private stopLevel = 0;
  private stopTimer?: NodeJS.Timeout;
  /** --drain-delay's period, while the first stop signal waits for it. */
  private period?: DrainPeriod;
  private server?: ChildProcess;
  private exit?: { code: number | null; signal: NodeJS.Signals | null; error?: Error };
  private exited?: Promise<void>;
  private ready = false;
  private failure?: string;
  private launch?: Launch;
  private reloading: Promise<void> = Promise.resolve();
  private readonly teardown: ((fast: boolean) => unknown)[] = [];
  private readonly relays: Relay[] = [];
  private dir?: string;
  private watching?: Watching;

  constructor(private o: PrivateServer) {
    this.tag = `tsgi ${o.name}`;
  }

  private say = (line: string): void => console.error(`${this.tag}: ${line}`);

  private onStopSignal = (): void => this.requestStop(this.stopLevel + 1);

  private onHup = (): void => {
    if (!this.ready) return this.say('SIGHUP ignored while starting');
    this.reloading = this.reloading.then(() => this.reload());
  };

  /** Graceful (after the drain period, if any), then fast (after the graceful timeout and a margin, or a second signal), then KILL. */
  private requestStop(level: number): void {
    if (level <= this.stopLevel || this.exit) return;
    this.stopLevel = Math.min(level, 3);
    if (this.server?.pid === undefined) return; // not started yet: run() stops after the current step
    clearTimeout(this.stopTimer);
    const delay = this.o.drainDelayMs ?? 0;
    if (this.stopLevel === 1 && delay > 0 && this.ready) {
      // The server keeps serving, its health path at 503, until a load balancer has taken it out.
      try {
        this.launch?.draining?.();
      } catch (err) {
        this.say(`the drain period cannot tell the workers: ${startupReason(err)}`);
      }
      const period = (this.period = drainPeriod(delay, this.say));
      void period.over.then(() => this.stopLevel === 1 && this.signalStop());
      return;
    }
    this.period?.cut();
    this.signalStop();
  }

  /** Sends the signal of the current stop level, and arms the next level. */
  private signalStop(): void {
    const pid = this.server?.pid;
    if (pid === undefined || this.exit) return;
    const [graceful, fast] = this.o.stopSignals;
    const [sig, after] = this.stopLevel === 1 ? [graceful, this.o.gracefulMs + 10_000] : this.stopLevel === 2 ? [fast, FAST_STOP_MS] : (['SIGKILL', 0] as const);
    if (this.stopLevel === 1) this.launch?.stopping?.();
    try {
      // KILL goes to the whole process group (the server's own children too), the others to the server, which stops its children.
      process.kill(sig === 'SIGKILL' ? -pid : pid, sig);
    } catch {
      /* gone */
    }
    if (this.stopLevel < 3) this.stopTimer = setTimeout(() => this.requestStop(this.stopLevel + 1), after);
  }

  private async reload(): Promise<void> {
    if (this.stopLevel || !this.server || this.exit) return;
    try {
      const said = await this.launch!.reload(this.server);
      if (!this.stopLevel) this.say(said || 'reloaded');
    } catch (err) {
      // A stop during the reload ends it; that is no failure to report.
      if (!this.stopLevel) this.say(`reload failed: ${startupReason(err)}; still serving the previous handler`);
    }
  }

  private onHeld = (text: string): void => {
    const m = this.launch?.startFailure?.exec(text);
    if (!m || this.failure !== undefined) return;
    this.failure = m[1] ?? m[0];
    if (this.server?.pid !== undefined && !this.exit) this.server.kill(this.o.stopSignals[1]);
  };

  async run(): Promise<number> {
    process.on('SIGINT', this.onStopSignal);
    process.on('SIGTERM', this.onStopSignal);
    process.on('SIGHUP', this.onHup);
    try {
      await this.o.check?.();
      if (this.stopLevel) return 0;
      const port = await claimPort(this.o.host, this.o.port);
      const account = workerAccount(this.o.user, this.o.group);
      const site = this.makeSite(port, account);
      this.launch = await this.o.prepare(site);
      if (this.stopLevel) return 0;
      this.start(this.launch);
      if (!(await this.waitReady(site))) return 0;
      this.ready = true;
      for (const r of this.relays) r.release();
      const details = [`${this.o.name} pid ${this.server!.pid}`, `server root ${this.dir}`, ...(this.launch.details ?? [])];
      // Only now: whoever reads this line may signal us at once, and the handlers are in place.
      this.say(`ready on http://${site.authority}${this.o.location} (${details.join(', ')})`);
      if (this.o.watch && !this.stopLevel) {
        try {
          this.watching = await watchHandler({
            ...this.o.watch,
            say: this.say,
            reload: () => (this.reloading = this.reloading.then(() => this.reload())),
          });
        } catch (err) {
          this.say(`not watching: ${startupReason(err)}`);
        }
      }
      await this.exited;
      if (this.stopLevel) return 0;
      this.say(`${this.o.name} exited unexpectedly (${this.exit!.signal ?? `exit ${this.exit!.code}`})`);
      return 1;
    } finally {
      await this.finish();
    }
  }

  private makeSite(port: number, account: Account | undefined): Site {
    const who: Who = account ?? { uid: process.getuid!(), gid: process.getgid!() };
    const whoName = account ? `worker user '${account.name}'` : 'this user';
    const bases = this.o.serverRoot ? [resolve(this.o.serverRoot)] : [...new Set([tmpdir(), '/tmp'])];
    if (this.o.serverRoot && !existsSync(bases[0]!)) mkdirSync(bases[0]!, { recursive: true, mode: 0o755 });
    const base = bases.find((b) => existsSync(b) && !blockedOn(b, who));
    if (!base) {
      if (this.o.serverRoot) throw new StartupError(`${whoName} cannot reach ${blockedOn(bases[0]!, who)} (needs o+x); pass another --server-root`);
      throw new StartupError(`no temporary directory the ${whoName} can reach (tried ${bases.join(', ')}); pass --server-root DIR`);
    }
    // Only we and the workers' group get in: 0710, so the group reaches the paths it is told
    // about but cannot list them; 0700 when nobody else runs anything.
    const restrict = (path: string): void => {
      if (account) {
        chownSync(path, process.getuid!(), account.gid);
        chmodSync(path, 0o710);
      } else chmodSync(path, 0o700);
    };
    const dir = mkdtempSync(join(base, `tsgi-${this.o.name}-`));
    this.dir = dir;
    restrict(dir);
    return {
      dir,
      account,
      host: this.o.host,
      port,
      authority: hostPort(this.o.host, port),
      subdir: (name, mode) => {
        const p = join(dir, name);
        mkdirSync(p);
        if (mode === undefined) restrict(p);
        else chmodSync(p, mode);
        return p;
      },
      fifo: (name, to, opts) => {
        const p = join(dir, name);
        this.relays.push(new Relay(p, to === 'stdout' ? process.stdout : process.stderr, opts?.hold === true, this.onHeld, opts?.line));
        return p;
      },
      assertReadable: (file) => {
        if (!allowed(file, who, 4)) throw new StartupError(`${whoName} cannot read ${file}`);
      },
      assertRunnable: (file) => {
        const blocked = blockedOn(dirname(file), who) ?? (allowed(file, who, 5) ? undefined : file);
        if (blocked) throw new StartupError(`${whoName} cannot run ${file} (${blocked})`);
      },
      onTeardown: (fn) => void this.teardown.push(fn),
      say: this.say,
    };
  }

  private start(launch: Launch): void {
    // setpriv --pdeathsig: if we are killed outright, the server still gets SIGTERM instead of
    // lingering on the port. Its own process group: a terminal's Ctrl-C reaches only us, and we decide.
    const [cmd, args] = SETPRIV ? [SETPRIV, ['--pdeathsig', 'TERM', launch.command, ...launch.args]] : [launch.command, launch.args];
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], detached: true });
    this.server = child;
    this.exited = new Promise((res) => {
      child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        clearTimeout(this.stopTimer);
        res();
      });
      child.once('error', (error) => {
        this.exit = { code: null, signal: null, error };
        res();
      });
    });
  }

  /** True once it serves; false when a stop came first (it has then exited). Throws when it cannot start. */
  private async waitReady(site: Site): Promise<boolean> {
    const deadline = Date.now() + READY_WITHIN_MS;
    for (;;) {
      if (this.failure !== undefined || this.exit) {
        await this.exited;
        if (this.failure !== undefined) throw new StartupError(this.failure);
        if (this.exit!.error) throw new StartupError(`cannot start ${this.launch!.command}: ${this.exit!.error.message}`);
        if (this.stopLevel) return false;
        throw new StartupError(`${this.o.name} exited while starting (${this.exit!.signal ?? `exit ${this.exit!.code}`}); its messages are above`);
      }
      if (this.stopLevel) {
        await this.exited;
        return false;
      }
      if ((await portAnswers(site.host, site.port)) && (await (this.launch!.ready?.() ?? true)) && !this.exit && this.failure === undefined) return true;
      if (Date.now() > deadline) throw new StartupError(`${this.o.name} did not answer on ${site.authority} within ${READY_WITHIN_MS / 1000} s`);
      await sleep(50);
    }
  }

  /** Every way out: the server gone, reloads settled, the logs' last lines through, teardown, the temp dir removed. */
  private async finish(): Promise<void> {
    process.off('SIGINT', this.onStopSignal);
    process.off('SIGTERM', this.onStopSignal);
    process.off('SIGHUP', this.onHup);
    this.watching?.close();
    if (this.server && !this.exit) {
      // A start-up failure while it runs: stop it at once.
      this.requestStop(2);
      await this.exited;
    }
    clearTimeout(this.stopTimer);
    this.period?.cut();
    await this.reloading;
    if (this.relays.length) await sleep(100);
    for (const r of this.relays) {
      if (this.failure === undefined) r.release();
      r.close();
    }
    for (const fn of this.teardown.reverse()) {
      try {
        await fn(this.stopLevel >= 2);
      } catch (err) {
        this.say(`stopping: ${startupReason(err)}`);
      }
    }
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
  }
}
