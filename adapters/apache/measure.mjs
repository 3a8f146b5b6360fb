#!/usr/bin/env node
// Per-request cost of mod_tsgi in instructions (callgrind), for before/after comparisons that a
// shared, CPU-stealing machine cannot give by req/s. Two rows: GET of bench/handlers/hello-fast.ts,
// and a 1 KiB POST echoed back (the body path); one keep-alive connection, one request at a time.
//   apache  one Apache (-X: one process with the event MPM's threads) under callgrind, counting only
//           in a window of N requests after WARM (callgrind_control -i on, then a dump);
//   worker  its one Node worker under callgrind too (TsgiDaemon node= a wrapper), --single-threaded
//           (no concurrent compiler or GC threads): the difference of its whole-life counts in a run
//           of WARM + N requests and one of WARM requests, divided by N (a Node process could not be
//           dumped on demand here).
// Both run as www-data (Apache without a User directive): vgdb, which callgrind_control drives,
// reaches them only from the same user. Only user-space instructions; syscalls: strace -c.
// usage (root; valgrind, Debian apache2; after npm run build): node adapters/apache/measure.mjs
// Env: N (3000), WARM (2000), ONLY (get|post), DEBUG (keep the dumps).
import { execFile, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));
const { serverConf } = await import(join(here, 'dist/config.js'));
const { bundleHandler, modulePath } = await import(join(here, 'dist/cli.js'));
const { freePort } = await import(join(here, '../../bench/lib.mjs'));
const N = Number(process.env.N ?? 3000);
const WARM = Number(process.env.WARM ?? 2000);
const HELLO = 'Hello, world!\n';
const ECHO = `export default { async fetch(request) {
  return new Response(await request.text(), { headers: { 'content-type': 'application/json' } });
} };
`;
// 1 KiB of JSON
const JSON_BODY = JSON.stringify({ items: Array.from({ length: 40 }, (_, i) => ({ id: i, name: `item-${i}` })) }).padEnd(1024, ' ');

const VGDB = (dir) => `--vgdb-prefix=${dir}/vgdb`;
let vgdbPrefix = '';
const cgControl = (args) =>
  new Promise((resolve, reject) =>
    // as www-data, like its targets: vgdb run by root does not reach them
    execFile('setpriv', ['--reuid=www-data', '--regid=www-data', '--init-groups', 'callgrind_control', vgdbPrefix, ...args], { timeout: 120_000 }, (err, out) => (err ? reject(new Error(`callgrind_control ${args.join(' ')}: ${err.message} ${out}`)) : resolve(out))),
  );

const totals = (file) => Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(file, 'utf8'))?.[1] ?? 0);

/** One request on `s`; resolves with the body once Content-Length bytes of it arrived. */
function request(s, text) {
  return new Promise((resolve, reject) => {
    let buf = '';
    const on = (d) => {
      buf += d;
      const end = buf.indexOf('\r\n\r\n');
      if (end < 0) return;
      const len = Number(/\r\ncontent-length: *(\d+)/i.exec(buf.slice(0, end))?.[1] ?? NaN);
      if (!(len >= 0)) return reject(new Error(`no Content-Length: ${buf.slice(0, end)}`));
      if (buf.length - end - 4 < len) return;
      s.off('data', on);
      if (!buf.startsWith('HTTP/1.1 200 ')) return reject(new Error(buf.slice(0, end)));
      resolve(buf.slice(end + 4));
    };
    s.on('data', on);
    s.write(text);
  });
}

/** `n` requests on one keep-alive connection, one at a time; checks every body. */
async function load(port, row, n) {
  const s = net.connect(port, '127.0.0.1');
  await new Promise((r) => s.once('connect', r));
  s.setEncoding('latin1');
  for (let i = 0; i < n; i++) {
    const body = await request(s, row.request(port));
    if (body !== row.expect) throw new Error(`${row.name}: unexpected body ${JSON.stringify(body.slice(0, 80))}`);
  }
  s.destroy();
}

const rows = [
  { name: 'GET hello', path: '/tsgi', expect: HELLO, request: (port) => `GET /tsgi HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n` },
  {
    name: 'POST 1 KiB echo',
    path: '/echo',
    expect: JSON_BODY,
    request: (port) =>
      `POST /echo HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${JSON_BODY.length}\r\n\r\n${JSON_BODY}`,
  },
];

/** The pids of the processes whose command line contains `needle`. */
function pidsWith(needle) {
  const out = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'latin1').includes(needle)) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

