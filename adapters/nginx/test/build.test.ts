// tsgi nginx build: clear failures for what njs cannot run, the load-time report, and real
// lowering (f(await x), classes, destructuring, spread...) checked by running the bundle in nginx.
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildNjs, validateWithNginx } from '../src/build.js';
import { fixturesDir, freePort, runCli, startNginx, type Running } from './helpers.js';

const out = mkdtempSync(join(tmpdir(), 'tsgi-build-test-'));
let srv: Running;

beforeAll(async () => {
  srv = await startNginx(join(fixturesDir, 'lowering.ts'));
});
afterAll(async () => {
  await srv?.stop();
  rmSync(out, { recursive: true, force: true });
});

/** stderr without the build's progress lines (`tsgi nginx build: bundling ...`): the failure line(s). */
const failureLines = (stderr: string): string[] => stderr.trim().split('\n').filter((l) => !l.startsWith('tsgi nginx build: '));

describe('tsgi nginx build: what njs cannot run fails the build', () => {
  it('a handler importing node:fs: one line naming the import and pointing to workers mode', async () => {
    const r = await runCli(['nginx', 'build', join(fixturesDir, 'uses-fs.ts'), '-o', join(out, 'fs')]);
    expect(r.code).toBe(1);
    const lines = failureLines(r.stderr);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^tsgi nginx: .*uses-fs\.ts imports the Node built-in "node:fs"/);
    expect(lines[0]).toContain('workers mode');
    expect(lines[0]).toContain('--workers N');
  });

  it('a handler using Node-only process methods fails the same way', async () => {
    await expect(buildNjs({ handler: join(fixturesDir, 'uses-process.ts'), outDir: join(out, 'proc') })).rejects.toThrow(
      /uses the Node-only process\.on, process\.cwd, which njs cannot run; run it in workers mode/,
    );
  });

  it('a handler using a global njs 0.7.9 lacks (Map) fails, naming it', async () => {
    await expect(buildNjs({ handler: join(fixturesDir, 'uses-map.ts'), outDir: join(out, 'map') })).rejects.toThrow(
      /uses-map\.ts \(or a package it imports\) uses Map, missing in njs 0\.7\.9; run it in workers mode/,
    );
  });

  it('a missing handler', async () => {
    await expect(buildNjs({ handler: join(fixturesDir, 'nope.ts'), outDir: out })).rejects.toThrow(/handler not found/);
  });
});

