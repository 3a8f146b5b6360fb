#!/usr/bin/env node
// npm run bench -- nginx [--record]
// ONE nginx (worker_processes 1) serving the same hello five ways:
//   /tsgi     embedded: the tsgi hello handler bundled for njs (tsgi nginx build), js_content
//   /njs      a hand-written njs handler: r.return(200, 'Hello, world!\n')
//   /return   `return 200 "Hello, world!\n"`
//   /workers  workers mode: one supervised Node worker (the same tsgi handler) on a Unix socket
//   /raw      proxy_pass to a raw node:http hello on a Unix socket, upstream keep-alive
//   /floor    proxy_pass to bench/servers/floor-node.mjs (canned bytes, nothing parsed): the ceiling of any Node worker
// nginx and every Node process are pinned to core 0, wrk to core 1. Interleaved rounds, median.
// Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50).
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkAnchor, figuresTable, freePort, holdIfAsked, interleave, machineLine, ratios, recordSection, SERVER_CPU, LOAD_CPU } from './lib.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'adapters/nginx/dist');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const conns = Number(process.env.BENCH_CONNECTIONS ?? 50);
const HANDLER = join(repo, 'bench/handlers/hello.ts');

function portOpen(port) {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

function unprivileged() {
  if (process.getuid?.() !== 0) return undefined;
  const e = readFileSync('/etc/passwd', 'utf8')
    .split('\n')
    .map((l) => l.split(':'))
    .find((p) => p[0] === 'www-data' || p[0] === 'nobody');
  return e && { name: e[0], uid: Number(e[2]), gid: Number(e[3]) };
}

export async function run(argv = []) {
  const record = argv.includes('--record');
  for (const f of ['build.js', 'config.js', 'supervisor.js', 'workers-bundle.js', 'nginx.js']) {
    if (!existsSync(join(dist, f))) throw new Error(`bench nginx: ${join(dist, f)} missing; run npm run build first`);
  }
  const { buildNjs } = await import(join(dist, 'build.js'));
  const { mainConf, proxyCommon } = await import(join(dist, 'config.js'));
  const { Supervisor } = await import(join(dist, 'supervisor.js'));
  const { buildWorkerBundle } = await import(join(dist, 'workers-bundle.js'));
  const { nginxBinary, findJsModule } = await import(join(dist, 'nginx.js'));

  // Everything started from here inherits core 0; wrk runs with taskset on core 1.
  spawnSync('taskset', ['-a', '-p', '-c', SERVER_CPU, String(process.pid)], { stdio: 'ignore' });

  const user = unprivileged();
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-bench-nginx-'));
  chmodSync(dir, 0o755);
  mkdirSync(join(dir, 'tmp'), { mode: 0o755 });
  const sockets = join(dir, 'sockets');
  mkdirSync(sockets, { mode: 0o777 });
  chmodSync(sockets, 0o777);

  let sup;
  let nginx;
  let raw;
  let floor;
  try {
    const { file: bundle, report } = await buildNjs({ handler: HANDLER, outDir: dir });
    writeFileSync(
      join(dir, 'hand.js'),
      `function hello(r) {\n  r.headersOut['Content-Type'] = 'text/plain;charset=UTF-8';\n  r.return(200, 'Hello, world!\\n');\n}\nexport default { hello };\n`,
    );
    chmodSync(join(dir, 'hand.js'), 0o644);

    const entry = await buildWorkerBundle(HANDLER, dir);
    sup = new Supervisor({ entry, socketDir: sockets, workers: 1, maxBody: 1 << 20, uid: user?.uid, gid: user?.gid, cwd: dir, log: () => {} });
    await sup.start();

    const rawSock = join(sockets, 'raw.sock');
    writeFileSync(
      join(dir, 'raw.mjs'),
      `import { createServer } from 'node:http';
const HELLO = 'Hello, world!\\n';
createServer({ keepAliveTimeout: 75000 }, (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'content-length': HELLO.length, 'x-anchor': 'raw-node' });
  res.end(HELLO);
}).listen(${JSON.stringify(rawSock)});
`,
    );
    chmodSync(join(dir, 'raw.mjs'), 0o644);
    raw = spawn(process.execPath, [join(dir, 'raw.mjs')], { uid: user?.uid, gid: user?.gid, cwd: dir, stdio: 'inherit' });
    for (let i = 0; i < 100 && !existsSync(rawSock); i++) await sleep(50);
    const floorSock = join(sockets, 'floor.sock');
    // In the run's dir, as raw.mjs: the unprivileged user may not read the checkout.
    writeFileSync(join(dir, 'floor.mjs'), readFileSync(new URL('servers/floor-node.mjs', import.meta.url)));
    chmodSync(join(dir, 'floor.mjs'), 0o644);
    floor = spawn(process.execPath, [join(dir, 'floor.mjs'), floorSock], { uid: user?.uid, gid: user?.gid, cwd: dir, stdio: 'inherit' });
    for (let i = 0; i < 100 && !existsSync(floorSock); i++) await sleep(50);

    const port = await freePort();
    const proxy = proxyCommon({ secret: sup.secret }).map((l) => `  ${l}`).join('\n');
    const conf = join(dir, 'nginx.conf');
    writeFileSync(
      conf,
      mainConf({
        mode: 'embedded',
        dir,
        host: '127.0.0.1',
        port,
        // The tsgi location is the root one (no mount prefix, as before mounts existed); the anchors' exact locations win.
        location: '/',
        maxBody: 1 << 20,
        bundle,
        user: user?.name,
        jsModule: findJsModule(),
        accessLog: 'off',
        errorLogLevel: 'error',
        extraHttp: [
          `js_import hand from ${join(dir, 'hand.js')};`,
          `upstream tsgi_workers { server unix:${sup.sockets[0]}; keepalive 64; }`,
          `upstream raw_node { server unix:${rawSock}; keepalive 64; }`,
          `upstream floor_node { server unix:${floorSock}; keepalive 64; }`,
        ].join('\n'),
        extraServer: [
          // postpone_output 0 as in the tsgi location (config.ts, for streamed chunks): both njs handlers then write the head and
          // body in two writev calls, as they did while it sat at http level (moved into the location by 300b661)
          `location = /njs { postpone_output 0; js_content hand.hello; }`,
          `location = /return { default_type 'text/plain;charset=UTF-8'; return 200 'Hello, world!\\n'; }`,
          `location = /workers {\n  proxy_pass http://tsgi_workers;\n  proxy_set_header X-Tsgi-Phase "";\n${proxy}\n}`,
          `location = /raw {\n  proxy_pass http://raw_node;\n${proxy}\n}`,
          `location = /floor {\n  proxy_pass http://floor_node;\n${proxy}\n}`,
        ].join('\n'),
      }),
    );
    nginx = spawn(nginxBinary(), ['-p', dir, '-c', conf], { stdio: ['ignore', 'ignore', 'inherit'] });
    for (let i = 0; !(await portOpen(port)); i++) {
      if (i > 200 || nginx.exitCode !== null) throw new Error('bench nginx: nginx did not start');
      await sleep(50);
    }
    const base = `http://127.0.0.1:${port}`;
    for (const p of ['/tsgi', '/njs', '/return', '/workers', '/raw', '/floor']) {
      const r = await fetch(base + p);
      const t = await r.text();
      if (r.status !== 200 || t !== 'Hello, world!\n') throw new Error(`bench nginx: ${p} answered ${r.status} ${JSON.stringify(t)}`);
    }

    console.log(`nginx bench: ${seconds} s x ${rounds} rounds, ${conns} connections, nginx + Node on core ${SERVER_CPU}, wrk on core ${LOAD_CPU}`);
    const all = [
      { key: 'tsgi', name: 'embedded tsgi (njs)', url: `${base}/tsgi` },
      { key: 'njs', name: 'hand-written njs', url: `${base}/njs` },
      { key: 'return', name: 'return 200', url: `${base}/return` },
      { key: 'workers', name: 'workers mode (1 Node worker)', url: `${base}/workers` },
      { key: 'raw', name: 'proxy_pass raw node:http', url: `${base}/raw` },
      { key: 'floor', name: 'proxy_pass canned bytes (floor)', url: `${base}/floor` },
    ];
    await checkAnchor('proxy_pass raw node:http', `${base}/raw`, (r) => (r.headers.get('x-anchor') === 'raw-node' ? '' : 'no x-anchor: raw-node'));
    await checkAnchor('proxy_pass canned bytes (floor)', `${base}/floor`, (r) => (r.headers.get('x-anchor') === 'floor' ? '' : 'no x-anchor: floor'));
    await checkAnchor('return 200', `${base}/return`, (r) => (r.headers.get('x-anchor') ? 'proxied' : ''));
    if (await holdIfAsked(all.map((s) => [s.key, s.url]))) return;
    // BENCH_ONLY=workers,raw runs a subset (exploration; the recorded table uses all six).
    const only = process.env.BENCH_ONLY?.split(',');
    const scenarios = only ? all.filter((s) => only.includes(s.key)) : all;
    if (only && record) throw new Error('bench nginx: --record needs all scenarios (unset BENCH_ONLY)');
    const res = await interleave(scenarios, { rounds, duration: seconds, connections: conns, threads: 1 });
    const has = (k) => scenarios.some((s) => s.key === k);
    const byKey = (k) => scenarios.find((s) => s.key === k).name;
    const checks = [
      ['embedded vs hand-written njs', 'tsgi', 'njs', 0.9],
      ['embedded vs proxy_pass -> node:http', 'tsgi', 'raw', null],
      ['workers mode vs proxy_pass -> node:http', 'workers', 'raw', 1.3],
      // Context, not targets: what nginx itself can do beside the raw proxy on this box.
      ['(ceiling) return 200 vs proxy_pass -> node:http', 'return', 'raw', null],
      ['(ceiling) hand-written njs vs proxy_pass -> node:http', 'njs', 'raw', null],
      ['(ceiling) any Node worker: canned bytes vs proxy_pass -> node:http', 'floor', 'raw', null],
    ]
      .filter(([, a, b]) => has(a) && has(b))
      .map(([n, a, b, t]) => [n, ratios(res, byKey(a), byKey(b)), t]);
    const table = [
      figuresTable(scenarios.map((s) => ({ key: s.name, label: s.name })), res, 'proxy_pass raw node:http'),
      ``,
      `| ratio | by CPU per request | by req/s | target (CPU) |`,
      `|---|---:|---:|---:|`,
      ...checks.map(([n, q, t]) => `| ${n} | ${q.cpu.toFixed(2)}x | ${q.rps.toFixed(2)}x | ${t === null ? '-' : `>= ${t}x ${q.cpu >= t ? '(met)' : '(NOT met)'}`} |`),
    ].join('\n');
    const note =
      `${machineLine()}; nginx 1.22.1 + njs 0.7.9, worker_processes 1, access log off. ` +
      `${seconds} s x ${rounds} interleaved rounds, wrk -t1 -c${conns}, nginx and Node pinned to core ${SERVER_CPU}, wrk to core ${LOAD_CPU}; ` +
      `server CPU per request is core ${SERVER_CPU}'s busy time (steal excluded) over requests served. ` +
      `Handler: bench/handlers/hello.ts (async fetch, "Hello, world!\\n"); the njs bundle builds ${report.functions} functions and ` +
      `${report.prototypeAssignments} prototype changes at load time (~${report.estimatedUsPerRequest} µs per request estimated).`;
    console.log(`\n${table}\n\n${note}`);
    const section = `Run: \`npm run bench -- nginx\`. ${note}\n\n${table}`;
    // BENCH_SECTION_FILE: keep the section text, to record it later under the git lock.
    if (process.env.BENCH_SECTION_FILE) writeFileSync(process.env.BENCH_SECTION_FILE, section);
    if (record) {
      recordSection('nginx', section);
      console.log('\nrecorded in bench/README.md (## nginx)');
    }
  } finally {
    nginx?.kill('SIGTERM');
    raw?.kill('SIGTERM');
    floor?.kill('SIGTERM');
    await sup?.stop(2000);
    await sleep(300);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await run(process.argv.slice(2));
}
