#!/usr/bin/env node
// npm run bench -- db [--record]
// The seed's case: one query per request against a real PostgreSQL (a private cluster), served
//   cgi        a CGI script under Apache's mod_cgid: starts node and connects per hit (the seed's CGI)
//   serve      tsgi serve examples/postgres/handler.ts (a pg Pool opened in init)
//   apache     tsgi apache run, the same handler
//   workers    tsgi nginx run --workers 1, the same handler
// plus pgbench with and without -C (a new connection per transaction), the database's own figure
// for what a connect costs. The servers and PostgreSQL are pinned to core 0, wrk and pgbench to
// core 1. Interleaved rounds, median. Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (8).
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort, interleave, LOAD_CPU, machineLine, recordSection, SERVER_CPU, startPinned, us } from './lib.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const tsgi = join(repo, 'cli/bin/tsgi.js');
const handler = join(repo, 'examples/postgres/handler.ts');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const conns = Number(process.env.BENCH_CONNECTIONS ?? 8);
const M = '/usr/lib/apache2/modules';

/** The CGI program: connect, one query, disconnect, print. Bundled with pg so www-data can read it. */
const CGI_SOURCE = `import pg from 'pg';
const n = Number(new URLSearchParams(process.env.QUERY_STRING ?? '').get('n') ?? '1');
const client = new pg.Client({ connectionString: process.env.DATABASE_URL });
await client.connect();
const { rows } = await client.query('select $1::int + 1 as n, pg_backend_pid() as backend', [n]);
await client.end();
const body = JSON.stringify(rows[0]);
process.stdout.write('Content-Type: application/json\\r\\nContent-Length: ' + Buffer.byteLength(body) + '\\r\\n\\r\\n' + body);
`;

function cgiApacheConf(dir, port, databaseUrl, user) {
  return `ServerRoot ${dir}
Listen 127.0.0.1:${port}
ServerName localhost
PidFile ${dir}/run/httpd.pid
DefaultRuntimeDir ${dir}/run
ErrorLog ${dir}/error.log
LogLevel warn
${user ? `User ${user}\nGroup ${user}\n` : ''}LoadModule mpm_event_module ${M}/mod_mpm_event.so
LoadModule authz_core_module ${M}/mod_authz_core.so
LoadModule alias_module ${M}/mod_alias.so
LoadModule cgid_module ${M}/mod_cgid.so
LoadModule env_module ${M}/mod_env.so
StartServers 1
ServerLimit 1
ThreadsPerChild 64
MaxRequestWorkers 64
ScriptSock ${dir}/run/cgid.sock
SetEnv DATABASE_URL ${databaseUrl}
ScriptAlias /cgi ${dir}/cgi/db.cgi
<Directory ${dir}/cgi>
  Require all granted
</Directory>
`;
}

