// Shared benchmark helpers: wrk on one core, the server on the other, interleaved rounds.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir, cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const SERVER_CPU = '0';
export const LOAD_CPU = String(Math.min(1, cpus().length - 1));

export function ensureTools() {
  const missing = ['wrk', 'taskset'].filter((t) => spawnSync('which', [t]).status !== 0);
  if (missing.length) {
    console.log(`installing wrk ...`);
    execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit' });
    execFileSync('apt-get', ['install', '-y', '-qq', 'wrk', 'util-linux'], { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } });
  }
}

export function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Spawns `cmd args` pinned to the server core; resolves once `url` answers. */
/** `ready`, when given, replaces the check that `url` answers (a server on a Unix socket). */
export async function startPinned(cmd, args, { url, ready, env, cpu = SERVER_CPU, quiet = true } = {}) {
  const child = spawn('taskset', ['-c', cpu, cmd, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', quiet ? 'ignore' : 'inherit', 'inherit'],
  });
  let exited = false;
  child.once('exit', () => (exited = true));
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (exited) throw new Error(`${cmd} ${args.join(' ')} exited before answering ${url}`);
    try {
      if (ready) {
        if (ready()) break;
        throw new Error('not yet');
      }
      const r = await fetch(url);
      await r.arrayBuffer();
      break;
    } catch {
      if (Date.now() > deadline) throw new Error(`${url ?? cmd} did not answer within 30 s`);
      await sleep(100);
    }
  }
  return {
    child,
    pid: child.pid,
    stop: async () => {
      if (exited) return;
      child.kill('SIGTERM');
      await Promise.race([new Promise((r) => child.once('exit', r)), sleep(5000)]);
      if (!exited) child.kill('SIGKILL');
    },
  };
}

let scriptDir;
/** A wrk Lua script file for a POST with a fixed body. */
export function postScript(body, contentType = 'application/json') {
  scriptDir ??= mkdtempSync(join(tmpdir(), 'tsgi-bench-'));
  const file = join(scriptDir, `post-${body.length}.lua`);
  writeFileSync(
    file,
    `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\nwrk.headers["Content-Type"] = "${contentType}"\n`,
  );
  return file;
}

/** A percentile from wrk's --latency distribution, in ms. */
function latencyMs(out, pct) {
  const m = new RegExp(`^\\s+${pct}%\\s+([\\d.]+)(us|ms|s)`, 'm').exec(out);
  if (!m) return NaN;
  const v = Number(m[1]);
  return m[2] === 'us' ? v / 1000 : m[2] === 's' ? v * 1000 : v;
}

const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100;

/**
 * Busy time of one core so far, in seconds: user + nice + system + irq + softirq from
 * /proc/stat. Steal (time the host gave to someone else) and idle/iowait are left out.
 */
export function coreBusySeconds(cpu = SERVER_CPU) {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${cpu} `));
  const [user, nice, system, , , irq, softirq] = line.trim().split(/\s+/).slice(1).map(Number);
  return (user + nice + system + irq + softirq) / CLK_TCK;
}

/**
 * Runs wrk pinned to the load core; returns req/s, error counts, and the server core's
 * busy CPU time per request served (µs), which steal does not distort the way req/s is.
 */
export function wrk(url, { duration = 5, connections = 50, threads = 1, script, timeout } = {}) {
  const args = ['-c', LOAD_CPU, 'wrk', '--latency', `-t${threads}`, `-c${connections}`, `-d${duration}s`];
  if (timeout) args.push('--timeout', `${timeout}s`);
  if (script) args.push('-s', script);
  args.push(url);
  const busy0 = coreBusySeconds();
  const out = execFileSync('taskset', args, { encoding: 'utf8' });
  const busy = coreBusySeconds() - busy0;
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1] ?? 0);
  const requests = Number(/(\d+) requests in/.exec(out)?.[1] ?? 0);
  const sock = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(out);
  const socketErrors = sock ? sock.slice(1).reduce((a, b) => a + Number(b), 0) : 0;
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0);
  const cpuUs = requests > 0 ? (busy * 1e6) / requests : 0;
  return { rps, requests, cpuUs, p50Ms: latencyMs(out, '50'), p99Ms: latencyMs(out, '99'), socketErrors, non2xx, raw: out };
}

/** Resident set size of a process and its children, in MiB. */
export function rssMiB(pid) {
  const pids = [pid];
  try {
    const kids = execFileSync('pgrep', ['-P', String(pid)], { encoding: 'utf8' }).trim().split('\n').filter(Boolean);
    pids.push(...kids.map(Number));
  } catch {
    // no children
  }
  let kb = 0;
  for (const p of pids) {
    try {
      kb += Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${p}/status`, 'utf8'))?.[1] ?? 0);
    } catch {
      // gone
    }
  }
  return kb / 1024;
}

export const median = (xs) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/**
 * Interleaved rounds: every round runs each scenario once, in a rotated order,
 * so drift on a shared machine hits all of them alike.
 */
