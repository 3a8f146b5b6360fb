#!/usr/bin/env node
// The reliability table of the README (issue 12): for each host and each fault, under a bounded load of
// 4 keep-alive clients on loopback, the requests sent, the failed ones and the recovery time (from the
// fault to the last failed request; 0 when nothing failed). Run after `npm run build`:
//
//   node bench/reliability.mjs [--hosts serve,serve-workers,nginx-workers,apache,nginx-embedded] [--faults timeout,...]
//
// Each row starts its own server (`tsgi ...` as users run it) and stops it. Failures of the fault's own
// request that fail as they should (the 504 of a hung request, the 503s of an overload burst) are not
// counted as failed; a lost CPU-looping request is. "slowest request": the longest a background client
// waited after the fault (a client stuck on a stalled worker until it is replaced). A client retries a
// GET once on a fresh connection when its kept-alive connection was reset (RFC 9110 9.2.2), as browsers do.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, sleep, startTsgi } from '../conformance/dist/testing.js';

const HOSTS = {
  serve: { command: ['serve'], workers: false },
  'serve-workers': { command: ['serve'], args: ['--workers', '2'], workers: true },
  'nginx-workers': { command: ['nginx', 'run'], args: ['--workers', '2'], workers: true },
  apache: { command: ['apache', 'run'], args: ['--processes', '2'], workers: true },
  'nginx-embedded': { command: ['nginx', 'run'], workers: false, embedded: true },
};

const HANDLER = `const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default {
  async fetch(request: Request) {
    const url = new URL(request.url);
    if (url.pathname === '/hang') return new Promise<Response>(() => {});
    if (url.pathname === '/spin') for (;;);
    if (url.pathname === '/sleep') await sleep(Number(url.searchParams.get('ms') ?? 100));
    return new Response('pid ' + (typeof process === 'object' ? process.pid : 0));
  },
};
`;

/** GET on an agent: resolves { status, body } or { error }; one retry on a fresh connection after a reset. */
function get(url, agent, retry = true) {
  return new Promise((resolve) => {
    const req = request(url, { agent }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (d) => (body += d));
      res.on('end', () => resolve({ status: res.statusCode, body, retryAfter: res.headers['retry-after'] }));
      res.on('error', (e) => resolve({ error: e.message }));
    });
    req.setTimeout(30_000, () => req.destroy(new Error('no answer within 30 s')));
    req.on('error', (e) => {
      if (retry && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) return resolve(get(url, false, false));
      resolve({ error: e.code ?? e.message });
    });
    req.end();
  });
}

/** 4 clients in a loop on `/` until stopped: every outcome with its time. */
function background(base) {
  const agent = new Agent({ keepAlive: true, maxSockets: 4 });
  const seen = [];
  let running = true;
  const loops = Array.from({ length: 4 }, async () => {
    while (running) {
      const t0 = Date.now();
      const r = await get(base + '/', agent);
      seen.push({ t: Date.now(), ok: r.status === 200, ms: Date.now() - t0 });
    }
  });
  return {
    async stop() {
      running = false;
      await Promise.all(loops);
      agent.destroy();
      return seen;
    },
  };
}

/** Worker pids, from the bodies of `n` requests on fresh connections. */
async function pids(base, n = 40) {
  const out = new Set();
  for (let i = 0; i < n; i++) {
    const r = await get(base + '/', false);
    const m = /^pid (\d+)$/.exec(r.body ?? '');
    if (m && m[1] !== '0') out.add(Number(m[1]));
  }
  return [...out];
}

const kill = (pid, sig = 'SIGKILL') => {
  try {
    process.kill(pid, sig);
  } catch {
    /* gone */
  }
};

