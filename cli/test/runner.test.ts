// The one private-server runner (core/src/node/host.ts) behind `tsgi apache run` and
// `tsgi nginx run`, one test body for each: the ready line (also `tsgi serve`'s), the
// temp dir and its modes, user lookup, the port probe, signals while starting and after,
// and a temp dir that goes on every exit path. Each run gets its own TMPDIR, so what a
// command leaves behind is seen exactly (other tests share /tmp).
import { chmodSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { lookupUser } from '@tsgi/core/node';
import {
  alive,
  createLocalUser,
  launchCli,
  pidsMentioning,
  removeLocalUser,
  runAsUser,
  runCli,
  startCli,
  waitFor,
  type RunningCli,
} from '@tsgi/conformance/testing';

const isRoot = process.getuid?.() === 0;
const OTHER = 'tsgi-t-run';

const base = mkdtempSync(join(tmpdir(), 'tsgi-runner-test-'));
chmodSync(base, 0o755);
afterAll(() => rmSync(base, { recursive: true, force: true }));

const handlers = join(base, 'handlers');
mkdirSync(handlers, { mode: 0o755 });
chmodSync(handlers, 0o755);
const marks = join(base, 'marks.log');
writeFileSync(marks, '');
chmodSync(marks, 0o666);
const handler = (name: string, text: string): string => {
  const p = join(handlers, name);
  writeFileSync(p, text);
  chmodSync(p, 0o644);
  return p;
};

// Plain web code: runs in njs too. ?ms=N answers after N ms.
const hello = handler(
  'hello.ts',
  `export default {
  fetch(request: Request) {
    const ms = Number(new URL(request.url).searchParams.get('ms') || 0);
    if (!ms) return new Response('hello');
    return new Promise<Response>((resolve) => setTimeout(() => resolve(new Response('slow')), ms));
  },
};
`,
);
const slowInit = handler(
  'slow-init.ts',
  readFileSync(hello, 'utf8').replace('export default {', 'export default {\n  async init() { await new Promise((r) => setTimeout(r, 2500)); },'),
);
const initFails = handler('init-fails.ts', `export default { async init() { throw new Error('init-boom'); }, fetch: () => new Response('never') };\n`);
// Node only: marks where its top level runs, then holds the import.
const slowLoad = handler(
  'slow-load.ts',
  `import { appendFileSync } from 'node:fs';
appendFileSync(${JSON.stringify(marks)}, 'loading ' + process.pid + '\\n');
await new Promise((r) => setTimeout(r, 2500));
export default { fetch: () => new Response('loaded') };
`,
);

interface Target {
  name: string;
  words: string[];
  extra: string[];
  /** The server the ready line names (its pid). */
  server: 'node' | 'apache' | 'nginx';
  conf?: string;
}

const PRIVATE: Target[] = [
  { name: 'tsgi apache run', words: ['apache', 'run'], extra: [], server: 'apache', conf: 'httpd.conf' },
  { name: 'tsgi nginx run (embedded)', words: ['nginx', 'run'], extra: [], server: 'nginx', conf: 'nginx.conf' },
  { name: 'tsgi nginx run --workers 1', words: ['nginx', 'run'], extra: ['--workers', '1'], server: 'nginx', conf: 'nginx.conf' },
];
const ALL: Target[] = [
  { name: 'tsgi serve', words: ['serve'], extra: [], server: 'node' },
  { name: 'tsgi serve --workers 2', words: ['serve'], extra: ['--workers', '2'], server: 'node' },
  ...PRIVATE,
];

const READY = /^tsgi (serve|apache|nginx): ready on (http:\/\/127\.0\.0\.1:(\d+)(\/\S*)) \((node|apache|nginx) pid (\d+)((?:, [^,)]+)*)\)$/m;

/** A TMPDIR of its own for one run: the server root is made inside, and nothing may stay. */
function ownTmp(): string {
  const d = mkdtempSync(join(base, 'tmp-'));
  chmodSync(d, 0o755);
  return d;
}

const env = (tmp: string): NodeJS.ProcessEnv => ({ ...process.env, TMPDIR: tmp });