export async function interleave(scenarios, { rounds = 3, warmup = Number(process.env.BENCH_WARMUP ?? 1), ...opts } = {}) {
  const results = Object.fromEntries(scenarios.map((s) => [s.name, { rps: [], cpuUs: [], p50Ms: [], p99Ms: [], socketErrors: 0, non2xx: 0 }]));
  for (const s of scenarios) wrk(s.url, { ...opts, ...s.wrk, duration: warmup });
  for (let r = 0; r < rounds; r++) {
    const order = scenarios.map((_, i) => scenarios[(i + r) % scenarios.length]);
    for (const s of order) {
      const m = wrk(s.url, { ...opts, ...s.wrk });
      const acc = results[s.name];
      acc.rps.push(m.rps);
      acc.cpuUs.push(m.cpuUs);
      acc.p50Ms.push(m.p50Ms);
      acc.p99Ms.push(m.p99Ms);
      acc.socketErrors += m.socketErrors;
      acc.non2xx += m.non2xx;
      if (s.afterRun) s.afterRun(acc);
    }
  }
  for (const s of scenarios) {
    results[s.name].median = median(results[s.name].rps);
    results[s.name].cpuMedian = median(results[s.name].cpuUs);
    results[s.name].p50Median = median(results[s.name].p50Ms);
    results[s.name].p99Median = median(results[s.name].p99Ms);
  }
  return results;
}

/** BENCH_HOLD=S: prints "name url" per target and keeps the servers up S seconds for a profiler. */
export async function holdIfAsked(targets) {
  if (!process.env.BENCH_HOLD) return false;
  console.log(targets.map(([name, url]) => `${name} ${url}`).join('\n'));
  await new Promise((r) => setTimeout(r, Number(process.env.BENCH_HOLD) * 1000));
  return true;
}

export function machineLine() {
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  return `${new Date().toISOString().slice(0, 10)}, ${cpus().length} × ${cpu}, Node ${process.version}`;
}

/** Replaces the section under `## <heading>` in bench/README.md. */
export function recordSection(heading, body) {
  const file = new URL('./README.md', import.meta.url);
  let text;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    text = '# tsgi benchmarks\n\nRun with `npm run bench` (Node), `npm run bench -- apache`, `npm run bench -- nginx`.\n';
  }
  const start = text.indexOf(`\n## ${heading}\n`);
  const section = `\n## ${heading}\n\n${body.trim()}\n`;
  if (start === -1) text = text.trimEnd() + '\n' + section;
  else {
    const next = text.indexOf('\n## ', start + 1);
    text = text.slice(0, start) + section + (next === -1 ? '' : text.slice(next));
  }
  writeFileSync(file, text);
}

/**
 * The anchors must be what they claim: `check(response, body)` returns a reason when the
 * response does not look like it came from the server named (a static file has an ETag,
 * Passenger sets X-Powered-By, ...).
 */
export async function checkAnchor(name, url, check) {
  const r = await fetch(url);
  const body = await r.text();
  const why = check(r, body);
  if (why) throw new Error(`bench: the ${name} anchor (${url}) is not what it claims: ${why}`);
}

/** "12.3 µs" style figure. */
export const us = (x) => `${x.toFixed(1)} µs`;

/**
 * The figures of one interleaved run as a markdown table: req/s and server CPU per request
 * (median over rounds), each as a ratio against `anchor` measured in the same run. A ratio
 * above 1 is better for tsgi on both columns: req/s over the anchor's, and the anchor's CPU
 * per request over this row's.
 */
export function figuresTable(rows, res, anchor, { errors = true, tsgiVersus = false } = {}) {
  const a = res[anchor];
  // tsgiVersus: `anchor` is tsgi's row, and each ratio says how tsgi compares with that row.
  const rpsRatio = (r) => (tsgiVersus ? a.median / r.median : r.median / a.median);
  const cpuRatio = (r) => (tsgiVersus ? r.cpuMedian / a.cpuMedian : a.cpuMedian / r.cpuMedian);
  const vs = tsgiVersus ? 'tsgi vs this' : 'vs anchor';
  const head = ['target', 'req/s (median)', vs, 'server CPU/req (median)', `${vs} (CPU)`, 'req/s per round'];
  if (errors) head.push('errors');
  const out = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`];
  for (const { key, label } of rows) {
    const r = res[key];
    const cells = [
      label,
      Math.round(r.median).toLocaleString('en-US'),
      `${rpsRatio(r).toFixed(2)}x`,
      us(r.cpuMedian),
      `${cpuRatio(r).toFixed(2)}x`,
      r.rps.map((x) => Math.round(x)).join(', '),
    ];
    if (errors) cells.push(String(r.socketErrors + r.non2xx));
    out.push(`| ${cells.join(' | ')} |`);
  }
  return out.join('\n');
}

/** `tsgi` vs `anchor` by CPU per request (anchor CPU / tsgi CPU) and by req/s. */
export function ratios(res, tsgi, anchor) {
  return { cpu: res[anchor].cpuMedian / res[tsgi].cpuMedian, rps: res[tsgi].median / res[anchor].median };
}