function pgbench(db, connect) {
  const dir = mkdtempSync('/tmp/tsgi-pgbench-');
  const script = join(dir, 'q.sql');
  writeFileSync(script, '\\set n random(1, 1000)\nselect :n::int + 1 as n, pg_backend_pid() as backend;\n');
  try {
    const out = execFileSync(
      'taskset',
      ['-c', LOAD_CPU, 'pgbench', '-n', '-h', '127.0.0.1', '-p', String(db.port), '-U', 'tsgi', '-c', String(conns), '-j', '1', '-T', String(seconds), '-f', script, ...(connect ? ['-C'] : []), 'postgres'],
      { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const tps = Number(/tps = ([\d.]+)/.exec(out)?.[1] ?? 0);
    const lat = Number(/latency average = ([\d.]+) ms/.exec(out)?.[1] ?? NaN);
    return { tps, lat };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

export async function run(argv = []) {
  const record = argv.includes('--record');
  const { startPostgres } = await import('@tsgi/conformance/postgres');
  const { build } = await import('esbuild');
  const db = await startPostgres();
  // Backends fork from the postmaster and inherit its core.
  spawnSync('taskset', ['-a', '-p', '-c', SERVER_CPU, String(db.pid)], { stdio: 'ignore' });
  const root = process.getuid?.() === 0;
  const dir = mkdtempSync('/tmp/tsgi-bench-db-');
  chmodSync(dir, 0o755);
  const running = [];
  try {
    mkdirSync(join(dir, 'run'), { recursive: true });
    mkdirSync(join(dir, 'cgi'), { recursive: true });
    writeFileSync(join(dir, 'cgi-src.mjs'), CGI_SOURCE);
    await build({
      entryPoints: [join(dir, 'cgi-src.mjs')],
      outfile: join(dir, 'cgi/db.mjs'),
      bundle: true,
      platform: 'node',
      format: 'esm',
      nodePaths: [join(repo, 'node_modules')],
      banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
      logLevel: 'error',
    });
    writeFileSync(join(dir, 'cgi/db.cgi'), `#!/bin/sh\nexec ${process.execPath} ${join(dir, 'cgi/db.mjs')}\n`);
    chmodSync(join(dir, 'cgi/db.cgi'), 0o755);
    spawnSync('chmod', ['-R', 'a+rX', dir]);

    const env = { DATABASE_URL: db.url };
    const cgiPort = await freePort();
    writeFileSync(join(dir, 'cgi.conf'), cgiApacheConf(dir, cgiPort, db.url, root ? 'www-data' : undefined));
    const targets = [
      { name: 'cgi', label: 'CGI (mod_cgid: node + connect per hit)', port: cgiPort, cmd: '/usr/sbin/apache2', args: ['-DFOREGROUND', '-d', dir, '-f', join(dir, 'cgi.conf')], path: '/cgi?n=7' },
      { name: 'serve', label: 'tsgi serve (pool)', cmd: process.execPath, args: [tsgi, 'serve', handler, '--no-access-log'], path: '/?n=7' },
      { name: 'apache', label: 'mod_tsgi, tsgi apache run (pool)', cmd: process.execPath, args: [tsgi, 'apache', 'run', handler, '--processes', '1'], path: '/?n=7' },
      { name: 'workers', label: 'nginx workers mode, tsgi nginx run --workers 1 (pool)', cmd: process.execPath, args: [tsgi, 'nginx', 'run', handler, '--workers', '1'], path: '/?n=7' },
    ];
    for (const t of targets) {
      t.port ??= await freePort();
      const args = t.name === 'cgi' ? t.args : [...t.args, '--port', String(t.port)];
      t.url = `http://127.0.0.1:${t.port}${t.path}`;
      running.push(await startPinned(t.cmd, args, { url: t.url, env }));
      const r = await fetch(t.url);
      const body = await r.json();
      if (r.status !== 200 || body.n !== 8) throw new Error(`bench db: ${t.name} answered ${r.status} ${JSON.stringify(body)}`);
    }
    console.error(`bench db: ${targets.length} targets answer; ${rounds} rounds of ${seconds} s, wrk -c${conns}`);
    const res = await interleave(targets, { rounds, warmup: 1, duration: seconds, connections: conns, timeout: 10 });
    const pgPooled = pgbench(db, false);
    const pgConnect = pgbench(db, true);
    const cgi = res.cgi;
    const rows = targets.map((t) => {
      const r = res[t.name];
      return `| ${t.label} | ${Math.round(r.median).toLocaleString('en-US')} | ${r.p50Median.toFixed(2)} ms | ${r.p99Median.toFixed(2)} ms | ${us(r.cpuMedian)} | ${(r.median / cgi.median).toFixed(0)}x | ${(cgi.cpuMedian / r.cpuMedian).toFixed(0)}x | ${r.socketErrors + r.non2xx} |`;
    });
    const verdict = targets
      .filter((t) => t.name !== 'cgi')
      .map((t) => `${t.name} ${(res[t.name].median / cgi.median).toFixed(0)}x (${res[t.name].median / cgi.median >= 300 ? 'met' : 'NOT met'})`)
      .join(', ');
    const body = [
      `${machineLine()}, PostgreSQL (private cluster, fsync off, trust auth over 127.0.0.1 TCP). The servers and PostgreSQL ` +
        `pinned to core ${SERVER_CPU}, wrk -t1 -c${conns} and pgbench on core ${LOAD_CPU}; ${rounds} interleaved rounds of ${seconds} s, median. ` +
        `Query: \`select $1::int + 1, pg_backend_pid()\`. The tsgi rows run examples/postgres/handler.ts as users do ` +
        `(their access logs on); the CGI row has none. Server CPU per request includes PostgreSQL's.`,
      '',
      '| target | req/s | p50 | p99 | server CPU/req | vs CGI (req/s) | vs CGI (CPU) | errors |',
      '|---|---|---|---|---|---|---|---|',
      ...rows,
      '',
      `pgbench, the same query, ${conns} clients: ${Math.round(pgPooled.tps).toLocaleString('en-US')} tps on kept connections, ` +
        `${Math.round(pgConnect.tps).toLocaleString('en-US')} tps with a new connection per query (-C), both with the database's core saturated: ` +
        `a connect costs it about ${(1000 / pgConnect.tps - 1000 / pgPooled.tps).toFixed(2)} ms of CPU per query.`,
      '',
      `Target every tsgi host >= 300x the CGI path (req/s): ${verdict}. An I/O-bound app narrows such gaps: ` +
        `here the query is trivial, so the figures show what the per-hit start-up and connect cost.`,
    ].join('\n');
    console.log('\n## Database (PostgreSQL)\n\n' + body + '\n');
    if (record) {
      recordSection('Database (PostgreSQL)', body);
      console.error('bench db: recorded in bench/README.md');
    }
  } finally {
    for (const r of running) await r.stop();
    db.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}
