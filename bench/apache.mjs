#!/usr/bin/env node
// npm run bench -- apache [--record]
// ONE Apache (event MPM, one set of settings) serving the same "Hello, world!\n" six ways:
//   /tsgi              mod_tsgi -> one supervised Node worker, bench/handlers/hello-fast.ts (@tsgi/core Response)
//   /tsgi-global       mod_tsgi -> one worker, bench/handlers/hello.ts (the global Response)
//   /static/hello.txt  a static file
//   /proxy/            mod_proxy_http -> raw node:http (bench/servers/raw-node.mjs), pooled keep-alive
//   /passenger/        Phusion Passenger 6 (Debian libapache2-mod-passenger) -> the same node:http hello
//   /cgi               mod_cgid -> a shell CGI script
// Apache and every process it or we start for it are pinned to core 0, wrk to core 1.
// Interleaved rounds, median. Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50).
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { checkAnchor, figuresTable, freePort, holdIfAsked, interleave, machineLine, ratios, recordSection, startPinned, SERVER_CPU, LOAD_CPU } from './lib.mjs';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(repo, 'adapters/apache/dist');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const conns = Number(process.env.BENCH_CONNECTIONS ?? 50);
const M = '/usr/lib/apache2/modules';
const HELLO = 'Hello, world!\n';

async function expectHello(name, url) {
  let last = '';
  for (let i = 0; i < 300; i++) {
    try {
      const r = await fetch(url);
      last = `${r.status} ${JSON.stringify(await r.text())}`;
      if (last === `200 ${JSON.stringify(HELLO)}`) return;
    } catch (err) {
      last = String(err.cause?.code ?? err);
    }
    await sleep(100);
  }
  throw new Error(`bench apache: ${name} (${url}) answers ${last}, not 200 "Hello, world!\\n"`);
}

