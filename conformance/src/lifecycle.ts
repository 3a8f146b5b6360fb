/**
 * The lifecycle matrix: what a host does as a process, run the way users run
 * it (the `tsgi` command), one test body for every host:
 *
 *   describeLifecycle({ name: 'apache', server: 'apache', command: ['apache', 'run'] });
 *
 * Start-up failures (a missing handler, no fetch, a throw at load, a failing
 * init) must give one line and a non-zero exit within seconds; SIGTERM drains
 * in-flight requests and waitUntil work, then runs `close` once; SIGHUP reloads
 * onto the handler as it is now without a failed request; a killed worker
 * fails only what it held (what it had been handed, never re-run on another
 * worker) and is replaced, after which nothing fails; a client that leaves aborts
 * `request.signal` and cancels the response stream; `--watch` reloads on a change to
 * a file the handler imports, as SIGHUP does, and never without one.
 *
 * The handlers are written into a temporary directory per run. Where the
 * handler must report what happened inside the server (close ran, a stream
 * was cancelled) it appends lines to a marker file named by LIFECYCLE_MARKERS:
 * that needs node:fs, so embedded nginx (njs) runs only the cases whose
 * handlers are plain web code, and opts out of the rest with its reasons.
 */
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, it } from 'vitest';
import { parsePrometheus, type Sample } from '@tsgi/core/node';
import WebSocket from 'ws';
import { alive, descendantsOf, freePort, load, sleep, startTsgi, waitFor, type RunningTsgi } from './testing.js';

export interface LifecycleTarget {
  /** Shown in test names. */
  name: string;
  server: 'node' | 'apache' | 'nginx';
  mode?: string;
  /** The `tsgi` words before the handler: ['serve'], ['apache', 'run'], ['nginx', 'run']. */
  command: string[];
  /** Words after the handler (besides --port): ['--workers', '2']. */
  args?: string[];
  /** The server runs Node worker processes that can be killed one by one. */
  workers?: boolean;
}

export interface LifecycleCase {
  id: string;
  title: string;
  /** 'server' or 'server:mode' -> why the case cannot apply there. */
  optOut?: Record<string, string>;
  run(t: LifecycleContext): Promise<void>;
}

export interface LifecycleContext {
  target: LifecycleTarget;
  /** Writes a handler file into this run's directory and returns its path. */
  handler(name: string, source: string): string;
  /** Starts the host on a free port with `handler`. */
  start(handler: string, extraArgs?: string[]): Promise<RunningTsgi>;
  /** Runs the host expecting it to fail at start-up. */
  startFails(handler: string): Promise<{ code: number | null; lines: string[]; ms: number }>;
  /** Lines the handler appended to the marker file so far. */
  markers(): string[];
}

const NJS_NO_NODE =
  'embedded nginx runs the handler in njs, which has no node:fs for the marker file this case reads, and no Node worker process';
const NJS_INIT_PER_REQUEST = 'njs 0.7.9 runs the module (and init) per request, so init cannot fail at start-up';
const NJS_NO_CLOSE = 'njs 0.7.9 has no hook at nginx shutdown: close never runs in embedded mode';
const NJS_NO_ABORT = 'njs 0.7.9 tears the request VM down on client abort without running JS (njs #955)';
const NO_WORKERS = 'this host serves in one process: there is no worker to kill';

/** A handler that appends `line` to the marker file (Node hosts only). */
const MARK = `import { appendFileSync } from 'node:fs';
const mark = (line: string): void => appendFileSync(process.env.LIFECYCLE_MARKERS!, line + '\\n');
`;

const sleepMs = `const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));\n`;

/**
 * GET `url`'s body text. A request that finds its keep-alive connection closed by the
 * server is retried once on a new one, as clients do for idempotent requests
 * (RFC 9110 9.2.2): a server that restarts closes its idle connections.
 */
async function getText(url: string): Promise<string> {
  try {
    return await (await fetch(url)).text();
  } catch {
    return fetch(url, { headers: { connection: 'close' } }).then((r) => r.text(), () => '');
  }
}

/** Reads the response of a raw request on a plain socket, up to `ms`. */
function rawGet(url: string, path: string, ms: number): Promise<{ head: string; error?: string }> {
  const u = new URL(url);
  return new Promise((resolve) => {
    const s = connect(Number(u.port), u.hostname);
    let data = '';
    const t = setTimeout(() => {
      s.destroy();
      resolve({ head: data });
    }, ms);
    s.on('connect', () => s.write(`GET ${path} HTTP/1.1\r\nHost: ${u.host}\r\nConnection: close\r\n\r\n`));
    s.on('data', (d) => (data += d.toString('latin1')));
    s.on('error', (e) => {
      clearTimeout(t);
      resolve({ head: data, error: e.message });
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve({ head: data });
    });
  });
}

/** A WebSocket to `url`/ws, open: what it was sent (as text) and its close code. */
async function openSocket(url: string): Promise<{ ws: WebSocket; said: string[]; closed: Promise<number> }> {
  const ws = new WebSocket(url.replace(/^http/, 'ws').replace(/\/?$/, '/ws'));
  const said: string[] = [];
  ws.on('message', (d: Buffer) => said.push(d.toString()));
  const closed = new Promise<number>((r) => ws.on('close', (code: number) => r(code)));
  await new Promise<void>((ok, fail) => {
    ws.once('open', () => ok());
    ws.once('error', fail);
  });
  return { ws, said, closed };
}

