// Starts `tsgi nginx run ...` as a real process and waits for its ready line.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, tsgiBin } from '@tsgi/conformance/testing';

export { freePort, load, runCli, sleep, tsgiBin, waitFor, type LoadResult } from '@tsgi/conformance/testing';

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, '..', '..', '..');
export const fixturesDir = resolve(here, 'fixtures');

export interface Running {
  url: string;
  port: number;
  /** The generated nginx.conf and its temp dir. */
  conf: string;
  dir: string;
  proc: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  stop(): Promise<number | null>;
}

export async function startNginx(handler: string, extra: string[] = [], env: NodeJS.ProcessEnv = process.env): Promise<Running> {
  const port = await freePort();
  const proc = spawn(process.execPath, [tsgiBin, 'nginx', 'run', handler, '--port', String(port), ...extra], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env,
  });
  let out = '';
  let err = '';
  // Always drain stdout (the access log): a full pipe would stall nginx.
  proc.stdout!.on('data', (d) => {
    out += d;
    if (out.length > 1_000_000) out = out.slice(-200_000);
  });
  const ready = await new Promise<RegExpMatchArray>((res, rej) => {
    const t = setTimeout(() => rej(new Error(`tsgi nginx run did not get ready:\n${err}`)), 90_000);
    proc.stderr!.on('data', (d) => {
      err += d;
      const m = /ready on (http:\/\/\S+?)\/?\S* \(.*conf (\S+)\)/.exec(err);
      if (m) {
        clearTimeout(t);
        res(m);
      }
    });
    proc.once('exit', (code) => {
      clearTimeout(t);
      rej(new Error(`tsgi nginx run exited (${code}) before ready:\n${err}`));
    });
  });
  const conf = ready[2]!;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    conf,
    dir: dirname(conf),
    proc,
    stdout: () => out,
    stderr: () => err,
    stop: () =>
      new Promise((res) => {
        if (proc.exitCode !== null) return res(proc.exitCode);
        const t = setTimeout(() => proc.kill('SIGKILL'), 20_000);
        proc.once('exit', (code) => {
          clearTimeout(t);
          res(code);
        });
        proc.kill('SIGTERM');
      }),
  };
}

/** The supervisor's state file (written beside and renamed into place, so never seen half-written). */
export function workersState(dir: string): { pids: number[]; sockets: string[]; respawns: number } {
  return JSON.parse(readFileSync(resolve(dir, 'workers.json'), 'utf8'));
}


