// npm run bench -- ws [--record]: a small-message WebSocket echo on each host that carries WebSocket,
// against a raw `ws` server (servers/raw-ws.mjs) measured in the same run.
//   raw ws          the anchor: the ws package on node:http, echoing
//   tsgi serve      node-http's websocket.ts, the handler bench/handlers/ws-echo.ts
//   nginx workers   tsgi nginx run --workers 1: nginx relays the upgraded connection to one Node worker
//   apache          tsgi apache run --processes 1: mod_tsgi's tunnel relays it to one Node worker (one
//                   Apache thread per socket)
// Every server process is pinned to core 0, the
// load (ws-load.mjs: C sockets, each sending a 32-byte text and waiting for its echo) to core 1.
// Figures: messages/s and the server core's busy CPU per message (lib.mjs coreBusySeconds), median of
// interleaved rounds. Env: BENCH_SECONDS (5), BENCH_ROUNDS (3), BENCH_CONNECTIONS (50), BENCH_WS_BYTES (32).
import { execFileSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { LOAD_CPU, SERVER_CPU, checkAnchor, coreBusySeconds, freePort, machineLine, median, recordSection, startPinned, us } from './lib.mjs';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const tsgi = here('../cli/bin/tsgi.js');
const HANDLER = here('handlers/ws-echo.ts');

const TARGETS = [
  { name: 'raw ws', args: [here('servers/raw-ws.mjs')], check: (r) => (r.headers.get('x-anchor') === 'raw-ws' ? '' : 'no x-anchor: raw-ws header') },
  { name: 'tsgi serve', args: [tsgi, 'serve', HANDLER], port: true },
  { name: 'nginx workers', args: [tsgi, 'nginx', 'run', HANDLER, '--workers', '1'], port: true },
  { name: 'apache', args: [tsgi, 'apache', 'run', HANDLER, '--processes', '1', '--no-access-log'], port: true },
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
  try {
    for (const t of TARGETS) {
      const port = await freePort();
      const args = t.port ? [...t.args, '--port', String(port)] : t.args;
      const url = `http://127.0.0.1:${port}/`;
      const proc = await startPinned(process.execPath, args, { url, env: { PORT: String(port) } });
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
    const table = lines.join('\n');
    console.log(table);
    if (record) {
      recordSection(
        'WebSocket',
        `${machineLine()}. Servers pinned to core 0, the load (bench/ws-load.mjs) on core 1; ${rounds} interleaved rounds of ${seconds} s, median.\n` +
          `Targets (issue 13): Node >= 0.9x raw ws, nginx workers and Apache >= 0.6x.\n\n${table}`,
      );
      console.log('recorded in bench/README.md');
    }
  } finally {
    await Promise.all(running.map((t) => t.proc.stop()));
  }
}
