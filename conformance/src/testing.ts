/**
 * Test plumbing every package's tests share: free ports, waiting, running the
 * `tsgi` command as users do, and reading /proc. One copy, imported as
 * `@tsgi/conformance/testing`.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

export { noise } from './cases/shared.js';

/** The `tsgi` command of this checkout (cli/bin/tsgi.js). */
export const tsgiBin: string = fileURLToPath(new URL('../../cli/bin/tsgi.js', import.meta.url));

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

/** Runs `tsgi <args>` to completion (killed after `timeoutMs`). */
export function runCli(args: string[], timeoutMs = 60_000, env?: NodeJS.ProcessEnv): Promise<CliResult> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [tsgiBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: env ?? process.env });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code, signal) => {
      clearTimeout(t);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** Direct children of a process. */
export function childrenOf(pid: number): number[] {
  const path = `/proc/${pid}/task/${pid}/children`;
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
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

/** A `tsgi` command started by startCli: its output so far, and how to stop it. */
export interface RunningCli {
  proc: ChildProcess;
  /** The first capture group of `ready` (the URL, say). */
  ready: string;
  stdout(): string;
  stderr(): string;
  /** SIGTERM (SIGKILL after `graceMs`); resolves with the exit code, or the signal's name. */
  stop(graceMs?: number): Promise<number | string>;
}

/**
 * Starts `tsgi <args>` and resolves once stdout or stderr matches `ready`
 * (its first group is returned); rejects with the output if the command
 * exits first or `timeoutMs` passes.
 */
export function startCli(
  args: string[],
  ready: RegExp,
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number; cwd?: string } = {},
): Promise<RunningCli> {
  const proc = spawn(process.execPath, [tsgiBin, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
    cwd: opts.cwd,
  });
  let out = '';
  let err = '';
  const exited = new Promise<number | string>((r) => proc.once('exit', (code, sig) => r(code ?? sig ?? -1)));
  const running = (m: string): RunningCli => ({
    proc,
    ready: m,
    stdout: () => out,
    stderr: () => err,
    stop(graceMs = 20_000) {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        const t = setTimeout(() => proc.kill('SIGKILL'), graceMs);
        void exited.then(() => clearTimeout(t));
      }
      return exited;
    },
  });
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => {
      proc.kill('SIGKILL');
      reject(new Error(`tsgi ${args.join(' ')}: not ready after ${opts.timeoutMs ?? 60_000} ms\n${out}${err}`));
    }, opts.timeoutMs ?? 60_000);
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
    void exited.then((code) => {
      clearTimeout(t);
      reject(new Error(`tsgi ${args.join(' ')} exited (${code}) before it was ready:\n${out}${err}`));
    });
  });
}
