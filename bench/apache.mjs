#!/usr/bin/env node
// npm run bench -- apache
// One Apache (event MPM, one set of settings) serving the same 5-byte "hello" five ways:
//   /tsgi              mod_tsgi -> one supervised Node worker (the bundled hello handler)
//   /static/hello.txt  a static file
//   /proxy/            mod_proxy_http -> raw node:http with keep-alive
//   /passenger/        Phusion Passenger 6 (Debian) -> the same node:http hello
//   /cgi               mod_cgid -> a shell CGI script
// Apache (and every backend it runs) is pinned to core 0, wrk to core 1. Rounds are
// interleaved; the median per target is reported with socket errors and ratios.
// Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50).
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { cpus } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const repo = join(dirname(fileURLToPath(import.meta.url)), '..');
const seconds = Number(process.env.BENCH_SECONDS ?? 5);
const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
const conns = Number(process.env.BENCH_CONNECTIONS ?? 50);
const M = '/usr/lib/apache2/modules';

const { serverConf, DEFAULT_MPM } = await import(join(repo, 'adapters/apache/dist/config.js'));
const { bundleHandler, modulePath } = await import(join(repo, 'adapters/apache/dist/cli.js'));

for (const [what, file] of [
  ['wrk', '/usr/bin/wrk'],
  ['apache2', '/usr/sbin/apache2'],
  ['libapache2-mod-passenger', `${M}/mod_passenger.so`],
  ['taskset', '/usr/bin/taskset'],
]) {
  if (!existsSync(file)) {
    console.error(`bench apache: ${what} is missing (${file}); run node scripts/ensure-system-deps.mjs`);
    process.exit(1);
  }
}
const pin = cpus().length > 1;
const onCore = (core, cmd, args) => (pin ? ['taskset', ['-c', String(core), cmd, ...args]] : [cmd, args]);

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function portOpen(port) {
  return new Promise((res) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => (s.destroy(), res(true)));
    s.once('error', () => res(false));
  });
}