const dir = mkdtempSync(join(tmpdir(), 'tsgi-measure-apache-'));
chmodSync(dir, 0o777);
vgdbPrefix = VGDB(dir);
for (const d of ['run', 'htdocs']) mkdirSync(join(dir, d), { mode: 0o777 });
chmodSync(join(dir, 'run'), 0o777);
const wrapper = join(dir, 'node-cg.sh');
writeFileSync(
  wrapper,
  `#!/bin/sh\nexec valgrind --tool=callgrind ${VGDB(dir)} --callgrind-out-file=${dir}/cg-worker.%p.out ${process.execPath} --single-threaded "$@"\n`,
);
chmodSync(wrapper, 0o755);
// A copy in the run's directory: the build cache (~/.cache/tsgi of root) is no place www-data may read.
const so = join(dir, 'mod_tsgi.so');
copyFileSync(await modulePath(), so);
writeFileSync(join(dir, 'echo.ts'), ECHO);
rows[0].handler = join(here, '../../bench/handlers/hello-fast.ts');
rows[1].handler = join(dir, 'echo.ts');
for (const row of rows) {
  row.bundle = join(dir, `${row.path.slice(1)}.mjs`);
  await bundleHandler(row.handler, row.bundle);
}

/** The count of the one file a finished callgrind run left that starts with `prefix`, then removes it. */
function taken(prefix) {
  const files = readdirSync(dir).filter((f) => f.startsWith(prefix));
  if (files.length !== 1) throw new Error(`expected one ${prefix}* file, found ${files.join(', ')}`);
  const n = totals(join(dir, files[0]));
  // DEBUG=1 keeps the dumps (and the directory) for callgrind_annotate
  if (process.env.DEBUG) renameSync(join(dir, files[0]), join(dir, `kept-${files[0]}`));
  else rmSync(join(dir, files[0]));
  return n;
}

/** One Apache and worker for `row`: WARM requests, then `n` counted in Apache; returns the counts. */
async function runOnce(row, n) {
  const port = await freePort();
  const conf = join(dir, 'httpd.conf');
  writeFileSync(
    conf,
    serverConf({
      root: dir,
      host: '127.0.0.1',
      port,
      so,
      daemon: { name: 'm', handler: row.bundle, worker: row.bundle, processes: 1, node: wrapper },
      location: row.path,
      includes: [],
      mpm: { startServers: 1, serverLimit: 1, threadsPerChild: 8, maxRequestWorkers: 8, minSpareThreads: 1, maxSpareThreads: 8 },
      accessLog: false,
      schedBatch: false,
      errorLog: join(dir, 'error.log'),
    }),
  );
  const apache = spawn(
    'setpriv',
    ['--reuid=www-data', '--regid=www-data', '--init-groups', 'valgrind', '--tool=callgrind', VGDB(dir), '--instr-atstart=no',
      `--callgrind-out-file=${dir}/cg-apache.%p.out`, '/usr/sbin/apache2', '-X', '-d', dir, '-f', conf],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  try {
    let ok = false;
    for (let i = 0; i < 1200 && !ok; i++) {
      if (apache.exitCode !== null) throw new Error(`Apache exited: ${readFileSync(join(dir, 'error.log'), 'utf8')}`);
      try {
        const r = await fetch(`http://127.0.0.1:${port}${row.path}`, row.path === '/echo' ? { method: 'POST', body: JSON_BODY } : {});
        ok = r.status === 200 && (await r.text()) === row.expect;
      } catch {
        // not yet
      }
      if (!ok) await sleep(100);
    }
    if (!ok) throw new Error(`${row.name}: no answer (${readFileSync(join(dir, 'error.log'), 'utf8')})`);
    await load(port, row, WARM);
    let inApache = 0;
    if (n > 0) {
      await cgControl(['-i', 'on', String(apache.pid)]);
      await load(port, row, n);
      await cgControl(['-d', String(apache.pid)]);
      await sleep(1000);
      inApache = taken(`cg-apache.${apache.pid}.out.`);
    }
    // A graceful stop: the worker drains and exits, and callgrind writes its whole-life count.
    apache.kill('SIGTERM');
    await new Promise((r) => apache.once('exit', r));
    for (let i = 0; i < 600 && pidsWith(`${dir}/`).length > 0; i++) await sleep(100);
    rmSync(join(dir, `cg-apache.${apache.pid}.out`), { force: true });
    return { apache: inApache, worker: taken('cg-worker.') };
  } finally {
    if (apache.exitCode === null) apache.kill('SIGKILL');
  }
}

try {
  // ONLY=get or ONLY=post: one row
  for (const row of rows.filter((r) => !process.env.ONLY || r.name.toLowerCase().startsWith(process.env.ONLY))) {
    const base = await runOnce(row, 0);
    const run = await runOnce(row, N);
    const a = Math.round(run.apache / N);
    const w = Math.round((run.worker - base.worker) / N);
    console.log(`${row.name}: Apache ${a} + worker ${w} = ${a + w} instructions per request (${N} requests after ${WARM})`);
  }
} finally {
  for (const pid of pidsWith(`${dir}/`)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // gone
    }
  }
  await sleep(300);
  if (process.env.DEBUG) console.error('kept', dir);
  else rmSync(dir, { recursive: true, force: true });
}
