/**
 * How `tsgi serve` loads a TypeScript handler (core/src/node/load.ts): stack traces
 * name the handler's .ts lines, the compiled module lives in the user's cache
 * (never in the source tree, never a leftover temp file), bare imports resolve
 * from the handler's own node_modules, and no esbuild process stays behind.
 */
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { childrenOf, cmdline, startCli, type RunningCli } from '@tsgi/conformance/testing';

const root = mkdtempSync(join(tmpdir(), 'tsgi-load-test-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** A project folder: handler.ts plus a package in its own node_modules. */
function project(name: string, handler: string): string {
  const dir = join(root, name);
  const pkg = join(dir, 'node_modules', 'tsgi-t-node-pkg');
  mkdirSync(join(pkg, 'lib'), { recursive: true });
  writeFileSync(
    join(pkg, 'package.json'),
    JSON.stringify({ name: 'tsgi-t-node-pkg', type: 'module', exports: { '.': { import: './lib/index.js' } } }),
  );
  writeFileSync(join(pkg, 'lib', 'index.js'), "export const greeting = 'from the handler\\'s own node_modules';\n");
  writeFileSync(join(dir, 'data.txt'), 'beside the handler\n');
  writeFileSync(join(dir, 'handler.ts'), handler);
  return dir;
}

const HANDLER = `import { readFileSync } from 'node:fs';
import { greeting } from 'tsgi-t-node-pkg';

export default {
  fetch(request: Request): Response {
    const path = new URL(request.url).pathname;
    if (path === '/throw') {
      throw new Error('thrown on purpose');
    }
    if (path === '/beside') return new Response(readFileSync(new URL('./data.txt', import.meta.url), 'utf8'));
    return new Response(greeting);
  },
};
`;
// The line of `throw new Error` above (1-based).
const THROW_LINE = HANDLER.split('\n').findIndex((l) => l.includes('thrown on purpose')) + 1;

const running: RunningCli[] = [];
afterAll(async () => {
  await Promise.all(running.map((r) => r.stop()));
});

async function serve(dir: string, env: NodeJS.ProcessEnv, extra: string[] = []): Promise<RunningCli> {
  const r = await startCli(['serve', join(dir, 'handler.ts'), '--port', '0', ...extra], /ready on (http:\/\/\S+?)\/?\s/, {
    env: { ...process.env, ...env },
  });
  running.push(r);
  return r;
}

/** Every file under `dir`, relative. */
function files(dir: string): string[] {
  try {
    return readdirSync(dir, { recursive: true, withFileTypes: true })
      .filter((d) => d.isFile())
      .map((d) => join(d.parentPath, d.name).slice(dir.length + 1));
  } catch {
    return [];
  }
}

describe('tsgi serve: loading a TypeScript handler', () => {
  it("a thrown error's logged stack names handler.ts and the line, single process and --workers", async () => {
    const dir = project('stack', HANDLER);
    const cache = join(root, 'stack-cache');
    for (const extra of [[], ['--workers', '2']]) {
      const srv = await serve(dir, { XDG_CACHE_HOME: cache }, extra);
      const res = await fetch(`${srv.ready}/throw`);
      expect(res.status).toBe(500);
      expect(await res.text()).toBe('Internal Server Error\n');
      const end = Date.now() + 10_000;
      while (!srv.stderr().includes('thrown on purpose') && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
      expect(srv.stderr()).toContain(`${join(dir, 'handler.ts')}:${THROW_LINE}:`);
      expect(srv.stderr()).not.toMatch(/\.mjs:\d+/);
      expect(await srv.stop()).toBe(0);
    }
  });

  it("compiles into $XDG_CACHE_HOME/tsgi, not into the source tree; bare imports resolve from the handler's node_modules", async () => {
    const dir = project('cache', HANDLER);
    const cache = join(root, 'xdg');
    const srv = await serve(dir, { XDG_CACHE_HOME: cache });
    expect(await (await fetch(srv.ready)).text()).toBe("from the handler's own node_modules");
    expect(await (await fetch(`${srv.ready}/beside`)).text()).toBe('beside the handler\n');
    expect(files(dir).filter((f) => !f.startsWith('node_modules/tsgi-t-node-pkg/')).sort()).toEqual(['data.txt', 'handler.ts']);
    const cached = files(join(cache, 'tsgi'));
    expect(cached).toHaveLength(1);
    expect(cached[0]).toMatch(/^handler-[0-9a-f]+-[0-9a-f]+\.mjs$/);
    expect(statSync(join(cache, 'tsgi')).mode & 0o777).toBe(0o700);
    expect(await srv.stop()).toBe(0);

    // The same source again: the cached file is reused as it is (node --watch must not see it change).
    const before = statSync(join(cache, 'tsgi', cached[0]!));
    const again = await serve(dir, { XDG_CACHE_HOME: cache });
    expect(await (await fetch(again.ready)).text()).toBe("from the handler's own node_modules");
    const after = statSync(join(cache, 'tsgi', cached[0]!));
    expect([after.ino, after.mtimeMs]).toEqual([before.ino, before.mtimeMs]);
    expect(await again.stop()).toBe(0);

    // A changed handler replaces its old compiled file instead of piling up.
    writeFileSync(join(dir, 'handler.ts'), HANDLER.replace("return new Response(greeting)", "return new Response(greeting + '!')"));
    const changed = await serve(dir, { XDG_CACHE_HOME: cache });
    expect(await (await fetch(changed.ready)).text()).toBe("from the handler's own node_modules!");
    expect(files(join(cache, 'tsgi'))).toHaveLength(1);
    expect(files(join(cache, 'tsgi'))[0]).not.toBe(cached[0]);
    expect(await changed.stop()).toBe(0);
  });

  it('a compiled file whose handler is gone is removed by the next compile', async () => {
    const cache = join(root, 'orphans');
    const gone = project('gone', HANDLER);
    const srv = await serve(gone, { XDG_CACHE_HOME: cache });
    expect(await srv.stop()).toBe(0);
    expect(files(join(cache, 'tsgi'))).toHaveLength(1);
    rmSync(gone, { recursive: true });
    const other = await serve(project('other', HANDLER), { XDG_CACHE_HOME: cache });
    expect(await other.stop()).toBe(0);
    const left = files(join(cache, 'tsgi'));
    expect(left).toHaveLength(1);
    expect(readFileSync(join(cache, 'tsgi', left[0]!), 'utf8')).toContain(join(root, 'other', 'handler.ts'));
  });

  it('~/.cache/tsgi without XDG_CACHE_HOME', async () => {
    const dir = project('home', HANDLER);
    const home = join(root, 'home-dir');
    mkdirSync(home);
    const srv = await serve(dir, { HOME: home, XDG_CACHE_HOME: '' });
    expect(await (await fetch(srv.ready)).text()).toBe("from the handler's own node_modules");
    expect(files(join(home, '.cache', 'tsgi'))).toHaveLength(1);
    expect(await srv.stop()).toBe(0);
  });

  it('no writable cache: a private temp dir, removed right after the import; nothing left in TMPDIR', async () => {
    const dir = project('nocache', HANDLER);
    const tmp = join(root, 'tmp');
    mkdirSync(tmp);
    // HOME is a file: no ~/.cache can be made there.
    const home = join(root, 'home-is-a-file');
    writeFileSync(home, '');
    for (const extra of [[], ['--workers', '2']]) {
      const srv = await serve(dir, { HOME: home, XDG_CACHE_HOME: '', TMPDIR: tmp }, extra);
      expect(await (await fetch(srv.ready)).text()).toBe("from the handler's own node_modules");
      expect(await (await fetch(`${srv.ready}/beside`)).text()).toBe('beside the handler\n');
      expect(readdirSync(tmp)).toEqual([]);
      expect(files(dir).filter((f) => !f.startsWith('node_modules/tsgi-t-node-pkg/')).sort()).toEqual(['data.txt', 'handler.ts']);
      expect(await srv.stop()).toBe(0);
      expect(readdirSync(tmp)).toEqual([]);
    }
  });

  it('no esbuild process stays alive once the server listens', async () => {
    const dir = project('no-service', HANDLER);
    for (const extra of [[], ['--workers', '2']]) {
      const srv = await serve(dir, { XDG_CACHE_HOME: join(root, 'no-service-cache') }, extra);
      const tree = (pid: number): number[] => childrenOf(pid).flatMap((c) => [c, ...tree(c)]);
      const esbuild = tree(srv.proc.pid!).filter((p) => /esbuild --service/.test(cmdline(p)));
      expect(esbuild).toEqual([]);
      expect(await srv.stop()).toBe(0);
    }
  });
});