async function get(url) {
  for (let i = 0; i < 200; i++) {
    try {
      const r = await fetch(url);
      const t = await r.text();
      if (r.status === 200) return t;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`bench apache: ${url} never answered 200`);
}

function wrk(url) {
  const [cmd, args] = onCore(1, 'wrk', ['-t1', `-c${conns}`, `-d${seconds}s`, url]);
  const out = execFileSync(cmd, args, { encoding: 'utf8' });
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const se = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const errors = se ? se.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  return { rps, errors, non2xx };
}

const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

// ---- the server root ----
const dir = mkdtempSync('/tmp/tsgi-bench-apache-');
chmodSync(dir, 0o755);
const children = [];
let apache;
const cleanup = () => {
  if (apache?.pid && apache.exitCode === null) {
    try {
      process.kill(apache.pid, 'SIGTERM');
    } catch {}
  }
  for (const c of children) if (c.exitCode === null) c.kill('SIGTERM');
  rmSync(dir, { recursive: true, force: true });
};
process.on('SIGINT', () => (cleanup(), process.exit(130)));

try {
  for (const d of ['run', 'htdocs/static', 'papp/public', 'cgi']) mkdirSync(join(dir, d), { recursive: true });
  writeFileSync(join(dir, 'htdocs/static/hello.txt'), 'hello');
  const nodeHello = `require('http').createServer((q, s) => { s.writeHead(200, { 'content-type': 'text/plain', 'content-length': 5 }); s.end('hello'); })`;
  writeFileSync(join(dir, 'raw.cjs'), `const s = ${nodeHello}; s.keepAliveTimeout = 65000; s.listen(Number(process.argv[2]), '127.0.0.1');\n`);
  // Passenger hooks listen() itself; the app is the same server.
  writeFileSync(join(dir, 'papp/app.js'), `${nodeHello}.listen(3000);\n`);
  writeFileSync(join(dir, 'cgi/hello.cgi'), "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhello'\n");
  chmodSync(join(dir, 'cgi/hello.cgi'), 0o755);
  // The tsgi hello: the lead's example when present, else a one-liner with the fast Response.
  const example = join(repo, 'examples/hello/handler.ts');
  const benchHandler = join(repo, 'bench/results/apache-hello.mjs');
  mkdirSync(dirname(benchHandler), { recursive: true });
  writeFileSync(
    benchHandler,
    "import { Response } from '@tsgi/core';\nexport default { fetch: () => new Response('hello', { headers: { 'content-type': 'text/plain' } }) };\n",
  );
  const handler = process.env.BENCH_HANDLER ?? benchHandler;
  await bundleHandler(handler, join(dir, 'app.mjs'));
  spawnSync('chmod', ['-R', 'a+rX', dir]);

  const so = await modulePath();
  const port = await freePort();
  const rawPort = await freePort();
  const root = process.getuid() === 0;
  const [rc, ra] = onCore(0, process.execPath, [join(dir, 'raw.cjs'), String(rawPort)]);
  children.push(spawn(rc, ra, { stdio: 'inherit' }));

  const extra = join(dir, 'bench.conf');
  writeFileSync(
    extra,
    `
<IfModule !proxy_module>
  LoadModule proxy_module ${M}/mod_proxy.so
</IfModule>
<IfModule !proxy_http_module>
  LoadModule proxy_http_module ${M}/mod_proxy_http.so
</IfModule>
<IfModule !cgid_module>
  LoadModule cgid_module ${M}/mod_cgid.so
</IfModule>
LoadModule passenger_module ${M}/mod_passenger.so
<Directory ${dir}/htdocs/static>
  Require all granted
</Directory>
Alias /static ${dir}/htdocs/static
# keepalive + enablereuse: persistent connections to node, as a tuned reverse proxy would have.
ProxyPass /proxy/ http://127.0.0.1:${rawPort}/ enablereuse=on keepalive=On ttl=60
ProxyPassReverse /proxy/ http://127.0.0.1:${rawPort}/
ScriptSock ${dir}/run/cgid.sock
ScriptAlias /cgi ${dir}/cgi/hello.cgi
<Directory ${dir}/cgi>
  Require all granted
</Directory>
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
`,
  );
  const app = join(dir, 'app.mjs');
  const conf = join(dir, 'httpd.conf');
  writeFileSync(
    conf,
    serverConf({
      root: dir,
      host: '127.0.0.1',
      port,
      so,
      daemon: { name: 'hello', handler: app, worker: app, processes: 1, node: process.execPath, user: root ? 'www-data' : undefined, group: root ? 'www-data' : undefined },
      location: '/tsgi',
      user: root ? 'www-data' : undefined,
      group: root ? 'www-data' : undefined,
      includes: [extra],
      mpm: DEFAULT_MPM,
      accessLog: false,
      modules: ['proxy', 'proxy_http', 'cgid'],
    }),
  );
  const [ac, aa] = onCore(0, '/usr/sbin/apache2', ['-DFOREGROUND', '-d', dir, '-f', conf]);
  apache = spawn(ac, aa, { stdio: ['ignore', 'inherit', 'pipe'] });
  let apacheErr = '';
  apache.stderr.on('data', (d) => (apacheErr += d));
  for (let i = 0; i < 100 && !(await portOpen(port)); i++) await new Promise((r) => setTimeout(r, 100));

  const base = `http://127.0.0.1:${port}`;
  const targets = [
    ['tsgi', `${base}/tsgi`],
    ['static', `${base}/static/hello.txt`],
    ['proxy_http', `${base}/proxy/`],
    ['passenger', `${base}/passenger/`],
    ['cgi', `${base}/cgi`],
  ];
  for (const [name, url] of targets) {
    const body = await get(url);
    if (body !== 'hello') throw new Error(`bench apache: ${name} answered ${JSON.stringify(body)}, not "hello"`);
  }
  // Warm-up: JITs, Passenger's spawn, proxy connection pool.
  for (const [, url] of targets) execFileSync('wrk', ['-t1', '-c10', '-d1s', url], { stdio: 'ignore' });

  const results = Object.fromEntries(targets.map(([n]) => [n, { rps: [], errors: 0, non2xx: 0 }]));
  for (let r = 0; r < rounds; r++) {
    for (const [name, url] of targets) {
      const m = wrk(url);
      results[name].rps.push(m.rps);
      results[name].errors += m.errors;
      results[name].non2xx += m.non2xx;
    }
    console.error(`round ${r + 1}/${rounds}: ` + targets.map(([n]) => `${n} ${Math.round(results[n].rps.at(-1))}`).join(', '));
  }
  const med = Object.fromEntries(targets.map(([n]) => [n, median(results[n].rps)]));
  const t = med.tsgi;
  const ratio = (n) => (med[n] ? (t / med[n]).toFixed(2) + 'x' : 'n/a');
  const cpu = cpus()[0]?.model ?? 'unknown cpu';
  console.log(`\nApache ${execFileSync('/usr/sbin/apache2', ['-v'], { encoding: 'utf8' }).split('\n')[0].replace('Server version: ', '')}, event MPM ` +
    `(StartServers ${DEFAULT_MPM.startServers}, ThreadsPerChild ${DEFAULT_MPM.threadsPerChild}), ${pin ? 'Apache on core 0, wrk on core 1' : 'unpinned'}; ` +
    `wrk -t1 -c${conns} -d${seconds}s, ${rounds} interleaved rounds, median; ${new Date().toISOString()}; ${cpu}, ${cpus().length} cores\n`);
  console.log('| target | req/s (median) | socket errors | non-2xx | tsgi vs this |');
  console.log('|---|---:|---:|---:|---:|');
  for (const [n] of targets) {
    console.log(`| ${n} | ${Math.round(med[n])} | ${results[n].errors} | ${results[n].non2xx} | ${n === 'tsgi' ? '—' : ratio(n)} |`);
  }
  const goals = [
    ['static', 0.75],
    ['proxy_http', 1.35],
    ['passenger', 3.5],
  ];
  console.log('\ntargets: ' + goals.map(([n, g]) => `${ratio(n)} ${n} (goal >= ${g}x: ${t / med[n] >= g ? 'met' : 'MISSED'})`).join('; ') +
    `; tsgi socket errors ${results.tsgi.errors} (goal 0)`);
  if (apacheErr.includes('[tsgi') || apacheErr.includes('error]')) console.error('\napache error log:\n' + apacheErr.trim());
} finally {
  if (apache?.pid && apache.exitCode === null) {
    const exited = new Promise((r) => apache.once('exit', r));
    process.kill(apache.pid, 'SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
  }
  cleanup();
}