/** Each fault: the extra options, and what it does (returns how many of its own requests failed). */
const FAULTS = {
  timeout: {
    args: ['--request-timeout', '2'],
    // The njs bridge has the request deadline too (its timer).
    embeddedToo: true,
    async inject(base) {
      const r = await get(base + '/hang', false, false);
      return { own: 1, ownFailed: r.status === 504 ? 0 : 1, note: `hung request: ${r.status ?? r.error}` };
    },
  },
  'cpu-loop': {
    args: ['--request-timeout', '2'],
    needsWorkers: true,
    async inject(base) {
      const r = await get(base + '/spin', false, false);
      return { own: 1, ownFailed: 1, note: `looping request: ${r.status ?? r.error}` };
    },
  },
  'worker-kill': {
    needsWorkers: true,
    async inject(base) {
      const [victim] = await pids(base, 5);
      kill(victim);
      return { own: 0, ownFailed: 0, note: `killed ${victim}` };
    },
  },
  'kill-all': {
    needsWorkers: true,
    async inject(base) {
      const all = await pids(base);
      for (const p of all) kill(p);
      return { own: 0, ownFailed: 0, note: `killed ${all.length}` };
    },
  },
  overload: {
    args: ['--max-inflight', '2', '--queue-timeout', '1'],
    needsNode: true,
    async inject(base) {
      const all = await Promise.all(Array.from({ length: 50 }, () => get(base + '/sleep?ms=500', false, false)));
      const shed = all.filter((r) => r.status === 503).length;
      const bad = all.filter((r) => r.status !== 200 && r.status !== 503).length;
      return { own: all.length, ownFailed: bad, note: `${shed} shed with 503 + Retry-After` };
    },
  },
  recycle: {
    args: ['--max-requests', '100'],
    needsNode: true,
    async inject() {
      await sleep(4000);
      return { own: 0, ownFailed: 0, note: 'max-requests 100 under load' };
    },
  },
  reload: {
    async inject(_base, s) {
      s.proc.kill('SIGHUP');
      await sleep(4000);
      return { own: 0, ownFailed: 0, note: 'SIGHUP' };
    },
  },
};

const { values } = parseArgs({ options: { hosts: { type: 'string' }, faults: { type: 'string' } } });
const hosts = values.hosts ? values.hosts.split(',') : Object.keys(HOSTS);
const faults = values.faults ? values.faults.split(',') : Object.keys(FAULTS);
const dir = mkdtempSync(join(tmpdir(), 'tsgi-reliability-'));
const handler = join(dir, 'handler.ts');
writeFileSync(handler, HANDLER);

const rows = [];
try {
  for (const h of hosts) {
    const host = HOSTS[h];
    if (!host) throw new Error(`unknown host ${h} (${Object.keys(HOSTS).join(', ')})`);
    for (const f of faults) {
      const fault = FAULTS[f];
      if (!fault) throw new Error(`unknown fault ${f} (${Object.keys(FAULTS).join(', ')})`);
      if ((fault.needsWorkers && !host.workers) || ((fault.needsNode || (fault.args && !fault.embeddedToo)) && host.embedded)) {
        rows.push({ host: h, fault: f, sent: '', failed: '', recovery: '', slowest: '', note: fault.needsWorkers && !host.workers ? 'n/a: one process' : 'n/a: no Node process (njs)' });
        continue;
      }
      const port = await freePort();
      const s = await startTsgi([...host.command, handler, '--port', String(port), ...(host.args ?? []), ...(fault.args ?? [])]);
      try {
        const load = background(s.url);
        await sleep(1000);
        const t0 = Date.now();
        const r = await fault.inject(s.url, s);
        await sleep(2000);
        const seen = await load.stop();
        const failedAt = seen.filter((x) => !x.ok && x.t >= t0).map((x) => x.t);
        const failed = seen.filter((x) => !x.ok).length + r.ownFailed;
        rows.push({
          host: h,
          fault: f,
          sent: seen.length + r.own,
          failed,
          recovery: failedAt.length ? `${((Math.max(...failedAt) - t0) / 1000).toFixed(1)} s` : '0 s',
          slowest: `${(Math.max(0, ...seen.filter((x) => x.t >= t0).map((x) => x.ms)) / 1000).toFixed(1)} s`,
          note: r.note,
        });
      } finally {
        await s.stop();
      }
      console.error(`${h} ${f}: ${JSON.stringify(rows[rows.length - 1])}`);
    }
  }
} finally {
  rmSync(dir, { recursive: true, force: true });
}

console.log('| host | fault | requests sent | failed | recovery | slowest request | note |');
console.log('|---|---|---|---|---|---|---|');
for (const r of rows) console.log(`| ${r.host} | ${r.fault} | ${r.sent} | ${r.failed} | ${r.recovery} | ${r.slowest} | ${r.note} |`);
