// Starts `tsgi nginx run ...` as a real process and waits for its ready line.
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request, Agent } from 'node:http';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, tsgiBin } from '@tsgi/conformance/testing';

export { freePort, runCli, sleep, tsgiBin, waitFor } from '@tsgi/conformance/testing';

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

export function workersState(dir: string): { pids: number[]; sockets: string[]; respawns: number } {
  return JSON.parse(readFileSync(resolve(dir, 'workers.json'), 'utf8'));
}

export interface LoadResult {
  ok: number;
  failed: number;
  statuses: Record<string, number>;
  errors: string[];
  retried: number;
}

/**
 * Bounded keep-alive load: `concurrency` loops of sequential GETs until stop().
 * A GET whose connection is reset before any response byte is retried once, as
 * HTTP clients may for idempotent requests (RFC 9110 9.2.2, RFC 9112 9.3.1):
 * an nginx worker that is shutting down after a reload closes the idle and
 * just-accepted connections it still holds without reading them, which is not
 * a failed request. Such retries are counted in `retried`.
 */
export function load(url: string, concurrency = 8): { stop(): Promise<LoadResult> } {
  const agent = new Agent({ keepAlive: true, maxSockets: concurrency });
  const r: LoadResult = { ok: 0, failed: 0, statuses: {}, errors: [], retried: 0 };
  let running = true;
  const once = (): Promise<void> =>
    new Promise((res) => {
      // Retries go out on a fresh connection: the pool may hold more sockets the old nginx worker is closing.
      const attempt = (retriesLeft: number): void => {
        const req = request(url, retriesLeft === 2 ? { agent } : { agent: false }, (resp) => {
          resp.resume();
          resp.on('end', () => {
            const k = String(resp.statusCode);
            r.statuses[k] = (r.statuses[k] ?? 0) + 1;
            if (resp.statusCode === 200) r.ok++;
            else r.failed++;
            res();
          });
          resp.on('error', (e) => {
            r.failed++;
            r.errors.push(e.message);
            res();
          });
        });
        req.on('error', (e: NodeJS.ErrnoException) => {
          if (retriesLeft > 0 && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) {
            r.retried++;
            return attempt(retriesLeft - 1);
          }
          r.failed++;
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
  };
}