function start(t: Target, h: string, tmp: string, more: string[] = []): Promise<RunningCli> {
  return startCli([...t.words, h, '--port', '0', ...t.extra, ...more], READY, { env: env(tmp), timeoutMs: 90_000 });
}

/** The server root a private run made inside `tmp`, once it exists. */
async function rootIn(tmp: string): Promise<string> {
  let found = '';
  await waitFor(() => !!(found = readdirSync(tmp).find((d) => d.startsWith('tsgi-')) ?? ''), 60_000, `a server root in ${tmp}`);
  return join(tmp, found);
}

/** Nothing left: no file in `tmp`, no process naming it. */
async function nothingLeft(tmp: string): Promise<void> {
  expect(readdirSync(tmp), `left in ${tmp}`).toEqual([]);
  await waitFor(() => pidsMentioning(tmp).length === 0, 20_000, `the processes of ${tmp} to end (${pidsMentioning(tmp).join(', ')})`);
}

describe('the ready line: one shape on every command', () => {
  for (const t of ALL) {
    it(`${t.name}: tsgi <command>: ready on <url> (<server> pid N, ...), with --port 0 the port it got`, async () => {
      const tmp = ownTmp();
      const more = ['--location', '/app/'];
      const s = await start(t, hello, tmp, more);
      try {
        const m = READY.exec(s.stderr())!;
        expect(m[1]).toBe(t.words[0]);
        expect(Number(m[3])).toBeGreaterThan(0);
        expect(m[4]).toBe('/app/');
        expect(m[5]).toBe(t.server);
        const pid = Number(m[6]);
        if (t.server === 'node') expect(pid).toBe(s.proc.pid);
        else expect(readFileSync(`/proc/${pid}/cmdline`, 'utf8')).toContain(t.server === 'apache' ? 'apache2' : 'nginx');
        if (t.server !== 'node') expect(m[7]).toMatch(new RegExp(`^, server root ${tmp}/tsgi-${t.server}-\\w+`));
        expect(s.stderr().split('\n').filter((l) => l.includes('ready on'))).toHaveLength(1);
        expect(s.stdout()).not.toContain('ready on');
        expect(await (await fetch(m[2]!)).text()).toBe('hello');
      } finally {
        expect(await s.stop()).toBe(0);
      }
      await nothingLeft(tmp);
    });
  }
});

describe.runIf(isRoot)('the server root: private to root and the worker group (as root, with a second local user)', () => {
  beforeAll(() => createLocalUser(OTHER));
  afterAll(() => removeLocalUser(OTHER));

  for (const t of PRIVATE) {
    it(`${t.name}: 0710 root:<worker group>, the config and every log FIFO 0600 root; another user gets into none`, async () => {
      const tmp = ownTmp();
      const s = await start(t, hello, tmp);
      try {
        const root = / server root (\S+?)[,)]/.exec(READY.exec(s.stderr())![7]! + ')')![1]!;
        const www = lookupUser('www-data')!;
        const st = statSync(root);
        expect([st.mode & 0o7777, st.uid, st.gid]).toEqual([0o710, 0, www.gid]);
        const conf = join(root, t.conf!);
        expect(statSync(conf).mode & 0o777).toBe(0o600);
        const fifos: string[] = [];
        const walk = (d: string): void => {
          for (const e of readdirSync(d)) {
            const p = join(d, e);
            const l = lstatSync(p);
            if (l.isFIFO()) fifos.push(p);
            else if (l.isDirectory()) walk(p);
          }
        };
        walk(root);
        expect(fifos.length).toBeGreaterThan(0);
        for (const f of fifos) expect([f, statSync(f).mode & 0o777, statSync(f).uid]).toEqual([f, 0o600, 0]);
        const seen = runAsUser(
          OTHER,
          `import { readdirSync, readFileSync, openSync, constants } from 'node:fs';
const tryIt = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
console.log(JSON.stringify({
  list: tryIt(() => readdirSync(${JSON.stringify(root)})),
  conf: tryIt(() => readFileSync(${JSON.stringify(conf)})),
  fifos: ${JSON.stringify(fifos)}.map((f) => tryIt(() => openSync(f, constants.O_RDONLY | constants.O_NONBLOCK))),
}));`,
        );
        expect(seen).toEqual({ list: 'EACCES', conf: 'EACCES', fifos: fifos.map(() => 'EACCES') });
      } finally {
        expect(await s.stop()).toBe(0);
      }
      await nothingLeft(tmp);
    });
  }
});

