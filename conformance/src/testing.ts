/**
 * Test plumbing every package's tests share: free ports, waiting, running the
 * `tsgi` command as users do, and reading /proc. One copy, imported as
 * `@tsgi/conformance/testing`.
 */
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createRequire } from 'node:module';
import { createServer } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export { noise } from './cases/shared.js';

/**
 * The `tsgi` command: the `tsgi` package's bin/tsgi.js as this package resolves it (in this checkout
 * cli/, in a project that installed both, node_modules/tsgi), else this checkout's cli/bin/tsgi.js.
 */
export const tsgiBin: string = (() => {
  try {
    return join(dirname(createRequire(import.meta.url).resolve('tsgi')), '..', 'bin', 'tsgi.js');
  } catch {
    return fileURLToPath(new URL('../../cli/bin/tsgi.js', import.meta.url));
  }
})();

/** A port nothing listens on right now (127.0.0.1). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => resolve(port));
    });
  });
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Polls `cond` every 50 ms; throws after `timeoutMs` naming `what`. */
export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** A `tsgi` command started by launchCli: the process, and its outcome once it has exited. */
export interface LaunchedCli {
  proc: ChildProcess;
  done: Promise<CliResult>;
}

/** Starts `tsgi <args>` (killed after `timeoutMs`); `done` resolves with its output once it exited. */
export function launchCli(args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): LaunchedCli {
  const proc = spawn(process.execPath, [tsgiBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
  const done = new Promise<CliResult>((resolve) => {
    let stdout = '';
    let stderr = '';
    proc.stdout!.on('data', (d) => (stdout += d));
    proc.stderr!.on('data', (d) => (stderr += d));
    const t = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    proc.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
  return { proc, done };
}

/** Runs `tsgi <args>` to completion (killed after `timeoutMs`). */
export function runCli(args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<CliResult> {
  return launchCli(args, timeoutMs, env).done;
}

/** Direct children of a process. */
export function childrenOf(pid: number): number[] {
  const path = `/proc/${pid}/task/${pid}/children`;
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

/** Every process below `pid` (children, theirs, ...), as they are now. */
export function descendantsOf(pid: number): number[] {
  const out: number[] = [];
  for (let todo = childrenOf(pid); todo.length; ) {
    const p = todo.pop()!;
    out.push(p);
    todo.push(...childrenOf(p));
  }
  return out;
}

/** A process's command line, '' when it is gone. */
export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** A process's real uid. */
export function uidOf(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}

/** A process's environment (root or same user only). */
export function environOf(pid: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const kv of readFileSync(`/proc/${pid}/environ`, 'utf8').split('\0')) {
    const eq = kv.indexOf('=');
    if (eq > 0) out[kv.slice(0, eq)] = kv.slice(eq + 1);
  }
  return out;
}

export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The live processes whose command line contains `text` (a temp dir's path, say). */
export function pidsMentioning(text: string): number[] {
  return readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d) && Number(d) !== process.pid)
    .filter((d) => cmdline(Number(d)).includes(text))
    .map(Number);
}

/** Creates a system user without a home (root only); one left by an earlier run is replaced. */
export function createLocalUser(name: string): void {
  removeLocalUser(name);
  execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', name]);
}

export function removeLocalUser(name: string): void {
  spawnSync('userdel', [name], { stdio: 'ignore' });
}

/** Runs an ES module script as `user` (root only); it prints one JSON line, which is returned parsed. */
export function runAsUser(user: string, script: string): unknown {
  const id = (flag: string): number => Number(execFileSync('id', [flag, user], { encoding: 'utf8' }).trim());
  const [uid, gid] = [id('-u'), id('-g')];
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { uid, gid, cwd: '/', encoding: 'utf8', timeout: 20_000 });
  if (r.status !== 0) throw new Error(`script as ${user} failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

export interface LoadResult {
  ok: number;
  failed: number;
  statuses: Record<string, number>;
  errors: string[];
  retried: number;
  /** Bodies seen, counted (only when `countBodies`). */
  bodies: Record<string, number>;
  /** The URLs of the failed requests. */
  failedUrls: string[];
  /** The URLs retried after a reset connection (a client's retry, not a server's). */
  retriedUrls: string[];
}

/**
 * Bounded keep-alive load: `concurrency` loops of sequential GETs until stop().
 * A GET whose connection is reset before any response byte is retried once, as
 * HTTP clients may for idempotent requests (RFC 9110 9.2.2, RFC 9112 9.3.1): a
 * server process that is shutting down after a reload closes the idle and
 * just-accepted connections it still holds without reading them, which is not
 * a failed request. Such retries are counted in `retried`.
 */
export function load(target: string | ((n: number) => string), concurrency = 8, countBodies = false): { stop(): Promise<LoadResult>; peek(): LoadResult } {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const r: LoadResult = { ok: 0, failed: 0, statuses: {}, errors: [], retried: 0, bodies: {}, failedUrls: [], retriedUrls: [] };
  let running = true;
  let n = 0;
  const once = (): Promise<void> =>
    new Promise((res) => {
      const url = typeof target === 'string' ? target : target(++n);
      // Retries go out on a fresh connection: the pool may hold more sockets the old process is closing.
      const attempt = (retriesLeft: number): void => {
        const req = request(url, retriesLeft === 2 ? { agent } : { agent: false }, (resp) => {
          let body = '';
          if (countBodies) resp.setEncoding('utf8').on('data', (d: string) => (body += d));
          else resp.resume();
          resp.on('end', () => {
            const k = String(resp.statusCode);
            r.statuses[k] = (r.statuses[k] ?? 0) + 1;
            if (countBodies) r.bodies[body] = (r.bodies[body] ?? 0) + 1;
            if (resp.statusCode === 200) r.ok++;
            else {
              r.failed++;
              r.failedUrls.push(url);
            }
            res();
          });
          resp.on('error', (e) => {
            r.failed++;
            r.failedUrls.push(url);
            r.errors.push(e.message);
            res();
          });
        });
        req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
        req.on('error', (e: NodeJS.ErrnoException) => {
          if (retriesLeft > 0 && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) {
            r.retried++;
            r.retriedUrls.push(url);
            return attempt(retriesLeft - 1);
          }
          r.failed++;
          r.failedUrls.push(url);
          r.errors.push(`${e.code ?? ''} ${e.message}`);
          res();
        });
        req.end();
      };
      attempt(2);
    });
  const loops = Array.from({ length: concurrency }, async () => {
    while (running) await once();
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return r;
    },
    /** The result so far, while the load runs. */
    peek: () => r,
  };
}

/** How a process ended. */
export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A `tsgi` command started by startCli: its output so far, and how to stop it. */
export interface RunningCli {
  proc: ChildProcess;
  /** The first capture group of `ready` (the URL, say). */
  ready: string;
  stdout(): string;
  stderr(): string;
  /** Resolves with how it ended. */
  exited: Promise<Exit>;
  /** SIGTERM (SIGKILL after `graceMs`); resolves with the exit code, or the signal's name. */
  stop(graceMs?: number): Promise<number | string>;
  /** Sends `signal` and waits for the end (SIGKILL after `graceMs`). */
  kill(signal: NodeJS.Signals, graceMs?: number): Promise<Exit>;
}

/**
 * Starts `tsgi <args>` and resolves once stdout or stderr matches `ready`
 * (its first group is returned); rejects with the output (the error carries
 * code, signal, stdout and stderr) if the command exits first or `timeoutMs` passes.
 * `bin`: another `tsgi` script than this checkout's (one installed from the tarballs).
 */
export function startCli(
  args: string[],
  ready: RegExp,
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string; bin?: string } = {},
): Promise<RunningCli> {
  const proc = spawn(process.execPath, [opts.bin ?? tsgiBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  let out = '';
  let err = '';
  const exited = new Promise<Exit>((r) => proc.once('exit', (code, signal) => r({ code, signal })));
  const kill = async (signal: NodeJS.Signals, graceMs = 20_000): Promise<Exit> => {
    if (proc.exitCode === null && proc.signalCode === null) {
      proc.kill(signal);
      const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      void exited.then(() => clearTimeout(t));
    }
    return exited;
  };
  const running = (m: string): RunningCli => ({
    proc,
    ready: m,
    stdout: () => out,
    stderr: () => err,
    exited,
    kill,
    stop: (graceMs = 20_000) => kill('SIGTERM', graceMs).then((e) => e.code ?? e.signal ?? -1),
  });
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`tsgi ${args.join(' ')}: not ready after ${timeoutMs} ms\n${out}${err}`));
    }, timeoutMs);
    const check = (): void => {
      const m = ready.exec(out) ?? ready.exec(err);
      if (m) {
        clearTimeout(t);
        resolve(running(m[1] ?? m[0]));
      }
    };
    proc.stdout!.on('data', (d) => {
      out += d;
      check();
    });
    proc.stderr!.on('data', (d) => {
      err += d;
      check();
    });
    void exited.then(({ code, signal }) => {
      clearTimeout(t);
      const e = new Error(`tsgi ${args.join(' ')} exited (${signal ?? code}) before it was ready:\n${out}${err}`);
      reject(Object.assign(e, { code, signal, stdout: out, stderr: err }));
    });
  });
}

/** What every `tsgi` command prints once it answers: `tsgi <command>: ready on URL (...)`. */
export const READY_LINE = /^tsgi \w+: ready on (https?:\/\/[^\s/]+)/m;

/** A `tsgi` command running as users start it, known by its base URL. */
export interface RunningTsgi extends RunningCli {
  /** The base URL from its ready line (no trailing slash). */
  url: string;
}

/** startCli with the ready line every `tsgi` command prints; `env` adds to this process's environment. */
export async function startTsgi(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 90_000): Promise<RunningTsgi> {
  const r = await startCli(args, READY_LINE, { env: { ...process.env, ...env }, timeoutMs });
  return Object.assign(r, { url: r.ready });
}