export async function run(argv = []) {
  const record = argv.includes('--record');
  for (const [what, file] of [
    ['apache2', '/usr/sbin/apache2'],
    ['libapache2-mod-passenger', `${M}/mod_passenger.so`],
    ['the @tsgi/apache build (npm run build)', join(dist, 'cli.js')],
  ]) {
    if (!existsSync(file)) throw new Error(`bench apache: ${what} is missing (${file})`);
  }
  const { serverConf } = await import(join(dist, 'config.js'));
  // One set for every row: two children of 64 threads, all started up front and never reaped
  // (a reaped child drops its keep-alive connections, which wrk counts as read errors). More
  // threads than wrk's 50 connections: the event MPM closes a keep-alive connection whose next
  // request finds no idle thread in its child (read errors again; wrk's connections split unevenly).
  const MPM = { startServers: 2, serverLimit: 2, threadsPerChild: 64, maxRequestWorkers: 128, minSpareThreads: 25, maxSpareThreads: 128 };
  const { bundleHandler, modulePath } = await import(join(dist, 'cli.js'));
  const root = process.getuid?.() === 0;
  const user = root ? 'www-data' : undefined;

  const dir = mkdtempSync('/tmp/tsgi-bench-apache-');
  chmodSync(dir, 0o755);
  let apache;
  let raw;
  try {
    for (const d of ['run', 'htdocs/static', 'papp/public', 'cgi']) mkdirSync(join(dir, d), { recursive: true });
    writeFileSync(join(dir, 'htdocs/static/hello.txt'), HELLO);
    // Passenger hooks listen(); the app is the raw hello with the same headers.
    writeFileSync(
      join(dir, 'papp/app.js'),
      `const HELLO = ${JSON.stringify(HELLO)};\nrequire('http').createServer((q, s) => { s.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'content-length': HELLO.length }); s.end(HELLO); }).listen(3000);\n`,
    );
    writeFileSync(join(dir, 'cgi/hello.cgi'), "#!/bin/sh\nprintf 'Content-Type: text/plain;charset=UTF-8\\r\\n\\r\\nHello, world!\\n'\n");
    chmodSync(join(dir, 'cgi/hello.cgi'), 0o755);
    await bundleHandler(join(repo, 'bench/handlers/hello-fast.ts'), join(dir, 'hello-fast.mjs'));
    await bundleHandler(join(repo, 'bench/handlers/hello.ts'), join(dir, 'hello.mjs'));
    spawnSync('chmod', ['-R', 'a+rX', dir]);
    const so = await modulePath();

    const rawPort = await freePort();
    raw = await startPinned(process.execPath, [join(repo, 'bench/servers/raw-node.mjs')], {
      url: `http://127.0.0.1:${rawPort}/`,
      env: { PORT: String(rawPort) },
    });

    const port = await freePort();
    // Debian's locations; one app process, like the single tsgi worker and the single proxied node.
    const passengerConf = `LoadModule passenger_module ${M}/mod_passenger.so
PassengerRoot /usr/lib/ruby/vendor_ruby/phusion_passenger/locations.ini
PassengerDefaultRuby /usr/bin/ruby
PassengerInstanceRegistryDir ${dir}/run
PassengerDisableAnonymousTelemetry on
PassengerDisableSecurityUpdateCheck on
PassengerMaxPoolSize 1
PassengerMinInstances 1
Alias /passenger ${dir}/papp/public
<Directory ${dir}/papp/public>
  Require all granted
</Directory>
<Location /passenger>
  PassengerBaseURI /passenger
  PassengerAppRoot ${dir}/papp
  PassengerAppType node
  PassengerStartupFile app.js
  PassengerNodejs ${process.execPath}
</Location>
`;
    const extra = join(dir, 'bench.conf');
    // TsgiSchedBatch applies to the whole child, so every row runs under it (BENCH_SCHED_BATCH=0: off).
    const batch = process.env.BENCH_SCHED_BATCH !== '0';
    const daemon = (name, file) =>
      `TsgiDaemon ${name} handler=${file} worker=${file} processes=1 node=${process.execPath}${user ? ` user=${user} group=${user}` : ''}`;
    writeFileSync(
      extra,
      `
${daemon('global', join(dir, 'hello.mjs'))}
<Location /tsgi-global>
  SetHandler tsgi
  TsgiDaemonName global
</Location>
<IfModule !cgid_module>
  LoadModule cgid_module ${M}/mod_cgid.so
</IfModule>
<Directory ${dir}/htdocs/static>
  Require all granted
</Directory>
Alias /static ${dir}/htdocs/static
# Pooled keep-alive connections to node; ttl below node's 5 s keepAliveTimeout so Apache never
# reuses one node is closing (that race is what gives read errors under keep-alive load).
ProxyPass /proxy/ http://127.0.0.1:${rawPort}/ enablereuse=on keepalive=On ttl=3
ScriptSock ${dir}/run/cgid.sock
ScriptAlias /cgi ${dir}/cgi/hello.cgi
<Directory ${dir}/cgi>
  Require all granted
</Directory>
${passengerConf}`,
    );
    const conf = join(dir, 'httpd.conf');
    const app = join(dir, 'hello-fast.mjs');
    writeFileSync(
      conf,
      serverConf({
        root: dir,
        host: '127.0.0.1',
        port,
        so,
        daemon: { name: 'hello', handler: app, worker: app, processes: 1, node: process.execPath, user, group: user },
        location: '/tsgi',
        user,
        group: user,
        includes: [extra],
        mpm: MPM,
        schedBatch: batch,
        logLevel: process.env.BENCH_LOGLEVEL,
        accessLog: false,
        modules: ['proxy', 'proxy_http'],
        errorLog: join(dir, 'error.log'),
      }),
    );
    apache = await startPinned('/usr/sbin/apache2', ['-DFOREGROUND', '-d', dir, '-f', conf], {
      url: `http://127.0.0.1:${port}/static/hello.txt`,
      cpu: SERVER_CPU,
    });
    const base = `http://127.0.0.1:${port}`;
    const scenarios = [
      { name: 'tsgi', label: 'mod_tsgi (@tsgi/core Response)', url: `${base}/tsgi` },
      { name: 'tsgi-global', label: 'mod_tsgi (global Response)', url: `${base}/tsgi-global` },
      { name: 'static', label: 'static file', url: `${base}/static/hello.txt` },
      { name: 'proxy', label: 'mod_proxy_http -> node:http (keep-alive)', url: `${base}/proxy/` },
      { name: 'passenger', label: 'Passenger 6 -> node:http', url: `${base}/passenger/` },
      { name: 'cgi', label: 'mod_cgid shell script', url: `${base}/cgi` },
    ];
    // BENCH_ONLY=tsgi,static keeps a subset (for profiling); the recorded table needs every row.
    const only = process.env.BENCH_ONLY?.split(',');
    if (only) scenarios.splice(0, scenarios.length, ...scenarios.filter((s) => only.includes(s.name) || s.name === 'tsgi'));
    if (only && record) throw new Error('bench apache: --record needs every row; drop BENCH_ONLY');
    for (const s of scenarios) await expectHello(s.name, s.url);
    // The anchors must be what they claim to be.
    const anchors = {
      static: (r) => (r.headers.get('etag') ? '' : 'no ETag (not served as a static file)'),
      proxy: (r) => (r.headers.get('x-anchor') === 'raw-node' ? '' : 'no x-anchor: raw-node (not proxied to raw node:http)'),
      passenger: (r) => (/Phusion Passenger/i.test(r.headers.get('x-powered-by') ?? '') ? '' : 'no X-Powered-By: Phusion Passenger'),
      cgi: (r) => (r.headers.get('etag') || r.headers.get('x-anchor') ? 'looks static or proxied' : ''),
    };
    for (const s of scenarios) if (anchors[s.name]) await checkAnchor(s.label, s.url, anchors[s.name]);
    if (await holdIfAsked(scenarios.map((s) => [s.name, s.url]))) return;
    console.error(`bench apache: ${scenarios.length} targets answer; ${rounds} rounds of ${seconds} s, wrk -c${conns}`);
    const res = await interleave(scenarios, { rounds, warmup: 1, duration: seconds, connections: conns });

    for (const s of scenarios) console.error(`  ${s.name}: ${res[s.name].rps.map((x) => Math.round(x)).join(', ')} req/s`);
    const goals = [
      ['static', 0.75, 'a static file'],
      ['proxy', 1.6, 'mod_proxy_http -> node:http'],
      ['passenger', 5, 'Passenger'],
    ];
    const verdict = goals
      .filter(([n]) => res[n])
      .map(([n, g, label]) => {
        const q = ratios(res, 'tsgi', n);
        return `${q.cpu.toFixed(2)}x ${label} by CPU per request (target >= ${g}x: ${q.cpu >= g ? 'met' : 'NOT met'}; ${q.rps.toFixed(2)}x by req/s)`;
      })
      .join(', ');
    const body = [
      `${machineLine()}, Apache ${spawnSync('/usr/sbin/apache2', ['-v'], { encoding: 'utf8' }).stdout.split('\n')[0].replace('Server version: Apache/', '')}, ` +
        `event MPM (StartServers ${MPM.startServers}, ServerLimit ${MPM.serverLimit}, ThreadsPerChild ${MPM.threadsPerChild}, MaxSpareThreads ${MPM.maxSpareThreads}), ` +
        `${batch ? 'TsgiSchedBatch On (every thread of the children, so every row), ' : 'TsgiSchedBatch Off, '}no access log. One Apache instance for every row; it and all its back ends pinned to core ${SERVER_CPU}, wrk -t1 -c${conns} on core ${LOAD_CPU}; ` +
        `${rounds} interleaved rounds of ${seconds} s, median. Body "Hello, world!\\n" everywhere. Server CPU per request: core ${SERVER_CPU}'s busy time (steal excluded) over requests served. ` +
        `Anchors checked: the static file has an ETag, the proxied node:http marks its responses, Passenger sets X-Powered-By.`,
      '',
      figuresTable(scenarios.map((s) => ({ key: s.name, label: s.label })), res, 'tsgi', { tsgiVersus: true }),
      '',
      `mod_tsgi: ${verdict}; mod_tsgi socket errors: ${res.tsgi.socketErrors} (target 0). "tsgi vs this": above 1, mod_tsgi serves more per second / spends less CPU per request than that row.`,
    ].join('\n');
    console.log('\n## Apache\n\n' + body + '\n');
    if (record) {
      recordSection('Apache', body);
      console.error('bench apache: recorded in bench/README.md');
    }
  } finally {
    // SIGTERM: Apache stops its tsgi workers and Passenger's agents with it.
    await apache?.stop();
    await raw?.stop();
    const errors = existsSync(join(dir, 'error.log')) ? readFileSync(join(dir, 'error.log'), 'utf8') : '';
    const bad = errors.split('\n').filter((l) => /:(error|crit|alert|emerg)\]/.test(l));
    if (bad.length) console.error(`bench apache: ${bad.length} error-log lines, last ones:\n${bad.slice(-5).join('\n')}`);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  run(process.argv.slice(2)).catch((err) => {
    console.error(err.message);
    process.exit(1);
  });
}
