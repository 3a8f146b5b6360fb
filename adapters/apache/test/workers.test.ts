// What the Node workers see, read from /proc/<pid>/environ of real workers, in both modes:
// `tsgi apache run` (a bundle in a private server root) and a system Apache including the
// `tsgi apache conf` snippet (dist/worker.js loading the handler itself). Also, in conf mode:
// stack traces name the handler's .ts lines, a worker start leaves no file in TMPDIR, and a
// daemon whose init fails backs off by core's policy; and the worker process alone exiting 78.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, closeSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { childrenOf, cmdline, environOf, freePort, runCli, waitFor } from '@tsgi/conformance/testing';
import { buildModule, packageDir } from '../src/build.js';
import { snippet } from '../src/config.js';
import { apacheConf, fixture, installWorker, startApache, stopPlain, workerPids, type RunningApache } from './helpers.js';

// What the caller of `tsgi apache run` / apache2 has: root's identity and a shell's PWD.
const CALLER = {
  HOME: '/root',
  USER: 'root',
  LOGNAME: 'root',
  PWD: '/usr/share',
  DATABASE_URL: 'postgres://db.example/app',
  T_APA_OTHER: 'not on the allow-list',
};

const asRoot = process.getuid?.() === 0;
const DB_DOWN = 'database at 10.0.0.1 unreachable';
const home = (user: string) => spawnSync('getent', ['passwd', user], { encoding: 'utf8' }).stdout.split(':')[5]!;
const cwdOf = (pid: number) => readlinkSync(`/proc/${pid}/cwd`);
const contract = (env: Record<string, string>) => Object.keys(env).filter((k) => k.startsWith('TSGI_')).sort();
const CONTRACT = ['TSGI_DAEMON', 'TSGI_GRACEFUL_TIMEOUT', 'TSGI_HANDLER', 'TSGI_LISTEN_FD', 'TSGI_MAX_BODY', 'TSGI_MAX_HEAP', 'TSGI_MAX_INFLIGHT',
  'TSGI_MAX_REQUESTS', 'TSGI_QUEUE_TIMEOUT', 'TSGI_REQUEST_TIMEOUT', 'TSGI_SECRET_FD', 'TSGI_STATUS_FD', 'TSGI_WORKER_INDEX'];

function expectIdentity(env: Record<string, string>, pid: number): void {
  const user = asRoot ? 'www-data' : process.env.USER!;
  expect(env.HOME).toBe(home(user));
  expect(env.USER).toBe(user);
  expect(env.LOGNAME).toBe(user);
  expect(env.PWD).toBe(cwdOf(pid));
}

describe('tsgi apache run', () => {
  let kept: RunningApache;
  let clean: RunningApache;
  beforeAll(async () => {
    kept = await startApache(fixture('wire.ts'), ['--processes', '1'], CALLER);
    clean = await startApache(fixture('wire.ts'), ['--processes', '1', '--clear-env', '--env', 'DATABASE_URL', '--env', 'NOT_SET_ANYWHERE'], CALLER);
  });
  afterAll(async () => {
    await kept?.stop();
    await clean?.stop();
  });

  it("workers get the worker user's HOME, USER, LOGNAME and their own PWD; the rest of the environment is kept", () => {
    const [pid] = workerPids(kept.pid);
    const env = environOf(pid!);
    expectIdentity(env, pid!);
    expect(env.DATABASE_URL).toBe(CALLER.DATABASE_URL);
    expect(env.T_APA_OTHER).toBe(CALLER.T_APA_OTHER);
    expect(env.PATH).toBe(process.env.PATH);
    expect(contract(env)).toEqual(CONTRACT);
  });

  it('--clear-env --env NAME: exactly HOME, USER, LOGNAME, PATH, PWD, the allowed names that are set, and the TSGI_ contract', () => {
    const [pid] = workerPids(clean.pid);
    const env = environOf(pid!);
    expectIdentity(env, pid!);
    expect(env.PATH).toBe(process.env.PATH);
    const rest = Object.keys(env).filter((k) => !k.startsWith('TSGI_')).sort();
    expect(rest).toEqual(['DATABASE_URL', 'HOME', 'LOGNAME', 'PATH', 'PWD', 'USER']);
    expect(env.DATABASE_URL).toBe(CALLER.DATABASE_URL);
    expect(contract(env)).toEqual(CONTRACT);
  });

  it('--env without --clear-env, or a name that is no variable name, is refused in one line', async () => {
    const alone = await runCli(['apache', 'run', fixture('wire.ts'), '--port', '1', '--env', 'DATABASE_URL']);
    expect(alone.code).toBe(1);
    expect(alone.stderr.trim().split('\n')).toHaveLength(1);
    expect(alone.stderr).toMatch(/--env needs --clear-env/);
    const bad = await runCli(['apache', 'conf', fixture('wire.ts'), '--clear-env', '--env', 'A=B']);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/--env 'A=B' is not a variable name/);
  });
});