export const lifecycleCases: LifecycleCase[] = [
  {
    id: 'start.missing-handler',
    title: 'a handler path that does not exist: one line, non-zero exit, within seconds',
    async run(t) {
      const r = await t.startFails(join(tmpdir(), 'tsgi-no-such-dir', 'handler.ts'));
      assert.equal(r.code, 1, r.lines.join('\n'));
      assert.equal(r.lines.length, 1, `expected one line, got:\n${r.lines.join('\n')}`);
      assert.match(r.lines[0]!, /not found/);
    },
  },
  {
    id: 'start.no-fetch',
    title: 'a module without fetch: one line, non-zero exit, within seconds',
    async run(t) {
      const r = await t.startFails(t.handler('no-fetch.ts', 'export default { hello: 1 };\n'));
      assert.equal(r.code, 1, r.lines.join('\n'));
      assert.equal(r.lines.length, 1, `expected one line, got:\n${r.lines.join('\n')}`);
      assert.match(r.lines[0]!, /fetch/);
    },
  },
  {
    id: 'start.throws-at-load',
    title: 'a module that throws while loading: one line naming the error, non-zero exit',
    async run(t) {
      const src = `const fail = (): never => { throw new Error('boom-at-load'); };
fail();
export default { fetch: () => new Response('never') };
`;
      const r = await t.startFails(t.handler('throws.ts', src));
      assert.equal(r.code, 1, r.lines.join('\n'));
      assert.equal(r.lines.length, 1, `expected one line, got:\n${r.lines.join('\n')}`);
      assert.match(r.lines[0]!, /boom-at-load/);
    },
  },
  {
    id: 'start.init-fails',
    title: 'a failing init: one line naming the error, non-zero exit, nothing served',
    optOut: { 'nginx:embedded': NJS_INIT_PER_REQUEST },
    async run(t) {
      const src = `export default {
  async init() { throw new Error('init-boom'); },
  fetch: () => new Response('never'),
};
`;
      const r = await t.startFails(t.handler('init-fails.ts', src));
      assert.equal(r.code, 1, r.lines.join('\n'));
      assert.equal(r.lines.length, 1, `expected one line, got:\n${r.lines.join('\n')}`);
      assert.match(r.lines[0]!, /init-boom/);
    },
  },
  {
    id: 'stop.sigterm-drains',
    title: 'SIGTERM: the in-flight request completes, waitUntil work finishes, then close runs once per process',
    optOut: { 'nginx:embedded': `${NJS_NO_CLOSE}; ${NJS_NO_NODE}` },
    async run(t) {
      const src = `${MARK}${sleepMs}
export default {
  async fetch(request: Request, ctx: { waitUntil(p: Promise<unknown>): void }) {
    const url = new URL(request.url);
    if (url.pathname === '/slow') {
      mark('slow-start ' + process.pid);
      ctx.waitUntil(sleep(600).then(() => mark('wait-done ' + process.pid)));
      await sleep(800);
      return new Response('slow-done');
    }
    return new Response('ok');
  },
  close() { mark('closed ' + process.pid); },
};
`;
      const s = await t.start(t.handler('drain.ts', src));
      const slow = fetch(s.url + '/slow').then(async (r) => ({ status: r.status, body: await r.text() }));
      await waitFor(() => t.markers().some((l) => l.startsWith('slow-start')), 10_000, 'the slow request to start');
      const end = await s.kill('SIGTERM');
      const res = await slow;
      assert.deepEqual(res, { status: 200, body: 'slow-done' });
      assert.equal(end.code, 0, `exit ${end.signal ?? end.code}:\n${s.stderr()}`);
      const m = t.markers();
      const pid = m.find((l) => l.startsWith('slow-start'))!.split(' ')[1];
      const waitAt = m.indexOf(`wait-done ${pid}`);
      const closedAt = m.indexOf(`closed ${pid}`);
      assert.ok(waitAt >= 0, `waitUntil work did not finish:\n${m.join('\n')}`);
      assert.ok(closedAt > waitAt, `close ran before the waitUntil work finished, or not at all:\n${m.join('\n')}`);
      const closes = m.filter((l) => l.startsWith('closed '));
      assert.equal(new Set(closes).size, closes.length, `close ran twice in one process:\n${m.join('\n')}`);
    },
  },
  {
    id: 'reload.sighup',
    title: 'SIGHUP under load: the handler as it is now is served, no request fails, the old generation closes',
    async run(t) {
      const node = t.target.server !== 'nginx' || t.target.mode !== 'embedded';
      const version = (v: string): string =>
        node
          ? `${MARK}export default {
  fetch: () => new Response('${v}'),
  close() { mark('closed ${v} ' + process.pid); },
};
`
          : `export default { fetch: () => new Response('${v}') };\n`;
      const file = t.handler('reload.ts', version('v1'));
      const s = await t.start(file);
      try {
        const l = load(s.url + '/', 4, true);
        await sleep(300);
        writeFileSync(file, version('v2'));
        s.proc.kill('SIGHUP');
        await waitFor(async () => (await getText(s.url + '/')) === 'v2', 60_000, 'v2 to be served');
        await sleep(300);
        const r = await l.stop();
        assert.equal(r.failed, 0, `failed requests during the reload: ${JSON.stringify(r)}`);
        assert.ok((r.bodies.v2 ?? 0) > 0 && (r.bodies.v1 ?? 0) > 0, JSON.stringify(r.bodies));
        assert.ok(alive(s.proc.pid!), 'the server died on SIGHUP');
        if (node) await waitFor(() => t.markers().some((m) => m.startsWith('closed v1')), 30_000, 'close on the old generation');
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'crash.worker-killed',
    title: 'a killed worker fails only the requests it held (a 502 or a reset, never a re-run), and a replacement serves',
    optOut: { 'nginx:embedded': NJS_NO_NODE, node: NO_WORKERS },
    async run(t) {
      const src = `${MARK}${sleepMs}
export default {
  async fetch(request: Request) {
    const url = new URL(request.url);
    const id = url.searchParams.get('id') ?? '-';
    mark('start ' + id + ' ' + process.pid);
    if (url.pathname === '/hold') await sleep(5000);
    return new Response('pid ' + process.pid);
  },
};
`;
      const s = await t.start(t.handler('crash.ts', src));
      try {
        const held = fetch(s.url + '/hold?id=held').then(
          (r) => r.status,
          () => 'reset',
        );
        await waitFor(() => t.markers().some((l) => l.startsWith('start held ')), 10_000, 'the held request');
        const victim = Number(t.markers().find((l) => l.startsWith('start held '))!.split(' ')[2]);
        const l = load((n) => `${s.url}/?id=${n}`, 4);
        await sleep(200);
        process.kill(victim, 'SIGKILL');
        const heldOutcome = await held;
        assert.ok(heldOutcome === 502 || heldOutcome === 'reset', `the held request ended with ${heldOutcome}`);
        await waitFor(
          async () => {
            const r = await fetch(s.url + '/').then((x) => x.text(), () => '');
            return r.startsWith('pid ') && r !== `pid ${victim}`;
          },
          30_000,
          'a replacement worker',
        );
        await sleep(500);
        const r = await l.stop();
        const m = t.markers();
        const ranOn = (id: string): string[] => m.filter((x) => x.startsWith(`start ${id} `)).map((x) => x.split(' ')[2]!);
        assert.equal(ranOn('held').length, 1, `the held request ran again: ${ranOn('held').join(', ')}`);
        // What the dead worker had been handed (started, or still unread in its connections) may fail:
        // at most one per load connection, each one run on the victim or on no worker at all. No server
        // re-runs anything; only the client may retry a GET whose connection was reset (load() does).
        assert.ok(r.failed <= 4, `${r.failed} requests failed: ${JSON.stringify(r)}`);
        for (const url of r.failedUrls) {
          const where = ranOn(new URL(url).searchParams.get('id')!);
          assert.ok(where.every((pid) => pid === String(victim)), `${url} failed but ran on ${where.join(', ')}`);
        }
        const retried = new Set(r.retriedUrls.map((u) => new URL(u).searchParams.get('id')));
        for (const id of new Set(m.map((x) => x.split(' ')[1]))) {
          if (!retried.has(id!)) assert.ok(ranOn(id!).length <= 1, `request ${id} ran ${ranOn(id!).length} times`);
        }
        // Once the replacement serves, nothing fails.
        const after = load(s.url + '/', 4);
        await sleep(500);
        const later = await after.stop();
        assert.equal(later.failed, 0, `requests failed after the worker was replaced: ${JSON.stringify(later)}`);
        assert.ok(later.ok > 0, JSON.stringify(later));
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'client.leaves',
    title: 'a client that leaves before the first chunk: request.signal aborts and the stream is cancelled',
    optOut: { 'nginx:embedded': `${NJS_NO_ABORT}; ${NJS_NO_NODE}` },
    async run(t) {
      const src = `${MARK}
export default {
  fetch(request: Request) {
    request.signal.addEventListener('abort', () => mark('aborted'));
    return new Response(new ReadableStream({
      cancel() { mark('cancelled'); },
    }), { headers: { 'content-type': 'text/event-stream' } });
  },
};
`;
      const s = await t.start(t.handler('leaves.ts', src));
      try {
        await rawGet(s.url, '/sse', 300);
        await waitFor(
          () => t.markers().includes('aborted') && t.markers().includes('cancelled'),
          10_000,
          `abort and cancel (saw: ${t.markers().join(', ')})`,
        );
      } finally {
        await s.stop();
      }
    },
  },
  // ---- WebSocket at shutdown (issue 13) ----------------------------------
  {
    id: 'stop.websocket-1001',
    title: 'SIGTERM with a WebSocket open: it keeps working through the graceful period, then gets 1001; its close hook runs before close()',
    optOut: {
      'nginx:embedded': 'njs 0.7.9 has no WebSocket server API: the embedded build refuses a handler with websocket hooks',
    },
    async run(t) {
      const src = `${MARK}
export default {
  fetch: () => new Response('ok'),
  websocket: {
    open() { mark('ws-open ' + process.pid); },
    message(peer: { send(m: unknown): boolean }, m: unknown) { peer.send(m); },
    close(_peer: unknown, d: { code: number }) { mark('ws-close ' + d.code + ' ' + process.pid); },
  },
  close() { mark('closed ' + process.pid); },
};
`;
      const s = await t.start(t.handler('ws-stop.ts', src));
      const { ws, said: messages, closed } = await openSocket(s.url);
      ws.send('before');
      await waitFor(() => messages.includes('before'), 10_000, 'the echo before SIGTERM');
      const end = s.kill('SIGTERM');
      // Draining: the open socket still carries messages.
      await sleep(500);
      ws.send('during');
      await waitFor(() => messages.includes('during'), 10_000, 'the echo while the server drains');
      assert.equal(await closed, 1001, 'the close code the server sent at the end of the graceful period');
      const e = await end;
      assert.equal(e.code, 0, `exit ${e.signal ?? e.code}:\n${s.stderr()}`);
      const m = t.markers();
      const pid = m.find((l) => l.startsWith('ws-open '))!.split(' ')[1];
      const closeAt = m.indexOf(`ws-close 1001 ${pid}`);
      assert.ok(closeAt >= 0, `the close hook did not see 1001:\n${m.join('\n')}`);
      assert.ok(m.indexOf(`closed ${pid}`) > closeAt, `close() ran before the socket's close hook:\n${m.join('\n')}`);
    },
  },
  {
    id: 'reload.websocket',
    title: 'SIGHUP with a WebSocket open: the reload completes, new sockets reach the new handler, the old socket keeps its handler and gets 1001 after the graceful period',
    optOut: {
      'nginx:embedded': 'njs 0.7.9 has no WebSocket server API: the embedded build refuses a handler with websocket hooks',
    },
    async run(t) {
      const version = (v: string): string => `${MARK}
export default {
  fetch: () => new Response('${v}'),
  websocket: {
    message(peer: { send(m: string): boolean }, m: unknown) { peer.send('${v}:' + String(m)); },
    close(_peer: unknown, d: { code: number }) { mark('ws-close ${v} ' + d.code); },
  },
};
`;
      const file = t.handler('ws-reload.ts', version('v1'));
      const s = await t.start(file);
      try {
        const open = () => openSocket(s.url);
        const a = await open();
        a.ws.send('a1');
        await waitFor(() => a.said.includes('v1:a1'), 10_000, 'the first echo');
        writeFileSync(file, version('v2'));
        s.proc.kill('SIGHUP');
        await waitFor(async () => (await getText(s.url + '/')) === 'v2', 60_000, 'v2 to be served');
        const b = await open();
        b.ws.send('b1');
        a.ws.send('a2');
        await waitFor(() => b.said.includes('v2:b1') && a.said.includes('v1:a2'), 10_000, 'both echoes (old socket on v1, new on v2)');
        assert.equal(await a.closed, 1001, 'the old socket closes with 1001');
        await waitFor(() => t.markers().includes('ws-close v1 1001'), 10_000, "the old socket's close hook");
        b.ws.send('b2');
        await waitFor(() => b.said.includes('v2:b2'), 10_000, 'the new socket still serving');
        assert.ok(!/reload failed/.test(s.stderr()), s.stderr());
        assert.ok(alive(s.proc.pid!), 'the server died on SIGHUP');
        b.ws.close(1000);
        await b.closed;
      } finally {
        await s.stop();
      }
    },
  },
  // ---- the development loop (issue 11): --watch
  {
    id: 'watch.reload',
    title:
      '--watch: a change to a module the handler imports reloads under load with no failed request (old close runs); a syntax error keeps the old code and prints one line; no reload without a change',
    async run(t) {
      const node = t.target.server !== 'nginx' || t.target.mode !== 'embedded';
      const dep = (v: string): string => `export const version = '${v}';\n`;
      const depFile = t.handler('watch-dep.ts', dep('v1'));
      const src = node
        ? `${MARK}import { version } from './watch-dep.ts';
export default {
  fetch: () => new Response(version),
  close() { mark('closed ' + version + ' ' + process.pid); },
};
`
        : `import { version } from './watch-dep.ts';\nexport default { fetch: () => new Response(version) };\n`;
      const file = t.handler('watch.ts', src);
      const s = await t.start(file, ['--watch']);
      const count = (re: RegExp): number => s.stderr().split('\n').filter((l) => re.test(l)).length;
      try {
        await waitFor(() => /watching 2 files/.test(s.stderr()), 30_000, `the watch line (stderr: ${s.stderr()})`);
        const l = load(s.url + '/', 4, true);
        await sleep(300);
        writeFileSync(depFile, dep('v2'));
        await waitFor(async () => (await getText(s.url + '/')) === 'v2', 60_000, 'v2 to be served');
        await sleep(300);
        const r = await l.stop();
        assert.equal(r.failed, 0, `failed requests during the reload: ${JSON.stringify(r)}`);
        assert.ok((r.bodies.v2 ?? 0) > 0 && (r.bodies.v1 ?? 0) > 0, JSON.stringify(r.bodies));
        if (node) await waitFor(() => t.markers().some((m) => m.startsWith('closed v1')), 30_000, 'close on the old generation');

        // A syntax error: one line, and the old code keeps serving.
        writeFileSync(depFile, `export const version = ;\n`);
        await waitFor(() => count(/reload failed/) > 0, 60_000, `the reload failure line (stderr: ${s.stderr()})`);
        await sleep(1_000);
        assert.equal(count(/reload failed/), 1, s.stderr());
        assert.equal(count(/watch-dep\.ts/), 1, `one line names the error:\n${s.stderr()}`);
        assert.equal(await getText(s.url + '/'), 'v2');

        // Fixed: served again; then no reload without a change (a rewrite of the same bytes included).
        writeFileSync(depFile, dep('v3'));
        await waitFor(async () => (await getText(s.url + '/')) === 'v3', 60_000, 'v3 to be served');
        await sleep(1_000);
        const reloads = count(/reloaded/);
        writeFileSync(depFile, dep('v3'));
        writeFileSync(file, src);
        await sleep(2_000);
        assert.equal(count(/reloaded/), reloads, `reloaded without a change:\n${s.stderr()}`);
        assert.equal(count(/reload failed/), 1, s.stderr());
        assert.equal(await getText(s.url + '/'), 'v3');
      } finally {
        await s.stop();
      }
    },
  },
];

// ---- Operations (issue 12): one test body per behaviour, on every host that registers the matrix. ----

const NJS_NO_OPS = 'embedded nginx runs the handler in njs, with no Node process to time, queue, count or recycle (tsgi nginx run refuses these options without --workers)';
const NJS_CPU_LOOP =
  'njs cannot interrupt a CPU loop: the request has its own VM in the nginx worker process, without preemption, and no second process watches it (the request deadline is an njs timer, which a loop never lets run)';
const ONE_PROCESS_LOOP = 'one process: a CPU loop blocks the whole server and no supervisor can see it (run --workers N for stall detection)';

/**
 * The marker of embedded nginx (njs has no node:fs, and sees only the environment nginx.conf lists): a
 * line in nginx's error log, which is the command's stderr; markers() reads it from there.
 */
const NJS_MARK_TAG = 'tsgi-lifecycle-mark: ';
const MARK_NJS = `declare const ngx: { log(level: number, message: string): void; WARN: number };
const mark = (line: string): void => ngx.log(ngx.WARN, '${NJS_MARK_TAG}' + line);
`;
/** The marker lines embedded nginx logged (njs's ngx.log adds nothing after the message). */
const njsMarks = (stderr: string): string[] =>
  stderr
    .split('\n')
    .map((l) => /tsgi-lifecycle-mark: (.*)$/.exec(l)?.[1])
    .filter((m): m is string => m !== undefined);

/** The operations handler: / answers its pid, /hang never answers, /spin loops forever, /sleep?ms=N. */
const opsHandler = (target: LifecycleTarget): string => `${target.mode === 'embedded' ? MARK_NJS : MARK}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
export default {
  async fetch(request: Request) {
    const url = new URL(request.url);
    if (url.pathname === '/hang') {
      request.signal.addEventListener('abort', () => mark('aborted ' + (request.signal.reason as Error).name));
      return new Promise<Response>(() => {});
    }
    if (url.pathname === '/stall') {
      // The head and a first chunk leave, then nothing: no progress.
      request.signal.addEventListener('abort', () => mark('stall aborted ' + (request.signal.reason as Error).name));
      return new Response(new ReadableStream({ start(c) { c.enqueue(new TextEncoder().encode('first chunk\\n')); } }), { headers: { 'content-type': 'text/plain' } });
    }
    if (url.pathname === '/spin') for (;;);
    if (url.pathname === '/sleep') await sleep(Number(url.searchParams.get('ms') ?? 100));
    return new Response('pid ' + process.pid);
  },
};
`;

/** `n` concurrent GETs on fresh connections: each one's status and Retry-After. */
async function burst(url: string, n: number): Promise<{ status: number; retryAfter: string | null }[]> {
  return Promise.all(
    Array.from({ length: n }, () =>
      fetch(url, { headers: { connection: 'close' } }).then(
        async (r) => {
          await r.arrayBuffer();
          return { status: r.status, retryAfter: r.headers.get('retry-after') };
        },
        () => ({ status: 0, retryAfter: null }),
      ),
    ),
  );
}

/** Samples of a Prometheus text with `name` (and these labels). */
function metricValue(samples: Sample[], name: string, labels: Record<string, string> = {}): number | undefined {
  return samples.find((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v))?.value;
}

const OPS_METRIC_NAMES = [
  'tsgi_requests_total',
  'tsgi_request_duration_seconds_bucket',
  'tsgi_request_duration_seconds_sum',
  'tsgi_request_duration_seconds_count',
  'tsgi_inflight_requests',
  'tsgi_queue_depth',
  'tsgi_workers',
  'tsgi_worker_restarts_total',
  'tsgi_worker_heap_bytes',
];

export const operationsCases: LifecycleCase[] = [
  {
    id: 'ops.request-timeout',
    title: 'a never-answering handler: request.signal aborts with TimeoutError, 504 at the deadline, the next request is fine',
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--request-timeout', '1']);
      try {
        const r = await fetch(s.url + '/hang');
        assert.equal(r.status, 504, await r.text());
        await waitFor(() => t.markers().includes('aborted TimeoutError'), 10_000, `the signal to abort (saw: ${t.markers().join(', ')})`);
        const next = await fetch(s.url + '/');
        assert.equal(next.status, 200);
        assert.match(await next.text(), /^pid \d+$/);
        assert.equal(t.markers().filter((m) => m.startsWith('aborted')).length, 1, 'the timed-out request ran again');
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.request-timeout-stream',
    title: 'a stream that stops making progress after its head: the signal aborts with TimeoutError and the connection is cut (the body never looks complete)',
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--request-timeout', '1']);
      try {
        const r = await fetch(s.url + '/stall');
        assert.equal(r.status, 200);
        const body = await r.text().then(
          (text) => ({ complete: true, text }),
          (err: Error) => ({ complete: false, text: err.message }),
        );
        assert.equal(body.complete, false, `the cut body looked complete: ${JSON.stringify(body.text)}`);
        await waitFor(() => t.markers().includes('stall aborted TimeoutError'), 10_000, `the signal to abort (saw: ${t.markers().join(', ')})`);
        assert.equal((await fetch(s.url + '/')).status, 200);
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.cpu-loop',
    title: 'a CPU-looping handler: its worker is replaced after the grace period, the request fails (never re-run), the server keeps serving',
    optOut: { 'nginx:embedded': NJS_CPU_LOOP, node: ONE_PROCESS_LOOP },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--request-timeout', '1']);
      try {
        const l = load(s.url + '/', 2);
        const spun = await fetch(s.url + '/spin').then(
          (r) => r.status,
          () => 'reset',
        );
        assert.ok(spun === 502 || spun === 504 || spun === 'reset', `the looping request ended with ${spun}`);
        await sleep(500);
        const r = await l.stop();
        assert.ok(r.ok > 0, JSON.stringify(r));
        // Once the replacement serves, nothing fails.
        const after = load(s.url + '/', 4);
        await sleep(1000);
        const later = await after.stop();
        assert.equal(later.failed, 0, `requests failed after the worker was replaced: ${JSON.stringify(later)}`);
        assert.match(s.stderr(), /stalled|request-timeout|timed out|timeout/i);
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.overload',
    title: 'a burst beyond max-inflight: 503 with a numeric Retry-After for the shed, 200 for every admitted request',
    optOut: { 'nginx:embedded': NJS_NO_OPS },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--max-inflight', '1', '--queue-timeout', '5']);
      try {
        const all = await burst(s.url + '/sleep?ms=1500', 16);
        const by = (st: number): number => all.filter((x) => x.status === st).length;
        assert.equal(by(200) + by(503), all.length, `statuses: ${JSON.stringify(all.map((x) => x.status))}`);
        assert.ok(by(503) > 0 && by(200) > 0, `statuses: ${JSON.stringify(all.map((x) => x.status))}`);
        for (const x of all.filter((y) => y.status === 503)) assert.match(x.retryAfter ?? '', /^[1-9]\d*$/, 'Retry-After');
        const next = await fetch(s.url + '/');
        assert.equal(next.status, 200);
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.recycle',
    title: 'max-requests: workers are recycled under a bounded load with zero failed requests',
    optOut: { 'nginx:embedded': NJS_NO_OPS },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--max-requests', '20']);
      try {
        const l = load(s.url + '/', 4, true);
        await waitFor(async () => Object.keys(l.peek().bodies).length >= 4, 60_000, 'four generations of workers');
        const r = await l.stop();
        assert.equal(r.failed, 0, `failed requests while recycling: ${JSON.stringify({ ...r, bodies: undefined })}`);
        assert.ok(Object.keys(r.bodies).length >= 4, JSON.stringify(r.bodies));
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.max-heap',
    title: 'max-heap: a leaking handler is recycled under a bounded load with zero failed requests',
    optOut: { 'nginx:embedded': NJS_NO_OPS },
    async run(t) {
      const src = `const kept: number[][] = [];
export default {
  fetch() {
    kept.push(new Array(250_000).fill(Math.random())); // 2 MB a request, never freed
    return new Response('pid ' + process.pid);
  },
};
`;
      const s = await t.start(t.handler('leak.ts', src), ['--max-heap', '48M']);
      try {
        const l = load(s.url + '/', 4, true);
        await waitFor(() => Object.keys(l.peek().bodies).length >= 3, 60_000, 'three generations of workers');
        const r = await l.stop();
        assert.equal(r.failed, 0, `failed requests while recycling: ${JSON.stringify({ ...r, bodies: undefined })}`);
        // The line comes when the old worker has drained and exited.
        await waitFor(() => /recycled: max-heap \(\d+ MiB used, limit 48 MiB\)/.test(s.stderr()), 30_000, `the recycle line (saw: ${s.stderr()})`);
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.reload-init-fails',
    title: 'SIGHUP onto a handler whose init fails, under load: one line says why, the old code keeps serving, nothing fails',
    optOut: { 'nginx:embedded': NJS_INIT_PER_REQUEST },
    async run(t) {
      const version = (v: string, fails: boolean): string => `export default {
  ${fails ? "async init() { throw new Error('init-boom-on-reload'); }," : ''}
  fetch: () => new Response('${v}'),
};
`;
      const file = t.handler('reload-fails.ts', version('v1', false));
      const s = await t.start(file);
      try {
        const l = load(s.url + '/', 4, true);
        await sleep(300);
        writeFileSync(file, version('v2', true));
        s.proc.kill('SIGHUP');
        await waitFor(() => /init-boom-on-reload/.test(s.stderr()), 60_000, 'the reload failure line');
        await sleep(500);
        const r = await l.stop();
        assert.equal(r.failed, 0, `failed requests: ${JSON.stringify(r)}`);
        assert.deepEqual(Object.keys(r.bodies), ['v1'], JSON.stringify(r.bodies));
        assert.equal(await getText(s.url + '/'), 'v1');
        assert.ok(alive(s.proc.pid!), 'the server died on a failing reload');
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.health',
    title: 'the health path: 200 while serving, never shed by max-inflight, not counted',
    optOut: { 'nginx:embedded': NJS_NO_OPS },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--health', '/healthz', '--max-inflight', '1', '--queue-timeout', '0', '--metrics', '/metrics']);
      try {
        const h = await fetch(s.url + '/healthz');
        assert.equal(h.status, 200);
        assert.equal(await h.text(), 'ok\n');
        // Every slot busy: the application is shed, the probe is not.
        const busy = burst(s.url + '/sleep?ms=1500', 6);
        await sleep(300);
        const during = await Promise.all([1, 2, 3].map(() => fetch(s.url + '/healthz').then((r) => r.status)));
        assert.deepEqual(during, [200, 200, 200]);
        await busy;
        const samples = parsePrometheus(await (await fetch(s.url + '/metrics')).text());
        const total = samples.filter((x) => x.name === 'tsgi_requests_total').reduce((a, x) => a + x.value, 0);
        assert.equal(total, 6, 'probes were counted as requests');
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.health-draining',
    title: '--drain-delay: after SIGTERM the health path answers 503 draining while the other paths are still served, then the graceful stop; nothing is left',
    optOut: {
      'nginx:embedded': 'embedded nginx has no health path (no Node process; njs 0.7.9 shares no state across its VMs to flip), so tsgi nginx run refuses --drain-delay without --workers',
    },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--health', '/healthz', '--metrics', '/metrics', '--drain-delay', '2']);
      const fresh = { headers: { connection: 'close' } };
      const h = await fetch(s.url + '/healthz', fresh);
      assert.equal(h.status, 200);
      assert.equal(await h.text(), 'ok\n');
      const tree = descendantsOf(s.proc.pid!);
      let exited = false;
      void s.exited.then(() => (exited = true));
      s.proc.kill('SIGTERM');
      // What a load balancer's health check sees: 503 draining, on a listener that is still open.
      let seen: { status: number; body: string; retryAfter: string | null } | undefined;
      await waitFor(
        async () => {
          assert.ok(!exited, `the server stopped without a drain period (health kept answering ${seen?.status ?? 'nothing'}):\n${s.stderr()}`);
          const r = await fetch(s.url + '/healthz', fresh).catch(() => undefined);
          if (!r) return false;
          seen = { status: r.status, body: await r.text(), retryAfter: r.headers.get('retry-after') };
          return seen.status === 503;
        },
        30_000,
        'the health path to answer 503',
      );
      assert.equal(seen!.body, 'draining\n');
      assert.match(seen!.retryAfter ?? '', /^\d+$/);
      // Meanwhile the application is served as before, and the metrics say the workers drain.
      const [app, metrics] = await Promise.all([fetch(s.url + '/', fresh), fetch(s.url + '/metrics', fresh)]);
      assert.equal(app.status, 200);
      assert.match(await app.text(), /^pid \d+$/);
      const samples = parsePrometheus(await metrics.text());
      assert.ok((metricValue(samples, 'tsgi_workers', { state: 'draining' }) ?? 0) >= 1, `tsgi_workers: ${JSON.stringify(samples.filter((x) => x.name === 'tsgi_workers'))}`);
      assert.equal(metricValue(samples, 'tsgi_workers', { state: 'ready' }) ?? 0, 0);
      const end = await s.exited;
      assert.equal(end.code, 0, `exit ${end.signal ?? end.code}:\n${s.stderr()}`);
      await waitFor(() => !tree.some(alive), 10_000, `every process of the server to end (left: ${tree.filter(alive).join(', ')})`);
    },
  },
  {
    id: 'ops.metrics',
    title: 'the metrics path: Prometheus text with the one schema, its counters match the requests sent',
    optOut: { 'nginx:embedded': NJS_NO_OPS },
    async run(t) {
      const s = await t.start(t.handler('ops.ts', opsHandler(t.target)), ['--metrics', '/metrics', '--request-timeout', '1']);
      try {
        const sent = 25;
        for (let i = 0; i < sent; i++) assert.equal((await fetch(s.url + `/?n=${i}`)).status, 200);
        assert.equal((await fetch(s.url + '/hang')).status, 504);
        // Apache answers the 504 itself and its worker counts it when mod_tsgi's ABORT arrives, which may
        // come after the next request: read until that count is in (bounded), then check every counter.
        let samples: Sample[] = [];
        await waitFor(
          async () => {
            const res = await fetch(s.url + '/metrics');
            assert.equal(res.status, 200);
            assert.match(res.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
            samples = parsePrometheus(await res.text());
            return metricValue(samples, 'tsgi_requests_total', { status: '504' }) !== undefined;
          },
          5_000,
          'the 504 in the metrics',
        );
        for (const n of OPS_METRIC_NAMES) assert.ok(samples.some((x) => x.name === n), `missing ${n}`);
        assert.equal(metricValue(samples, 'tsgi_requests_total', { status: '200' }), sent);
        assert.equal(metricValue(samples, 'tsgi_requests_total', { status: '504' }), 1);
        assert.equal(metricValue(samples, 'tsgi_request_duration_seconds_count'), sent + 1);
        assert.equal(metricValue(samples, 'tsgi_request_duration_seconds_bucket', { le: '+Inf' }), sent + 1);
        assert.ok((metricValue(samples, 'tsgi_workers', { state: 'ready' }) ?? 0) >= 1);
        assert.ok((metricValue(samples, 'tsgi_worker_heap_bytes') ?? 0) > 0);
      } finally {
        await s.stop();
      }
    },
  },
  {
    id: 'ops.server-timing',
    title: '--server-timing: a Server-Timing header with queue, auth (when the handler has access hooks) and fetch',
    async run(t) {
      const src = `export default {
  authenticate: () => ({ user: 'u' }),
  fetch: () => new Response('ok'),
};
`;
      const s = await t.start(t.handler('timing.ts', src), ['--server-timing']);
      try {
        const r = await fetch(s.url + '/');
        assert.equal(r.status, 200);
        assert.match(r.headers.get('server-timing') ?? '', /^queue;dur=[\d.]+, auth;dur=[\d.]+, fetch;dur=[\d.]+$/);
      } finally {
        await s.stop();
      }
    },
  },
];

function optOutFor(c: LifecycleCase, target: LifecycleTarget): [string, string] | undefined {
  if (!c.optOut) return undefined;
  const k = target.mode ? `${target.server}:${target.mode}` : undefined;
  if (k && c.optOut[k]) return [k, c.optOut[k]];
  if (c.optOut[target.server] && !(target.workers && (c.optOut[target.server] === NO_WORKERS || c.optOut[target.server] === ONE_PROCESS_LOOP))) {
    return [target.server, c.optOut[target.server]];
  }
  return undefined;
}

/** The non-empty lines of a failed start-up's output, without Node's own warnings. */
function outputLines(text: string): string[] {
  return text
    .split('\n')
    .map((l) => l.trimEnd())
    .filter((l) => l && !/^\(node:\d+\) |^\(Use `node --trace-warnings/.test(l));
}

/** Registers the lifecycle cases for one host. */
export function describeLifecycle(target: LifecycleTarget): void {
  const key = target.mode ? `${target.server}:${target.mode}` : target.server;
  describe(`lifecycle: ${target.name} (${key})`, () => {
    // Made by the first case that runs: a filtered-out describe runs no afterAll, and would leave it behind.
    let root: string | undefined;
    const rootDir = (): string => {
      if (root) return root;
      root = mkdtempSync(join(tmpdir(), 'tsgi-lifecycle-'));
      // Workers may run as an unprivileged user: everything here must be reachable by it.
      chmodSync(root, 0o755);
      return root;
    };
    afterAll(() => {
      if (root) rmSync(root, { recursive: true, force: true });
    });
    let n = 0;
    for (const c of [...lifecycleCases, ...operationsCases]) {
      const out = optOutFor(c, target);
      if (out) {
        it(`${c.id} — opt-out (${out[0]}): ${out[1]}`, () => {
          console.info(`[lifecycle] ${c.id} opted out for ${out[0]}: ${out[1]}`);
        });
        continue;
      }
      it(`${c.id}: ${c.title}`, { timeout: 180_000 }, async () => {
        const dir = join(rootDir(), `case-${++n}`);
        mkdirSync(dir, { mode: 0o755 });
        chmodSync(dir, 0o777);
        const markers = join(dir, 'markers.log');
        writeFileSync(markers, '');
        chmodSync(markers, 0o666);
        const env = { LIFECYCLE_MARKERS: markers };
        const started: RunningTsgi[] = [];
        const ctx: LifecycleContext = {
          target,
          handler(name, source) {
            const p = join(dir, name);
            writeFileSync(p, source);
            chmodSync(p, 0o644);
            return p;
          },
          async start(handler, extraArgs = []) {
            const port = await freePort();
            const s = await startTsgi([...target.command, handler, '--port', String(port), ...(target.args ?? []), ...extraArgs], env);
            started.push(s);
            return s;
          },
          async startFails(handler) {
            const port = await freePort();
            const t0 = Date.now();
            try {
              const s = await startTsgi([...target.command, handler, '--port', String(port), ...(target.args ?? [])], env, 20_000);
              started.push(s);
              throw new Error(`started (${s.url}) instead of failing:\n${s.stderr()}`);
            } catch (err) {
              const e = err as { code?: number | null; stdout?: string; stderr?: string };
              if (e.stderr === undefined) throw err;
              const ms = Date.now() - t0;
              assert.ok(ms < 20_000, `took ${ms} ms to fail`);
              return { code: e.code ?? null, lines: outputLines(`${e.stdout ?? ''}\n${e.stderr}`), ms };
            }
          },
          markers: () => [...(existsSync(markers) ? readFileSync(markers, 'utf8').split('\n').filter(Boolean) : []), ...started.flatMap((x) => njsMarks(x.stderr()))],
        };
        try {
          await c.run(ctx);
        } finally {
          // SIGTERM first: a killed command cannot remove its temp dir.
          for (const s of started) await s.kill('SIGTERM', 20_000);
        }
      });
    }
  });
}