describe('start-up failures: one line, exit 1, nothing left', () => {
  it('a busy port, on every command: cannot listen on HOST:PORT: address in use', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as AddressInfo).port;
    try {
      for (const t of ALL) {
        const tmp = ownTmp();
        const r = await runCli([...t.words, hello, '--port', String(port), ...t.extra], 60_000, env(tmp));
        expect(r.code, t.name).toBe(1);
        expect(r.stderr.trim().split('\n'), t.name).toEqual([`tsgi ${t.words[0]}: cannot listen on 127.0.0.1:${port}: address in use`]);
        await nothingLeft(tmp);
      }
    } finally {
      busy.close();
    }
  });

  for (const t of PRIVATE) {
    it(`${t.name}: a failing init leaves no server root`, async () => {
      const tmp = ownTmp();
      const r = await runCli([...t.words, initFails, '--port', '0', ...t.extra], 60_000, env(tmp));
      expect(r.code).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(new RegExp(`^tsgi ${t.words[0]}: .*init-boom`));
      await nothingLeft(tmp);
    });
  }

  it.runIf(isRoot)('users and groups through NSS, the same lines on both servers; the workers never run as root', async () => {
    for (const t of PRIVATE.filter((p) => p.extra.length || p.server === 'apache')) {
      const tmp = ownTmp();
      const cases: [string[], string][] = [
        [['--user', 'tsgi-no-such-user'], "no such user 'tsgi-no-such-user' (--user)"],
        [['--group', 'tsgi-no-such-group'], "no such group 'tsgi-no-such-group' (--group)"],
        [['--user', 'root'], 'the workers must not run as root: pick another --user'],
      ];
      for (const [more, line] of cases) {
        const r = await runCli([...t.words, hello, '--port', '0', ...t.extra, ...more], 60_000, env(tmp));
        expect(r.code, `${t.name} ${more.join(' ')}`).toBe(1);
        expect(r.stderr.trim().split('\n'), `${t.name} ${more.join(' ')}`).toEqual([`tsgi ${t.words[0]}: ${line}`]);
      }
      await nothingLeft(tmp);
    }
  });

  it.runIf(isRoot)('--server-root the worker user cannot reach: one line on both servers', async () => {
    const locked = mkdtempSync(join(base, 'locked-')); // 0700 root
    for (const t of PRIVATE) {
      const r = await runCli([...t.words, hello, '--port', '0', ...t.extra, '--server-root', locked], 60_000);
      expect(r.code, t.name).toBe(1);
      expect(r.stderr.trim().split('\n'), t.name).toEqual([`tsgi ${t.words[0]}: worker user 'www-data' cannot reach ${locked} (needs o+x); pass another --server-root`]);
    }
    expect(readdirSync(locked)).toEqual([]);
  });
});