describe('a system Apache with the tsgi apache conf snippet (conf mode)', () => {
  let root: string;
  let tmp: string;
  let apache: ChildProcess;
  let port: number;
  const errorLog = () => readFileSync(join(root, 'error.log'), 'utf8');
  const handlerFile = () => join(root, 'app', 'handler.ts');

  beforeAll(async () => {
    root = mkdtempSync(join(tmpdir(), 'tsgi-apa-conf-'));
    chmodSync(root, 0o755);
    // The workers' TMPDIR: anything a worker start leaves behind shows up here.
    tmp = join(root, 'tmp');
    mkdirSync(tmp);
    chmodSync(tmp, 0o1777);
    const worker = installWorker(join(root, 'install'));
    mkdirSync(join(root, 'app'));
    writeFileSync(
      handlerFile(),
      [
        '// TypeScript on purpose: the worker compiles it (core loadHandler).',
        'const where: string = "conf mode";',
        'export default {',
        '  fetch(request: Request): Response {',
        "    if (new URL(request.url).pathname === '/throw') throw new Error('conf handler throws here');",
        '    return new Response(where);',
        '  },',
        '};',
        '',
      ].join('\n'),
    );
    // A second daemon whose init always fails: it must back off, not spin, and not disturb the first.
    writeFileSync(join(root, 'app', 'failing.mjs'), `export default { async init() { throw new Error('${DB_DOWN}'); }, fetch: () => new Response('never') };\n`);
    // A hand-written TsgiDaemon naming the handler itself (tsgi apache conf prints installed bundles since
    // tsgi apache install): the config generator's snippet, as `conf` printed it before.
    const daemon = { processes: 1, node: process.execPath, user: asRoot ? 'www-data' : undefined, gracefulTimeout: 10, maxBody: 10 << 20, worker };
    const snip = snippet({ daemon: { ...daemon, name: 'confapp', handler: handlerFile(), clearEnv: true, env: ['DATABASE_URL', 'TMPDIR'] }, location: '/' });
    expect(snip).toMatch(/TsgiDaemon confapp handler=\S+ worker=\S+ .*clear-env env=DATABASE_URL env=TMPDIR/);
    const failing = snippet({ daemon: { ...daemon, name: 'failing', handler: join(root, 'app', 'failing.mjs') }, location: '/failing' });
    const so = (await buildModule()).so;
    port = await freePort();
    writeFileSync(join(root, 'tsgi.conf'), `${snip}\n${failing}`);
    writeFileSync(join(root, 'httpd.conf'), apacheConf(root, port, so, `Include ${join(root, 'tsgi.conf')}\n`));
    apache = spawn('apache2', ['-DFOREGROUND', '-f', join(root, 'httpd.conf')], {
      env: { ...process.env, ...CALLER, TMPDIR: tmp },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/`).catch(() => null))?.status === 200, 60_000, 'the conf-mode server');
  });

  afterAll(() => stopPlain(apache, root));

  const workers = (daemon = 'confapp') =>
    childrenOf(apache.pid!).filter((p) => {
      try {
        return cmdline(p).includes('worker.js') && environOf(p).TSGI_DAEMON === daemon;
      } catch {
        return false; // gone meanwhile
      }
    });

  it('workers get the worker user, their PWD, and only the allowed names (clear-env, env=)', async () => {
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('conf mode');
    const [pid] = workers();
    const env = environOf(pid!);
    expectIdentity(env, pid!);
    expect(env.PWD).toBe(dirname(handlerFile()));
    const rest = Object.keys(env).filter((k) => !k.startsWith('TSGI_')).sort();
    expect(rest).toEqual(['DATABASE_URL', 'HOME', 'LOGNAME', 'PATH', 'PWD', 'TMPDIR', 'USER']);
    expect(contract(env)).toEqual(CONTRACT);
  });

  it("a stack trace names the handler's .ts file and line", async () => {
    expect((await fetch(`http://127.0.0.1:${port}/throw`)).status).toBe(500);
    await waitFor(() => errorLog().includes('conf handler throws here'), 10_000, 'the error in the error log');
    const stack = errorLog().slice(errorLog().indexOf('conf handler throws here'));
    expect(stack).toMatch(new RegExp(`${handlerFile().replace(/[.]/g, '\\.')}:5:\\d+`));
  });

  it("a worker whose init fails backs off by core's policy (at once, then 0.1 s doubling) with one line per attempt saying why; the other daemon serves", async () => {
    // [Mon Dec 01 10:42:00.123456 2025] ... could not start: <why>; next attempt in <s> s
    const line = /^\[\w+ \w+ \d+ (\d\d):(\d\d):(\d\d\.\d+) \d+\].*daemon failing: worker #0 \(pid (\d+)\) could not start: handler init failed: (.*); next attempt in ([\d.]+) s$/gm;
    const attempts = () => [...errorLog().matchAll(line)];
    await waitFor(() => attempts().length >= 4, 30_000, 'four failed starts');
    const seen = attempts().slice(0, 4);
    expect(seen.map((m) => m[5])).toEqual([DB_DOWN, DB_DOWN, DB_DOWN, DB_DOWN]);
    expect(seen.map((m) => Number(m[6]))).toEqual([0, 0.1, 0.2, 0.4]);
    // Each next attempt really waited: the next failure is logged at least that much later.
    const at = seen.map((m) => Number(m[1]) * 3600 + Number(m[2]) * 60 + Number(m[3]));
    for (let i = 0; i < 3; i++) expect(at[i + 1]! - at[i]!, `attempt ${i + 2}`).toBeGreaterThanOrEqual(Number(seen[i]![6]) - 0.001);
    for (const m of seen) {
      // The reason came through the status pipe: the worker wrote no line of its own.
      expect(errorLog()).not.toContain(`worker pid ${m[4]}]`);
      expect(errorLog().split('\n').filter((l) => l.includes(`(pid ${m[4]})`))).toHaveLength(1);
    }
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('conf mode');
  });

  it('a worker start leaves no file behind in TMPDIR', async () => {
    const before = workers();
    // A graceful restart starts new workers, which compile the handler again.
    process.kill(apache.pid!, 'SIGUSR1');
    await waitFor(() => workers().length === 1 && !before.includes(workers()[0]!), 30_000, 'the new worker');
    expect(await (await fetch(`http://127.0.0.1:${port}/`)).text()).toBe('conf mode');
    // The failing daemon keeps restarting its worker, which compiles in TMPDIR for a moment each time:
    // what a start leaves behind stays, so TMPDIR must come to be empty.
    await waitFor(() => readdirSync(tmp).length === 0, 10_000, `an empty TMPDIR (${readdirSync(tmp).join(' ')})`);
  });
});

describe('the worker process on its own (dist/worker.js)', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tsgi-apa-w-'));
    writeFileSync(join(dir, 'failing.mjs'), `export default { init() { throw new Error('${DB_DOWN}'); }, fetch: () => new Response('x') };\n`);
    writeFileSync(join(dir, 'secret'), 'ab'.repeat(32));
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const start = (withStatusPipe: boolean) => {
    const secret = openSync(join(dir, 'secret'), 'r');
    try {
      return spawnSync(process.execPath, [join(packageDir, 'dist', 'worker.js')], {
        env: { ...process.env, TSGI_HANDLER: join(dir, 'failing.mjs'), TSGI_DAEMON: 'w', ...(withStatusPipe ? { TSGI_STATUS_FD: '5' } : {}) },
        stdio: ['ignore', 'pipe', 'pipe', 'ignore', secret, withStatusPipe ? 'pipe' : 'ignore'],
        encoding: 'utf8',
        timeout: 30_000,
      });
    } finally {
      closeSync(secret);
    }
  };

  it('a failing init: exit 78 (EX_CONFIG) and the reason as one line on the status pipe, nothing on stderr', () => {
    const r = start(true);
    expect(r.status).toBe(78);
    expect(r.output[5]).toBe(`handler init failed: ${DB_DOWN}\n`);
    expect(r.stderr).toBe('');
  });

  it('without a status pipe: exit 78 and one line on stderr', () => {
    const r = start(false);
    expect(r.status).toBe(78);
    expect(r.stderr.trim().split('\n')).toEqual([expect.stringMatching(new RegExp(`\\[tsgi w worker pid \\d+\\] start-up failed: handler init failed: ${DB_DOWN}$`))]);
  });
});
