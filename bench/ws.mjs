// npm run bench -- ws [--record]: a small-message WebSocket echo on each host that carries WebSocket,
// against a raw `ws` server (servers/raw-ws.mjs) measured in the same run.
//   raw ws          the anchor: the ws package on node:http, echoing
//   tsgi serve      node-http's websocket.ts, the handler bench/handlers/ws-echo.ts
//   nginx workers   tsgi nginx run --workers 1: nginx relays the upgraded connection to one Node worker
//   apache          tsgi apache run --processes 1: mod_tsgi's tunnel relays it to one Node worker (one
//                   Apache thread per socket)
// and two floors, the same raw ws server (on a Unix socket) behind each server's own WebSocket proxy, so a
// host's ratio can be read against what relaying alone costs on that server:
//   nginx proxy -> raw ws                 proxy_pass with the Upgrade headers, as tsgi's workers location
//   mod_proxy_http upgrade -> raw ws      ProxyPass unix:...|http://.../ upgrade=websocket (httpd 2.4.47+)
// Every server process is pinned to core 0, the
// load (ws-load.mjs: C sockets, each sending a 32-byte text and waiting for its echo) to core 1.
// Figures: messages/s and the server core's busy CPU per message (lib.mjs coreBusySeconds), median of
// interleaved rounds. Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50), BENCH_WS_BYTES (32).
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LOAD_CPU, SERVER_CPU, checkAnchor, coreBusySeconds, freePort, machineLine, median, recordSection, startPinned, us } from './lib.mjs';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const tsgi = here('../cli/bin/tsgi.js');
const HANDLER = here('handlers/ws-echo.ts');
const RAW_WS = here('servers/raw-ws.mjs');
const isRawWs = (r) => (r.headers.get('x-anchor') === 'raw-ws' ? '' : 'no x-anchor: raw-ws header (not the raw ws server)');
const M = '/usr/lib/apache2/modules';

/** nginx proxying every request (upgrades included) to the raw ws server on `sock`. */
function nginxProxyConf(dir, port, sock) {
  const tmp = join(dir, 'tmp');
  return `worker_processes 1;
user root;
daemon off;
pid ${dir}/nginx.pid;
error_log stderr error;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${tmp}; proxy_temp_path ${tmp}; fastcgi_temp_path ${tmp}; uwsgi_temp_path ${tmp}; scgi_temp_path ${tmp};
  map $http_upgrade $connection_upgrade { default upgrade; '' ''; }
  upstream raw_ws { server unix:${sock}; keepalive 16; }
  server {
    listen 127.0.0.1:${port};
    location / {
      proxy_pass http://raw_ws;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_read_timeout 3600s;
    }
  }
}
`;
}

/** Apache (`mpm`: the sizing lines tsgi apache run writes) proxying to the raw ws server on `sock`, upgrades through mod_proxy_http. */
function apacheProxyConf(dir, port, sock, mpm) {
  const user = process.getuid?.() === 0 ? 'User www-data\nGroup www-data\n' : '';
  return `ServerRoot ${dir}
DefaultRuntimeDir ${dir}
PidFile ${dir}/httpd.pid
Mutex file:${dir} default
Listen 127.0.0.1:${port}
ServerName 127.0.0.1:${port}
ErrorLog ${dir}/error.log
LogLevel error
LoadModule mpm_event_module ${M}/mod_mpm_event.so
LoadModule authz_core_module ${M}/mod_authz_core.so
LoadModule proxy_module ${M}/mod_proxy.so
LoadModule proxy_http_module ${M}/mod_proxy_http.so
${user}${mpm.join('\n')}
ProxyPass / "unix:${sock}|http://localhost/" upgrade=websocket
`;
}

/** A raw ws server on a Unix socket the proxies' workers (nobody, www-data) may connect to. */
async function rawOnSocket(sock) {
  const proc = await startPinned(process.execPath, [RAW_WS], { env: { SOCKET: sock }, ready: () => existsSync(sock) });
  chmodSync(sock, 0o777);
  return proc;
}

const TARGETS = [
  { name: 'raw ws', args: [RAW_WS], check: isRawWs },
  { name: 'tsgi serve', args: [tsgi, 'serve', HANDLER], port: true },
  { name: 'nginx workers', args: [tsgi, 'nginx', 'run', HANDLER, '--workers', '1'], port: true, floor: 'nginx proxy -> raw ws' },
  { name: 'apache', args: [tsgi, 'apache', 'run', HANDLER, '--processes', '1', '--no-access-log'], port: true, floor: 'mod_proxy_http upgrade -> raw ws' },
  {
    name: 'nginx proxy -> raw ws',
    check: isRawWs,
    async server(dir, port) {
      const raw = await rawOnSocket(join(dir, 'raw-nginx.sock'));
      const conf = join(dir, 'nginx.conf');
      writeFileSync(conf, nginxProxyConf(dir, port, join(dir, 'raw-nginx.sock')));
      return { cmd: 'nginx', args: ['-p', dir, '-c', conf], also: raw };
    },
  },
  {
    name: 'mod_proxy_http upgrade -> raw ws',
    check: isRawWs,
    async server(dir, port) {
      const raw = await rawOnSocket(join(dir, 'raw-apache.sock'));
      const { DEFAULT_MPM, mpmLines } = await import(here('../adapters/apache/dist/config.js'));
      const conf = join(dir, 'httpd.conf');
      writeFileSync(conf, apacheProxyConf(dir, port, join(dir, 'raw-apache.sock'), mpmLines(DEFAULT_MPM)));
      return { cmd: '/usr/sbin/apache2', args: ['-DFOREGROUND', '-d', dir, '-f', conf], also: raw };
    },
  },
];

