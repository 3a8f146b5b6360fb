// Starts `tsgi apache run` as users do (a separate process) and stops it.
import { spawn, type ChildProcess } from 'node:child_process';
import { cpSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DEBIAN_MODULES } from '../src/config.js';
import { childrenOf, cmdline, freePort, tsgiBin, waitFor } from '@tsgi/conformance/testing';

export { childrenOf, cmdline, freePort, runCli, tsgiBin, uidOf, waitFor } from '@tsgi/conformance/testing';

export const repoRoot = fileURLToPath(new URL('../../../', import.meta.url));
export const fixture = (name: string): string => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));

export interface RunningApache {
  url: string;
  port: number;
  /** The Apache parent (its children and the workers hang below it). */
  pid: number;
  root: string;
  proc: ChildProcess;
  /** Everything the CLI and Apache wrote to stderr (the error log) so far. */
  errors(): string;
  /** The access log lines printed so far (stdout). */
  access(): string;
  stop(): Promise<void>;
}


export async function startApache(handler: string, args: string[] = [], env: Record<string, string> = {}): Promise<RunningApache> {
  const port = await freePort();
  // Apache passes its environment on to the workers.
  const proc = spawn(process.execPath, [tsgiBin, 'apache', 'run', handler, '--port', String(port), ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...env },
  });
  let err = '';
  let out = '';
  proc.stdout!.on('data', (d) => (out += d)); // the access log
  proc.stderr!.on('data', (d) => (err += d));
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  const m = await new Promise<RegExpExecArray>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`tsgi apache run did not come up:\n${err}`)), 90_000);
    const check = () => {
      const hit = /ready on (\S+) \(apache pid (\d+), server root ([^,)\s]+)/.exec(err);
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
    access: () => out,
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




/** The Node workers of a `tsgi apache run` (children of the Apache parent running app.mjs). */
export function workerPids(apachePid: number): number[] {
  return childrenOf(apachePid).filter((p) => cmdline(p).includes('app.mjs'));
}

/** Stops an Apache started from apacheConf (SIGTERM, its exit awaited) and removes its server root. */
export async function stopPlain(apache: ChildProcess | undefined, root: string | undefined): Promise<void> {
  if (apache && apache.exitCode === null && apache.signalCode === null) {
    apache.kill('SIGTERM');
    await new Promise((r) => apache.once('exit', r));
  }
  if (root) rmSync(root, { recursive: true, force: true });
}

/** The MPM lines of apacheConf: event (one child of 16 threads), or prefork (Debian's MPM beside mod_php: 2 to 16 processes, one connection each). */
const MPM = {
  event: `LoadModule mpm_event_module ${DEBIAN_MODULES}/mod_mpm_event.so
StartServers 1
ServerLimit 1
ThreadsPerChild 16
MaxRequestWorkers 16`,
  prefork: `LoadModule mpm_prefork_module ${DEBIAN_MODULES}/mod_mpm_prefork.so
StartServers 2
MinSpareServers 1
MaxSpareServers 4
ServerLimit 16
MaxRequestWorkers 16`,
};

/** A plain Apache config (Debian modules, www-data children, logs in `root`) around `body`. */
export function apacheConf(root: string, port: number, so: string, body: string, mpm: keyof typeof MPM = 'event'): string {
  mkdirSync(join(root, 'run'), { recursive: true });
  return `ServerRoot ${root}
Listen 127.0.0.1:${port}
ServerName localhost
PidFile ${root}/httpd.pid
DefaultRuntimeDir ${root}/run
${MPM[mpm]}
LoadModule authz_core_module ${DEBIAN_MODULES}/mod_authz_core.so
LoadModule authn_core_module ${DEBIAN_MODULES}/mod_authn_core.so
LoadModule authz_user_module ${DEBIAN_MODULES}/mod_authz_user.so
LoadModule alias_module ${DEBIAN_MODULES}/mod_alias.so
LoadModule tsgi_module ${so}
User www-data
Group www-data
ErrorLog ${root}/error.log
LogLevel info
LogFormat "%>s %L %u %r" id
CustomLog ${root}/access.log id
${body}
`;
}

/**
 * @tsgi/apache's worker with what it imports (@tsgi/core, esbuild, ws) copied under `dir`, as an
 * application would have them installed: conf-mode workers (www-data) must read it, and a CI
 * checkout may sit in a 0700 directory. Returns the copied dist/worker.js.
 */
export function installWorker(dir: string): string {
  const copy = (from: string, to: string) => cpSync(join(repoRoot, from), join(dir, to), { recursive: true, dereference: true });
  copy('adapters/apache/package.json', 'node_modules/@tsgi/apache/package.json');
  copy('adapters/apache/dist', 'node_modules/@tsgi/apache/dist');
  copy('core/package.json', 'node_modules/@tsgi/core/package.json');
  copy('core/dist', 'node_modules/@tsgi/core/dist');
  copy('node_modules/esbuild', 'node_modules/esbuild');
  copy('node_modules/ws', 'node_modules/ws'); // @tsgi/core's WebSocket kit
  for (const p of readdirSync(join(repoRoot, 'node_modules/@esbuild'))) copy(`node_modules/@esbuild/${p}`, `node_modules/@esbuild/${p}`);
  return join(dir, 'node_modules/@tsgi/apache/dist/worker.js');
}
