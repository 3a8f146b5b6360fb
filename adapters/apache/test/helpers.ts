// Starts `tsgi apache run` as users do (a separate process) and stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const tsgiBin = join(repoRoot, 'cli/bin/tsgi.js');
export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

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

export interface RunningApache {
  url: string;
  port: number;
  /** The Apache parent (its children and the workers hang below it). */
  pid: number;
  root: string;
  proc: ChildProcess;
  /** Everything the CLI and Apache wrote to stderr (the error log) so far. */
  errors(): string;
  stop(): Promise<void>;
}

/** Runs the CLI and returns its exit code and output (for start-up failures). */
export function runCli(args: string[], timeoutMs = 60_000): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const p = spawn(process.execPath, [tsgiBin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    p.stdout.on('data', (d) => (stdout += d));
    p.stderr.on('data', (d) => (stderr += d));
    const t = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.on('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

export async function startApache(handler: string, args: string[] = [], env: Record<string, string> = {}): Promise<RunningApache> {
  const port = await freePort();
  // Apache passes its environment on to the workers.
  const proc = spawn(process.execPath, [tsgiBin, 'apache', 'run', handler, '--port', String(port), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  proc.stdout!.resume(); // the access log
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const m = await new Promise<RegExpExecArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tsgi apache run did not come up:\n${err}`)), 90_000);
    const check = () => {
      const hit = /serving (\S+) \(apache pid (\d+), server root (\S+)\)/.exec(err);
      if (hit) {
        clearTimeout(t);
        proc.stderr!.off('data', check);
        resolve(hit);
      }
    };
    proc.stderr!.on('data', check);
    proc.once('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`tsgi apache run exited with ${code}:\n${err}`));
    });
  });
  const running: RunningApache = {
    url: m[1]!,
    port,
    pid: Number(m[2]),
    root: m[3]!,
    proc,
    errors: () => err,
    async stop() {
      if (proc.exitCode !== null || proc.signalCode !== null) return;
      proc.kill('SIGTERM');
      const t = setTimeout(() => proc.kill('SIGKILL'), 30_000);
      await exited;
      clearTimeout(t);
    },
  };
  await waitFor(async () => (await fetch(running.url + '__tsgi_ready_probe').catch(() => null)) !== null);
  return running;
}

export async function waitFor(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    if (await cond()) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Direct children of a process. */
export function childrenOf(pid: number): number[] {
  const path = `/proc/${pid}/task/${pid}/children`;
  if (!existsSync(path)) return [];
  return readFileSync(path, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number);
}

export function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ').trim();
  } catch {
    return '';
  }
}

/** The Node workers of a `tsgi apache run` (children of the Apache parent running app.mjs). */
export function workerPids(apachePid: number): number[] {
  return childrenOf(apachePid).filter((p) => cmdline(p).includes('app.mjs'));
}

export function uidOf(pid: number): number {
  const m = /^Uid:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return Number(m?.[1]);
}
