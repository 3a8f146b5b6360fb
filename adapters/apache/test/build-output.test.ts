// Where `tsgi apache build` puts mod_tsgi.so (the user's tsgi cache, never the installed
// package) and what it says while it compiles.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, runCli, tsgiBin } from '@tsgi/conformance/testing';
import { packageDir } from '../src/build.js';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-apache-out-'));
const fallbacks: string[] = [];
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  for (const d of fallbacks) rmSync(d, { recursive: true, force: true });
});

const lines = (s: string): string[] => s.trim().split('\n');

describe('tsgi apache build: output in the cache, progress on stderr', () => {
  it('compiles into $XDG_CACHE_HOME/tsgi/apache/<hash>/ saying so, then reuses it in one line', async () => {
    const cache = join(dir, 'cache');
    const env = { ...process.env, XDG_CACHE_HOME: cache };
    const first = await runCli(['apache', 'build'], 120_000, env);
    expect(first.code, first.stderr).toBe(0);
    const so = first.stdout.trim();
    expect(so).toMatch(new RegExp(`^${join(cache, 'tsgi', 'apache')}/mod-[0-9a-f]{16}/mod_tsgi\\.so$`));
    expect(existsSync(so)).toBe(true);
    expect(lines(first.stderr)).toEqual([
      'tsgi apache build: compiling mod_tsgi (apxs)...',
      expect.stringMatching(new RegExp(`^tsgi apache build: done in \\d+\\.\\d s: ${so}$`)),
    ]);
    // Nothing into the package (it may be installed read-only, and npm update would drop it).
    expect(existsSync(join(packageDir, 'build'))).toBe(false);
    // Only the finished module in its directory: no half-built leftovers.
    expect(readdirSync(dirname(so))).toEqual(['mod_tsgi.so']);

    const again = await runCli(['apache', 'build'], 60_000, env);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout.trim()).toBe(so);
    expect(lines(again.stderr)).toEqual([`tsgi apache build: mod_tsgi (apxs) is up to date (cached build ${so})`]);
  });

  it('without a usable cache (a tsgi dir others can write): a private temp dir, and it says so', async () => {
    const cache = join(dir, 'shared');
    mkdirSync(join(cache, 'tsgi'), { recursive: true });
    chmodSync(join(cache, 'tsgi'), 0o777);
    const r = await runCli(['apache', 'build'], 120_000, { ...process.env, XDG_CACHE_HOME: cache });
    expect(r.code, r.stderr).toBe(0);
    const so = r.stdout.trim();
    fallbacks.push(dirname(dirname(so)));
    expect(so.startsWith(join(tmpdir(), 'tsgi-apache-build-'))).toBe(true);
    expect(existsSync(so)).toBe(true);
    expect(readdirSync(join(cache, 'tsgi'))).toEqual([]);
    expect(lines(r.stderr).at(-1)).toMatch(/^tsgi apache build: no usable cache directory .*: built in \S+, not reused$/);
  });
});

describe('tsgi apache run: its first build', () => {
  const initFails = join(dir, 'init-fails.mjs');
  writeFileSync(initFails, "export default { init() { throw new Error('database unreachable'); }, fetch: () => new Response('x') };\n");

  it('piped (a test, a service manager): no progress, the start-up failure stays the one line', async () => {
    const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'piped') };
    const r = await runCli(['apache', 'run', initFails, '--port', String(await freePort())], 120_000, env);
    expect(r.code, r.stderr).toBe(1);
    expect(lines(r.stderr)).toEqual(['tsgi apache: handler init failed: database unreachable']);
    expect(readdirSync(join(dir, 'piped', 'tsgi', 'apache'))).toHaveLength(1);
  });

  it('on a terminal: says that it compiles mod_tsgi, and when it is done', async () => {
    const env = { ...process.env, XDG_CACHE_HOME: join(dir, 'tty') };
    const cmd = [process.execPath, tsgiBin, 'apache', 'run', initFails, '--port', String(await freePort())].join(' ');
    // script(1) gives the command a pseudo-terminal; -e: its exit status.
    const r = spawnSync('script', ['-qefc', cmd, '/dev/null'], { env, encoding: 'utf8', timeout: 120_000 });
    const out = r.stdout.replace(/\r/g, '');
    expect(r.status, out).toBe(1);
    expect(out).toMatch(/^tsgi apache run: compiling mod_tsgi \(apxs\)\.\.\.\ntsgi apache run: done in \d+\.\d s: \S+mod_tsgi\.so\n/m);
    expect(out).toMatch(/^tsgi apache: handler init failed: database unreachable$/m);
  });
});