/** One load run against `url`: messages, errors, server-core CPU per message (µs). */
function load(url, { seconds, connections, bytes }) {
  const busy0 = coreBusySeconds();
  const out = execFileSync('taskset', ['-c', LOAD_CPU, process.execPath, here('ws-load.mjs'), url, String(connections), String(seconds), String(bytes)], {
    encoding: 'utf8',
  });
  const busy = coreBusySeconds() - busy0;
  const { messages, errors } = JSON.parse(out.trim().split('\n').pop());
  return { mps: messages / seconds, cpuUs: messages ? (busy * 1e6) / messages : 0, errors };
}

export async function run(argv = []) {
  const record = argv.includes('--record');
  const seconds = Number(process.env.BENCH_SECONDS ?? 5);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const connections = Number(process.env.BENCH_CONNECTIONS ?? 50);
  const bytes = Number(process.env.BENCH_WS_BYTES ?? 32);
  const running = [];
  const also = [];
  const dir = mkdtempSync('/tmp/tsgi-bench-ws-');
  chmodSync(dir, 0o755);
  try {
    for (const t of TARGETS) {
      const port = await freePort();
      const url = `http://127.0.0.1:${port}/`;
      let proc;
      if (t.server) {
        const s = await t.server(dir, port);
        also.push(s.also);
        proc = await startPinned(s.cmd, s.args, { url });
      } else {
        const args = t.port ? [...t.args, '--port', String(port)] : t.args;
        proc = await startPinned(process.execPath, args, { url, env: { PORT: String(port) } });
      }
      running.push({ ...t, url, ws: `ws://127.0.0.1:${port}/`, proc, mps: [], cpuUs: [], errors: 0 });
    }
    for (const t of running) if (t.check) await checkAnchor(t.name, t.url, t.check);
    console.log(
      `WebSocket echo of ${bytes}-byte text messages, ${connections} sockets each waiting for its echo; ` +
        `${rounds} rounds x ${seconds} s; servers on core ${SERVER_CPU}, load on core ${LOAD_CPU}`,
    );
    for (const t of running) load(t.ws, { seconds: 1, connections, bytes }); // warm-up
    for (let r = 0; r < rounds; r++) {
      for (let i = 0; i < running.length; i++) {
        const t = running[(i + r) % running.length];
        const m = load(t.ws, { seconds, connections, bytes });
        t.mps.push(m.mps);
        t.cpuUs.push(m.cpuUs);
        t.errors += m.errors;
      }
    }
    const anchor = running[0];
    const a = { mps: median(anchor.mps), cpu: median(anchor.cpuUs) };
    const head = ['target', 'messages/s (median)', 'vs raw ws', 'server CPU/message (median)', 'vs raw ws (CPU)', 'messages/s per round', 'errors'];
    const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
    for (const t of running) {
      const mps = median(t.mps);
      const cpu = median(t.cpuUs);
      lines.push(
        `| ${[t.name, Math.round(mps).toLocaleString('en-US'), `${(mps / a.mps).toFixed(2)}x`, us(cpu), `${(a.cpu / cpu).toFixed(2)}x`, t.mps.map((x) => Math.round(x)).join(', '), t.errors].join(' | ')} |`,
      );
    }
    // Each host against its own server proxying to raw ws: what tsgi adds beyond the relay every proxy pays.
    const byName = new Map(running.map((t) => [t.name, t]));
    const floors = ['| host | vs its server proxying to raw ws (CPU/message) |', '|---|---|'];
    for (const t of running.filter((x) => x.floor)) {
      floors.push(`| ${t.name} vs ${t.floor} | ${(median(byName.get(t.floor).cpuUs) / median(t.cpuUs)).toFixed(2)}x |`);
    }
    const table = `${lines.join('\n')}\n\n${floors.join('\n')}`;
    console.log(table);
    if (record) {
      recordSection(
        'WebSocket',
        `${machineLine()}. Servers pinned to core 0, the load (bench/ws-load.mjs) on core 1; ${rounds} interleaved rounds of ${seconds} s, median.\n` +
          `Targets (issue 13): Node >= 0.9x raw ws, nginx workers and Apache >= 0.6x. The floors are the same raw ws behind each server's own proxy.\n\n${table}`,
      );
      console.log('recorded in bench/README.md');
    }
  } finally {
    await Promise.all(running.map((t) => t.proc.stop()));
    await Promise.all(also.map((p) => p.stop()));
    rmSync(dir, { recursive: true, force: true });
  }
}
