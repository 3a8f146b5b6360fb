/**
 * A private PostgreSQL cluster for tests and benchmarks: initdb into a
 * temporary directory, started on a free loopback port, stopped and removed
 * after. Debian's postgresql package provides the binaries (the test command
 * installs it when missing). As root, the cluster runs as the `postgres`
 * account (initdb refuses root).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, chownSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freePort } from './testing.js';

export interface Postgres {
  /** postgres://tsgi@127.0.0.1:PORT/postgres (trust auth, loopback only). */
  url: string;
  port: number;
  /** The postmaster's pid (its backends are its children). */
  pid: number;
  /** Runs one SQL statement through psql and returns its unaligned output. */
  sql(statement: string): string;
  stop(): void;
}

/** The newest Debian PostgreSQL's bin directory. */
export function postgresBin(): string {
  const base = '/usr/lib/postgresql';
  const versions = existsSync(base) ? readdirSync(base).filter((v) => existsSync(join(base, v, 'bin', 'initdb'))) : [];
  if (versions.length === 0) throw new Error('PostgreSQL is not installed (apt-get install postgresql)');
  versions.sort((a, b) => Number(b) - Number(a));
  return join(base, versions[0]!, 'bin');
}

export async function startPostgres(): Promise<Postgres> {
  const bin = postgresBin();
  const asRoot = process.getuid?.() === 0;
  const account = asRoot ? 'postgres' : userInfo().username;
  const run = (cmd: string, args: string[]): string => {
    const [file, argv] = asRoot ? ['runuser', ['-u', account, '--', join(bin, cmd), ...args]] : [join(bin, cmd), args];
    const r = spawnSync(file, argv, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed: ${r.stderr || r.stdout}`);
    return r.stdout;
  };
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-pg-'));
  chmodSync(dir, 0o700);
  if (asRoot) {
    const ids = execFileSync('id', ['-u', account], { encoding: 'utf8' }).trim();
    const gid = execFileSync('id', ['-g', account], { encoding: 'utf8' }).trim();
    chownSync(dir, Number(ids), Number(gid));
  }
  const data = join(dir, 'data');
  const port = await freePort();
  try {
    run('initdb', ['-D', data, '-U', 'tsgi', '-A', 'trust', '-E', 'UTF8', '--no-sync']);
    run('pg_ctl', [
      '-D', data, '-l', join(dir, 'server.log'), '-w', '-t', '60',
      '-o', `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=300`,
      'start',
    ]);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  const url = `postgres://tsgi@127.0.0.1:${port}/postgres`;
  let stopped = false;
  return {
    url,
    port,
    pid: Number(readFileSync(join(data, 'postmaster.pid'), 'utf8').split('\n')[0]),
    sql: (statement) => run('psql', ['-h', '127.0.0.1', '-p', String(port), '-U', 'tsgi', '-d', 'postgres', '-At', '-c', statement]),
    stop() {
      if (stopped) return;
      stopped = true;
      try {
        run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
  };
}