describe('tsgi nginx build and run (embedded): a handler that cannot work stops with one line', () => {
  const f = (name: string): string => join(fixturesDir, name);
  it('build: no fetch, a throw while loading (also one only njs throws), a hook that is not a function', async () => {
    const cases: [string, RegExp][] = [
      ['no-fetch.ts', /no-fetch\.ts: the default export must be an object with a fetch\(request, ctx\) method$/],
      ['throws-at-load.ts', /throws-at-load\.ts: throws while loading in njs: SyntaxError/],
      ['njs-only-throw.ts', /njs-only-throw\.ts: throws while loading in njs: TypeError.*replaceAll/],
      ['bad-hook.ts', /bad-hook\.ts: log must be a function$/],
    ];
    for (const [name, re] of cases) {
      const r = await runCli(['nginx', 'build', f(name), '-o', join(out, 'bad-' + name)]);
      expect(r.code, name).toBe(1);
      const lines = failureLines(r.stderr);
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(/^tsgi nginx: /);
      expect(lines[0]).toMatch(re);
    }
  });

  it('a handler with websocket hooks: build and embedded run refuse it with one line pointing to workers mode', async () => {
    const want = /^tsgi nginx: .*websocket\.ts has websocket hooks, which embedded nginx cannot carry \(njs has no WebSocket server\); run it in workers mode instead: tsgi nginx run .*websocket\.ts --workers N$/;
    const b = await runCli(['nginx', 'build', f('websocket.ts'), '-o', join(out, 'ws')]);
    const r = await runCli(['nginx', 'run', f('websocket.ts'), '--port', String(await freePort())]);
    for (const x of [b, r]) {
      expect(x.code, x.stderr).toBe(1);
      const lines = failureLines(x.stderr);
      expect(lines, x.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(want);
      expect(x.stderr).not.toContain('ready');
    }
  });

  it('build does not run init; run does: a failing init stops it with one line, nothing left behind', async () => {
    const b = await runCli(['nginx', 'build', f('init-fails.ts'), '-o', join(out, 'init-fails')]);
    expect(b.code, b.stderr).toBe(0);
    const before = readdirSync(tmpdir()).filter((d) => d.startsWith('tsgi-njs-load-'));
    for (const [name, re] of [
      ['init-fails.ts', /init-fails\.ts: init failed: database unreachable$/],
      ['no-fetch.ts', /no-fetch\.ts: the default export must be an object/],
      ['throws-at-load.ts', /throws-at-load\.ts: throws while loading in njs: SyntaxError/],
    ] as const) {
      const r = await runCli(['nginx', 'run', f(name), '--port', String(await freePort())]);
      expect(r.code, name).toBe(1);
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      expect(lines[0]).toMatch(re);
      expect(r.stderr).not.toContain('ready');
    }
    // The one-shot nginx of the load check leaves nothing.
    expect(readdirSync(tmpdir()).filter((d) => d.startsWith('tsgi-njs-load-') && !before.includes(d))).toEqual([]);
  });

  it('a handler reading a --preload global while loading builds with --preload, not without', async () => {
    const json = join(fixturesDir, 'config.json');
    const ok = await runCli(['nginx', 'build', f('reads-preload.ts'), '-o', join(out, 'preload'), '--preload', `tsgiConfig=${json}`]);
    expect(ok.code, ok.stderr).toBe(0);
    const no = await runCli(['nginx', 'build', f('reads-preload.ts'), '-o', join(out, 'no-preload')]);
    expect(no.code).toBe(1);
    expect(failureLines(no.stderr).join('\n')).toMatch(/reads-preload\.ts: throws while loading in njs: ReferenceError: "tsgiConfig" is not defined/);
  });
});

describe('tsgi nginx build: output and load-time report', () => {
  it('writes one njs module with only `export default`, loadable by nginx, and counts the handler share', async () => {
    const { file, report } = await buildNjs({ handler: join(fixturesDir, 'hello.ts'), outDir: join(out, 'hello') });
    const code = readFileSync(file, 'utf8');
    expect(code.match(/^export /gm)).toEqual(['export ']);
    expect(code).toMatch(/^export default \w+;$/m);
    expect(code).not.toMatch(/\bclass\s+\w+/);
    expect(report.validated).toBe(true);
    expect(validateWithNginx(file).ok).toBe(true);
    expect(report.functions).toBeGreaterThan(0);
    expect(report.handler).toBeDefined();
    expect(report.handler!.prototypeAssignments).toBe(0);
    expect(report.warnings).toEqual([]);
  });

  it('a handler with many classes: prototype changes counted, workers mode suggested', async () => {
    const { report } = await buildNjs({ handler: join(fixturesDir, 'big.ts'), outDir: join(out, 'big') });
    // 60 classes x 2 methods, each a prototype assignment after lowering.
    expect(report.handler!.prototypeAssignments).toBeGreaterThanOrEqual(120);
    expect(report.estimatedUsPerRequest).toBeGreaterThan(10);
    expect(report.warnings.join('\n')).toMatch(/workers mode \(--workers N\) will likely serve it better/);
  });

  it('the CLI prints the report', async () => {
    const r = await runCli(['nginx', 'build', join(fixturesDir, 'big.ts'), '-o', join(out, 'big-cli')]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/wrote .*tsgi\.js \(\d+ bytes, loads in nginx\)/);
    expect(r.stdout).toMatch(/load time \(whole bundle\): \d+ functions, \d+ prototype changes/);
    expect(r.stdout).toMatch(/of which the handler: \d+ functions, 1[2-9]\d prototype changes/);
    expect(r.stdout).toMatch(/^warning: .*workers mode/m);
    // What the build does while it takes seconds, on stderr.
    expect(r.stderr).toMatch(
      /^tsgi nginx build: bundling .*big\.ts for njs 0\.7\.9 \(esbuild, then Babel\)\.\.\.\ntsgi nginx build: loading the bundle in nginx to check it\.\.\.\ntsgi nginx build: done in \d+\.\d s\n$/,
    );
  });
});

describe('lowered code runs in nginx (njs 0.7.9)', () => {
  it('f(await x), await in new and in method calls', async () => {
    const r = await fetch(`${srv.url}/await`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('1,2,1;0;5;a1b 2 {"a":3,"b":[4,5]} c7 f8\n');
  });

  it('for-of over Headers, URLSearchParams and strings iterates (not only arrays)', async () => {
    const r = await fetch(`${srv.url}/iter?a=1&b=2`, { headers: { 'x-tb': '1', 'x-ta': '2' } });
    expect(await r.text()).toBe('x-ta,x-tb a=1&b=2 a.b.c. 6\n');
  });

  it('spread and array destructuring of Headers, URLSearchParams, strings and a user iterable', async () => {
    const r = await fetch(`${srv.url}/spread?a=1&b=2&c=3`, { headers: { 'x-tb': '1', 'x-ta': '2' } });
    expect(await r.text()).toBe('x-ta:2,x-tb:1 a=1&b=2&c=3 a,1 b,2 c,3 h.é.l.l.o x-ta,x-tb 9 12ab\n');
  });

  it('classes with inheritance and super, default parameters, destructuring, rest, for-of, spread, ?., ??=', async () => {
    const r = await fetch(`${srv.url}/class`);
    expect(r.status).toBe(200);
    expect(await r.text()).toBe('hello world! HELLO WORLD!! 2 6 7 none\n');
  });
});

describe('tsgi nginx run (embedded): reload', () => {
  it('SIGHUP rebuilds the bundle and reloads nginx; requests keep working', async () => {
    srv.proc.kill('SIGHUP');
    const end = Date.now() + 60_000;
    while (!srv.stderr().includes('tsgi nginx: reloaded')) {
      if (Date.now() > end || srv.stderr().includes('reload failed')) throw new Error(srv.stderr());
      await new Promise((r) => setTimeout(r, 50));
    }
    const r = await fetch(`${srv.url}/await`);
    expect(await r.text()).toMatch(/^1,2,1;0;5;/);
  });
});

