#!/usr/bin/env node
// Per-request cost of workers mode in instructions (callgrind), beside the bench's anchor:
//   nginx   instructions per request of one nginx (master_process off) proxying to
//           /workers (a tsgi Node worker) and /raw (a raw node:http hello), with config.ts proxyCommon
//           on both, as bench/nginx.mjs does: the difference of a 100- and a 600-request run on one
//           keep-alive connection;
//   node    instructions per request of the tsgi worker and of the raw node:http server, each under
//           callgrind behind a native nginx: a window of N requests (8 keep-alive connections) counted
//           after a warm-up, node run with --single-threaded (no concurrent compiler or GC threads), which
//           makes the count repeat to about 0.2%.
//   floor   a third upstream, a Node server that parses nothing and writes canned bytes per request: the
//           least any Node worker behind nginx could cost, so the best ratio workers mode could reach.
// Only user-space instructions: both sides make the same system calls per request (strace: nginx 2 writev,
// 2 recvfrom, 1 getsockopt; node 1 read, 1 writev), so the kernel's share is the same for both.
// usage (root; valgrind, nginx; after npm run build): node adapters/nginx/measure-workers.mjs [nginx|node]
// Env: N (10000), WARM (20000), HANDLER (bench/handlers/hello.ts).
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = dirname(fileURLToPath(import.meta.url));
const { mainConf, proxyCommon } = await import(join(here, 'dist/config.js'));
const { buildWorkerBundle } = await import(join(here, 'dist/workers-bundle.js'));
const HANDLER = process.env.HANDLER ?? join(here, '../../bench/handlers/hello.ts');
const N = Number(process.env.N ?? 10_000);
const WARM = Number(process.env.WARM ?? 20_000);
const HELLO = 'Hello, world!\n';
const SECRET = 'a'.repeat(64);
const only = process.argv[2];

const RAW = `import { createServer } from 'node:http';
createServer({ keepAliveTimeout: 75000 }, (req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'content-length': 14, 'x-anchor': 'raw-node' });
  res.end(${JSON.stringify(HELLO)});
}).listen(process.argv[2]);
`;

const freePort = () =>
  new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });

const totals = (file) => Number(/^(?:summary|totals): (\d+)/m.exec(readFileSync(file, 'utf8'))?.[1] ?? 0);

/** `n` GETs of `path`, `conns` keep-alive connections, one request at a time on each. */
async function load(port, path, n, conns) {
  const per = Math.ceil(n / conns);
  await Promise.all(
    Array.from({ length: conns }, async () => {
      const s = net.connect(port, '127.0.0.1');
      await new Promise((r) => s.once('connect', r));
      s.setEncoding('latin1');
      let buf = '';
      for (let i = 0; i < per; i++) {
        s.write(`GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\n\r\n`);
        await new Promise((r) => {
          const on = (d) => {
            buf += d;
            if (buf.endsWith(HELLO)) {
              buf = '';
              s.off('data', on);
              r();
            }
          };
          s.on('data', on);
        });
      }
      s.destroy();
    }),
  );
  return per * conns;
}

async function up(port, path, child) {
  for (let i = 0; i < 600; i++) {
    if (child && child.exitCode !== null) throw new Error(`${path}: the server exited`);
    try {
      const r = await fetch(`http://127.0.0.1:${port}${path}`);
      if (r.status === 200 && (await r.text()) === HELLO) return;
    } catch {
      // not yet
    }
    await sleep(100);
  }
  throw new Error(`${path}: no answer`);
}

const dir = mkdtempSync(join(tmpdir(), 'tsgi-measure-workers-'));
chmodSync(dir, 0o755);
mkdirSync(join(dir, 'tmp'));
const children = [];
const handles = [];
const start = (cmd, args, opts = {}) => {
  const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'ignore'], ...opts });
  children.push(c);
  return c;
};
/** A worker on `sock` as the supervisor starts it (fd 3, config over IPC), optionally under valgrind. */
async function tsgiWorker(sock, wrap = []) {
  const entry = await buildWorkerBundle(HANDLER, dir);
  rmSync(sock, { force: true });
  const h = net._createServerHandle(sock, -1, -1);
  handles.push(h);
  const c = start(wrap[0] ?? process.execPath, [...wrap.slice(1), ...(wrap.length ? [process.execPath] : []), '--single-threaded', '--enable-source-maps', entry], {
    stdio: ['ignore', 'ignore', 'ignore', h.fd, 'ipc'],
  });
  c.send({ tsgi: 'config', secret: SECRET, authority: '127.0.0.1:1', maxBody: 1 << 20 });
  return c;
}
function rawNode(sock, wrap = [], script = RAW, name = 'raw.mjs') {
  writeFileSync(join(dir, name), script);
  rmSync(sock, { force: true });
  return start(wrap[0] ?? process.execPath, [...wrap.slice(1), ...(wrap.length ? [process.execPath] : []), '--single-threaded', join(dir, name), sock]);
}
// The floor (bench/servers/floor-node.mjs): the least any Node upstream can do per request over HTTP.
const floorNode = (sock, wrap = []) => rawNode(sock, wrap, readFileSync(join(here, '../../bench/servers/floor-node.mjs'), 'utf8'), 'floor.mjs');
function nginxConf(port, sockets, single) {
  const proxy = proxyCommon({ secret: SECRET }).map((l) => `  ${l}`).join('\n');
  const conf = mainConf({
    mode: 'workers',
    dir,
    host: '127.0.0.1',
    port,
    location: '= /unused',
    maxBody: 1 << 20,
    sockets: [sockets.tsgi],
    secret: SECRET,
    user: 'root',
    group: 'root',
    accessLog: 'off',
    errorLogLevel: 'crit',
    extraHttp: `upstream raw_node { server unix:${sockets.raw}; keepalive 64; }\nupstream floor_node { server unix:${sockets.floor}; keepalive 64; }`,
    extraServer: [
      `location = /workers {\n  proxy_pass http://tsgi_workers;\n  proxy_set_header X-Tsgi-Phase "";\n${proxy}\n}`,
      `location = /raw {\n  proxy_pass http://raw_node;\n${proxy}\n}`,
      `location = /floor {\n  proxy_pass http://floor_node;\n${proxy}\n}`,
    ].join('\n'),
  });
  const file = join(dir, 'nginx.conf');
  writeFileSync(file, single ? conf.replace('master_process on;', 'master_process off;') : conf);
  return file;
}

