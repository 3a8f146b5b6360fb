// examples/postgres against a real PostgreSQL (a private cluster in a temp dir, on a free
// loopback port), served the way users run it on every host that can hold a pool.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fileURLToPath } from 'node:url';
import { startPostgres, type Postgres } from '@tsgi/conformance/postgres';
import { freePort, runCli, startTsgi, type RunningTsgi } from '@tsgi/conformance/testing';

const handler = fileURLToPath(new URL('../handler.ts', import.meta.url));

let db: Postgres;
beforeAll(async () => {
  db = await startPostgres();
});
afterAll(() => db?.stop());

const hosts: [string, string[]][] = [
  ['tsgi serve', ['serve']],
  ['tsgi serve --workers 2', ['serve', '--workers', '2']],
  ['tsgi apache run', ['apache', 'run']],
  ['tsgi nginx run --workers 2', ['nginx', 'run', '--workers', '2']],
];

/** Backend pids of the connections the app holds, as PostgreSQL sees them. */
function appConnections(): number {
  return Number(db.sql("select count(*) from pg_stat_activity where usename = 'tsgi' and application_name = '' and pid <> pg_backend_pid() and backend_type = 'client backend'"));
}

describe.each(hosts)('examples/postgres on %s', (_name, command) => {
  let srv: RunningTsgi | undefined;
  afterAll(async () => {
    await srv?.stop();
  });

  it('answers from the database on a pooled connection, then closes the pool on SIGTERM', { timeout: 120_000 }, async () => {
    const before = appConnections();
    const port = await freePort();
    const [cmd, ...rest] = command;
    const words = cmd === 'serve' ? ['serve', handler, ...rest] : [cmd!, rest[0]!, handler, ...rest.slice(1)];
    srv = await startTsgi([...words, '--port', String(port)], { DATABASE_URL: db.url });
    const backends = new Set<number>();
    for (let i = 0; i < 40; i++) {
      const r = await fetch(`${srv.url}/?n=${i}`);
      expect(r.status).toBe(200);
      const body = (await r.json()) as { n: number; backend: number };
      expect(body.n).toBe(i + 1);
      backends.add(body.backend);
    }
    // 40 requests, a handful of connections: the pool's, opened in init, not one per request.
    expect(backends.size).toBeLessThanOrEqual(8);
    expect(appConnections()).toBeGreaterThan(before);
    expect(await srv.stop()).toBe(0);
    // close() ended every pool: PostgreSQL sees none of the app's connections left.
    for (let i = 0; i < 50 && appConnections() > before; i++) await new Promise((r) => setTimeout(r, 100));
    expect(appConnections()).toBe(before);
  });
});

describe('examples/postgres start-up without a database', () => {
  it('tsgi serve fails with one line when DATABASE_URL points nowhere', async () => {
    const port = await freePort();
    const r = await runCli(['serve', handler, '--port', String(port)], 30_000, { ...process.env, DATABASE_URL: `postgres://tsgi@127.0.0.1:${await freePort()}/postgres` });
    expect(r.code).toBe(1);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/init failed: .*ECONNREFUSED|connect/);
  });
});

describe('examples/postgres in embedded nginx', () => {
  it('the njs build refuses it and points to workers mode', async () => {
    const r = await runCli(['nginx', 'build', handler, '-o', '/tmp/tsgi-pg-njs-build']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/--workers/);
  });
});