describe('signals', () => {
  for (const t of PRIVATE) {
    it(`${t.name}: SIGTERM while starting is a graceful stop: exit 0, never ready, nothing left`, async () => {
      const tmp = ownTmp();
      const c = launchCli([...t.words, slowInit, '--port', '0', ...t.extra], 60_000, env(tmp));
      await rootIn(tmp);
      c.proc.kill('SIGTERM');
      const r = await c.done;
      expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
      expect(r.stderr).not.toContain('ready on');
      await nothingLeft(tmp);
    });

    // Apache's own fast stop takes up to ~10 s to cut a request a child is blocked on (it escalates to KILL at 9 s).
    it(`${t.name}: SIGHUP while starting is ignored (with a line); a second Ctrl-C stops at once and still cleans up`, { timeout: 120_000 }, async () => {
      const tmp = ownTmp();
      const starting = start(t, slowInit, tmp);
      await rootIn(tmp);
      // startCli's process: the only tsgi command with this TMPDIR.
      await waitFor(() => pidsWithTmp(tmp).length > 0, 20_000, 'the command');
      for (const pid of pidsWithTmp(tmp)) process.kill(pid, 'SIGHUP');
      const s = await starting;
      expect(s.stderr()).toContain(`tsgi ${t.words[0]}: SIGHUP ignored while starting`);
      const root = / server root (\S+?)[,)]/.exec(READY.exec(s.stderr())![7]! + ')')![1]!;
      const url = READY.exec(s.stderr())![2]!;
      // Held in flight far longer than the test waits: only a stop at once ends it early.
      const slow = fetch(`${url}?ms=60000`).then(
        (r) => r.status,
        () => 'cut',
      );
      await new Promise((r) => setTimeout(r, 500));
      s.proc.kill('SIGINT');
      await new Promise((r) => setTimeout(r, 300));
      s.proc.kill('SIGINT');
      const end = await s.exited;
      expect(end, s.stderr()).toEqual({ code: 0, signal: null });
      expect(await slow).not.toBe(200);
      expect(existsSync(root)).toBe(false);
      await nothingLeft(tmp);
    });

    it(`${t.name}: killed outright, the server and its workers go too (parent-death signal)`, async () => {
      const tmp = ownTmp();
      const s = await start(t, hello, tmp);
      const serverPid = Number(READY.exec(s.stderr())![6]);
      s.proc.kill('SIGKILL');
      await waitFor(() => !alive(serverPid) && pidsMentioning(tmp).length === 0, 30_000, 'the server and its workers to end');
      // The one exit path that cannot clean up.
      for (const d of readdirSync(tmp)) rmSync(join(tmp, d), { recursive: true, force: true });
    });
  }

  it('tsgi apache run: SIGTERM while the command itself loads the handler: exit 0, never ready, nothing left', async () => {
    const tmp = ownTmp();
    writeFileSync(marks, '');
    const c = launchCli(['apache', 'run', slowLoad, '--port', '0'], 60_000, env(tmp));
    let pid = 0;
    await waitFor(() => !!(pid = Number(/^loading (\d+)$/m.exec(readFileSync(marks, 'utf8'))?.[1] ?? 0)), 30_000, 'the handler to load');
    // Its top level runs in the command (the check before anything starts), not yet in a worker.
    expect(pid).toBe(c.proc.pid);
    c.proc.kill('SIGTERM');
    const r = await c.done;
    expect({ code: r.code, signal: r.signal }, r.stderr).toEqual({ code: 0, signal: null });
    expect(r.stderr).not.toContain('ready on');
    await nothingLeft(tmp);
  });
});

/** The `tsgi` command started with TMPDIR=tmp: not a child it forked (between fork and exec a child still shows the command's cmdline and environment). */
function pidsWithTmp(tmp: string): number[] {
  const matched = readdirSync('/proc')
    .filter((d) => /^\d+$/.test(d))
    .filter((p) => {
      try {
        const vars = readFileSync(`/proc/${p}/environ`, 'utf8').split('\0');
        return vars.includes(`TMPDIR=${tmp}`) && /tsgi\.js\0(apache|nginx)\0run\0/.test(readFileSync(`/proc/${p}/cmdline`, 'utf8'));
      } catch {
        return false;
      }
    })
    .map(Number);
  return matched.filter((p) => !matched.includes(parentOf(p)));
}

function parentOf(pid: number): number {
  try {
    // The field after the parenthesised command name: state, then the parent's pid.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
  } catch {
    return 0;
  }
}

describe('tsgi nginx run --log-level', () => {
  it("sets nginx's error log level, as --log-level does for Apache", async () => {
    const tmp = ownTmp();
    const s = await start(PRIVATE[2]!, hello, tmp, ['--log-level', 'info']);
    try {
      const root = / server root (\S+?)[,)]/.exec(READY.exec(s.stderr())![7]! + ')')![1]!;
      expect(readFileSync(join(root, 'nginx.conf'), 'utf8')).toContain('error_log stderr info;');
    } finally {
      expect(await s.stop()).toBe(0);
    }
  });
});