try {
  const sockets = { tsgi: join(dir, 'tsgi.sock'), raw: join(dir, 'raw.sock'), floor: join(dir, 'floor.sock') };
  const figures = {};
  if (only !== 'node') {
    await tsgiWorker(sockets.tsgi);
    rawNode(sockets.raw);
    floorNode(sockets.floor);
    const port = await freePort();
    const conf = nginxConf(port, sockets, true);
    for (const path of ['/workers', '/raw', '/floor']) {
      const run = async (n) => {
        const out = join(dir, `cg-nginx-${n}.out`);
        const vg = start('valgrind', ['--tool=callgrind', `--callgrind-out-file=${out}`, 'nginx', '-p', dir, '-c', conf]);
        await up(port, path, vg);
        await load(port, path, n, 1);
        vg.kill('SIGQUIT');
        await new Promise((r) => vg.once('exit', r));
        return totals(out);
      };
      const a = await run(100);
      const b = await run(600);
      figures[`nginx ${path}`] = (b - a) / 500;
      console.log(`nginx ${path}: ${Math.round((b - a) / 500)} instructions per request`);
    }
    for (const c of children.splice(0)) c.kill('SIGKILL');
    for (const h of handles.splice(0)) h.close();
  }
  if (only !== 'nginx') {
    for (const which of ['workers', 'raw', 'floor']) {
      const out = join(dir, `cg-node-${which}.out`);
      const wrap = ['valgrind', '--tool=callgrind', `--callgrind-out-file=${out}`, '--instr-atstart=no'];
      // the one measured under callgrind, the others natively, so nginx starts with every upstream there
      const vg = which === 'workers' ? await tsgiWorker(sockets.tsgi, wrap) : which === 'raw' ? rawNode(sockets.raw, wrap) : floorNode(sockets.floor, wrap);
      if (which !== 'workers') await tsgiWorker(sockets.tsgi);
      if (which !== 'raw') rawNode(sockets.raw);
      if (which !== 'floor') floorNode(sockets.floor);
      const port = await freePort();
      const ngx = start('nginx', ['-p', dir, '-c', nginxConf(port, sockets, false)]);
      await up(port, `/${which}`, vg);
      await load(port, `/${which}`, WARM, 8);
      execFileSync('callgrind_control', ['-i', 'on', String(vg.pid)], { stdio: 'ignore' });
      const n = await load(port, `/${which}`, N, 8);
      execFileSync('callgrind_control', ['-d', String(vg.pid)], { stdio: 'ignore' });
      await sleep(500);
      const dumped = readdirSync(dir).filter((f) => f.startsWith(`cg-node-${which}.out.`));
      const total = Math.max(0, ...dumped.map((f) => totals(join(dir, f))));
      figures[`node ${which}`] = total / n;
      console.log(`node (${which === 'workers' ? 'tsgi worker' : which === 'raw' ? 'raw node:http' : 'floor: canned bytes on net.Socket'}): ${Math.round(total / n)} instructions per request (${n} requests)`);
      // A graceful stop, awaited (bounded): a master killed at once leaves its workers behind.
      ngx.kill('SIGQUIT');
      await Promise.race([new Promise((r) => (ngx.exitCode !== null ? r() : ngx.once('exit', r))), sleep(10_000)]);
      for (const c of children.splice(0)) c.kill('SIGKILL');
      for (const h of handles.splice(0)) h.close();
      await sleep(300);
    }
  }
  if (!only) {
    const cost = (w) => figures[`nginx /${w}`] + figures[`node ${w}`];
    console.log(`per request, nginx + node: workers ${Math.round(cost('workers'))}, proxy_pass to raw node:http ${Math.round(cost('raw'))}, to the floor ${Math.round(cost('floor'))}`);
    console.log(`workers mode is ${(cost('raw') / cost('workers')).toFixed(2)}x the anchor; a worker that did nothing but write canned bytes would be ${(cost('raw') / cost('floor')).toFixed(2)}x`);
  }
} finally {
  for (const c of children) c.kill('SIGKILL');
  for (const h of handles) h.close();
  await sleep(300);
  rmSync(dir, { recursive: true, force: true });
}
