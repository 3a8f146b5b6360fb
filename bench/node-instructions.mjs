#!/usr/bin/env node
// Server cost per request in instructions (callgrind), for a busy machine where req/s and CPU time wander:
// `tsgi serve` on a handler against raw node:http (bench/servers/raw-node.mjs), GET hello and the 1 KB POST
// JSON echo of bench/node.mjs. Each server runs under callgrind (node --single-threaded: no concurrent
// compiler or GC threads, so the count repeats), counting off; WARM requests warm it up, then N requests are
// counted (the same 8 keep-alive connections, one request at a time on each, the same client for both servers).
// User-space instructions only; `strace -c -f` shows both servers make the same system calls per request
// (one read, one writev).
// usage (valgrind; after npm run build): node bench/node-instructions.mjs [get|post]
// Env: N (10000), WARM (60000), HANDLER (bench/handlers/hello.ts), ROUNDS (1), ONLY (raw|tsgi: one server),
// RAW (another anchor script), TSGI (another checkout's cli/bin/tsgi.js, for before/after), KEEP (a directory: the callgrind files are kept there, for callgrind_annotate), NODE_FLAGS (e.g.
// --perf-basic-prof: /tmp/perf-PID.map names the JIT code callgrind shows as addresses).
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort, median } from './lib.mjs';
import { json1k } from './node.mjs';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const HANDLER = resolve(process.env.HANDLER ?? here('handlers/hello.ts'));
const N = Number(process.env.N ?? 10_000);
// Shorter warm-ups leave TurboFan compiling inside the counted window (thousands of instructions per request).
const WARM = Number(process.env.WARM ?? 60_000);
const ROUNDS = Number(process.env.ROUNDS ?? 1);
const HELLO = 'Hello, world!\n';
const JSON1K = json1k; // bench/node.mjs's body
const kinds = process.argv[2] ? [process.argv[2]] : ['get', 'post'];

const totals = (file) => Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(file, 'utf8'))?.[1] ?? 0);

/** `n` keep-alive connections to `port`. */
async function connect(port, n) {
  return Promise.all(
    Array.from({ length: n }, async () => {
      const s = net.connect(port, '127.0.0.1');
      await new Promise((r, j) => s.once('connect', r).once('error', j));
      s.setEncoding('latin1');
      return s;
    }),
  );
}

/**
 * `n` requests of `kind` spread over `sockets`, one at a time on each. The warm-up and the
 * counted window use the same connections: new ones make V8 throw away and redo optimized
 * code in the window (new socket objects, "wrong map"), thousands of instructions a request.
 */
async function load(port, kind, n, sockets) {
  const per = Math.ceil(n / sockets.length);
  const head =
    kind === 'post'
      ? `POST / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nContent-Type: application/json\r\nContent-Length: ${JSON1K.length}\r\n\r\n${JSON1K}`
      : `GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`;
  const tail = kind === 'post' ? JSON1K : HELLO;
  await Promise.all(
    sockets.map(async (s) => {
      let buf = '';
      for (let i = 0; i < per; i++) {
        s.write(head);
        await new Promise((r, j) => {
          const on = (d) => {
            buf += d;
            if (!buf.endsWith(tail)) return;
            s.off('data', on);
            if (!buf.startsWith('HTTP/1.1 200 ')) return j(new Error(`not a 200: ${buf.slice(0, 80)}`));
            buf = '';
            r();
          };
          s.on('data', on);
        });
      }
    }),
  );
  return per * sockets.length;
}

async function up(port, child) {
  for (let i = 0; i < 1200; i++) {
    if (child.exitCode !== null) throw new Error('the server exited');
    try {
      const r = await fetch(`http://127.0.0.1:${port}/`);
      if (r.status === 200 && (await r.text()) === HELLO) return;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error('no answer');
}

const dir = process.env.KEEP ?? mkdtempSync(join(tmpdir(), 'tsgi-node-instr-'));
const SERVERS = {
  'raw node:http': (port) => ({ args: [resolve(process.env.RAW ?? here('servers/raw-node.mjs'))], env: { PORT: String(port) } }),
  'tsgi serve': (port) => ({ args: [resolve(process.env.TSGI ?? here('../cli/bin/tsgi.js')), 'serve', HANDLER, '--port', String(port), ...(process.env.SERVE_ARGS ?? '--no-access-log').split(' ').filter(Boolean)], env: {} }),
};

let child;
try {
  const figures = {};
  for (let round = 0; round < ROUNDS; round++) {
    for (const kind of kinds) {
      for (const [name, how] of Object.entries(SERVERS)) {
        if (process.env.ONLY && !name.startsWith(process.env.ONLY)) continue;
        const port = await freePort();
        const { args, env } = how(port);
        const out = join(dir, `cg-${round}-${kind}-${name.replace(/\W/g, '')}.out`);
        child = spawn(
          'valgrind',
          ['--tool=callgrind', `--callgrind-out-file=${out}`, '--instr-atstart=no', process.execPath, '--single-threaded', ...(process.env.NODE_FLAGS ?? '').split(' ').filter(Boolean), ...args],
          { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, ...env }, cwd: dir }, // V8 logs (NODE_FLAGS) land there
        );
        await up(port, child);
        const sockets = await connect(port, 8);
        await load(port, kind, WARM, sockets);
        execFileSync('callgrind_control', ['-i', 'on', String(child.pid)], { stdio: 'ignore' });
        const n = await load(port, kind, N, sockets);
        execFileSync('callgrind_control', ['-d', String(child.pid)], { stdio: 'ignore' });
        for (const s of sockets) s.destroy();
        await sleep(500);
        const base = out.slice(dir.length + 1);
        const total = Math.max(0, ...readdirSync(dir).filter((f) => f.startsWith(`${base}.`)).map((f) => totals(join(dir, f))));
        const per = total / n;
        (figures[`${kind} ${name}`] ??= []).push(per);
        console.log(`round ${round + 1} ${kind.toUpperCase()} ${name}: ${Math.round(per)} instructions per request (${n} requests)`);
        child.kill('SIGKILL');
        await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)));
      }
    }
  }
  for (const kind of process.env.ONLY ? [] : kinds) {
    const raw = median(figures[`${kind} raw node:http`]);
    const tsgi = median(figures[`${kind} tsgi serve`]);
    console.log(`${kind.toUpperCase()}: raw node:http ${Math.round(raw)}, tsgi serve ${Math.round(tsgi)} instructions per request: tsgi is ${(raw / tsgi).toFixed(3)}x raw node:http`);
  }
} finally {
  if (child && child.exitCode === null) child.kill('SIGKILL');
  if (!process.env.KEEP) rmSync(dir, { recursive: true, force: true });
}
