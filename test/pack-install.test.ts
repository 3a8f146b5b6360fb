// tsgi as a user gets it: every package packed (npm pack), the tarballs installed into a fresh
// project outside this checkout (no workspace links), and every command run from there on a
// TypeScript handler of that project, each answering a request. Build outputs go to the user's
// cache (a private XDG_CACHE_HOME here), never into the installed packages.
import { execFileSync, spawnSync } from 'node:child_process';
import { lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { READY_LINE, startCli, type RunningCli } from '@tsgi/conformance/testing';

const semver = createRequire(import.meta.url)('semver') as { satisfies(v: string, range: string): boolean };

/** The oldest Node the README names. */
const OLDEST_NODE = '20.19.0';

const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const version = (JSON.parse(readFileSync(join(repo, 'cli', 'package.json'), 'utf8')) as { version: string }).version;

const tmp = mkdtempSync(join(tmpdir(), 'tsgi-pack-'));
const tarballs = join(tmp, 'tarballs');
const project = join(tmp, 'project');
const cache = join(tmp, 'cache');
const installed = join(project, 'node_modules');
/** What `npx tsgi` runs: the bin link of the installed `tsgi` package. */
let bin = '';
let installedAt = 0;
const running = new Set<RunningCli>();

interface Packed {
  name: string;
  filename: string;
  size: number;
  unpackedSize: number;
  files: { path: string; size: number }[];
}
let packed: Packed[] = [];

/** npm run from inside `npm test` inherits npm_config_* (workspace, prefix...): none reach the user's npm. */
function userEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!/^npm_/i.test(k) && k !== 'NODE_PATH' && k !== 'INIT_CWD') env[k] = v;
  return { ...env, XDG_CACHE_HOME: cache };
}

function npm(args: string[], cwd: string, timeout = 150_000): string {
  return execFileSync('npm', args, { cwd, env: userEnv(), encoding: 'utf8', timeout, stdio: ['ignore', 'pipe', 'pipe'] });
}

beforeAll(() => {
  mkdirSync(tarballs);
  mkdirSync(project);
  mkdirSync(cache, { mode: 0o700 });
  // The packages as built by `npm run build` (npm test builds first); no lifecycle scripts.
  packed = JSON.parse(npm(['pack', '--workspaces', '--ignore-scripts', '--json', '--pack-destination', tarballs], repo)) as Packed[];
  writeFileSync(join(project, 'package.json'), JSON.stringify({ name: 'my-app', private: true, type: 'module' }, null, 2));
  writeFileSync(
    join(project, 'handler.ts'),
    `import { defineHandler } from '@tsgi/core';

interface Greeting { text: string; }
const greeting: Greeting = { text: 'hello from my-app' };

export default defineHandler({
  fetch(request: Request): Response {
    return new Response(\`\${greeting.text} \${new URL(request.url).pathname}\\n\`);
  },
});
`,
  );
  npm(['install', '--no-audit', '--no-fund', ...packed.map((p) => join(tarballs, p.filename))], project);
  bin = realpathSync(join(installed, '.bin', 'tsgi'));
  installedAt = Date.now();
}, 200_000);

afterAll(async () => {
  await Promise.all([...running].map((r) => r.stop(5_000)));
  rmSync(tmp, { recursive: true, force: true });
});

/** Every file below dir (relative paths), with its mtime. */
function walk(dir: string, base = dir): { path: string; mtimeMs: number }[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return walk(p, base);
    return [{ path: relative(base, p), mtimeMs: statSync(p).mtimeMs }];
  });
}

const PACKAGES = ['@tsgi/core', '@tsgi/conformance', '@tsgi/node-http', '@tsgi/apache', '@tsgi/nginx', 'tsgi'];

describe('npm pack: each tarball holds what its commands need, nothing else', () => {
  it('one tarball per package', () => {
    expect(packed.map((p) => p.name).sort()).toEqual([...PACKAGES].sort());
  });

  const NEEDS: Record<string, string[]> = {
    '@tsgi/core': ['dist/index.js', 'dist/node.js', 'dist/index.d.ts', 'src/wire.ts', 'src/handler-shape.ts', 'src/access-reply.ts'],
    '@tsgi/conformance': ['dist/index.js', 'dist/testing.js', 'dist/bin.js', 'bin/tsgi-conformance.js', 'fixture/handler.ts', 'src/data.ts'],
    '@tsgi/node-http': ['dist/index.js', 'dist/cli.js'],
    '@tsgi/apache': ['dist/cli.js', 'dist/build.js', 'dist/worker.js', 'mod_tsgi/Makefile', 'mod_tsgi/mod_tsgi.c', 'mod_tsgi/mod_tsgi.h', 'mod_tsgi/tsgi_config.c', 'mod_tsgi/tsgi_exchange.c', 'mod_tsgi/tsgi_policy.h', 'mod_tsgi/tsgi_pool.c', 'mod_tsgi/tsgi_proto.c', 'mod_tsgi/tsgi_proto.h', 'mod_tsgi/tsgi_supervisor.c', 'mod_tsgi/tsgi_tunnel.c'],
    '@tsgi/nginx': ['dist/cli.js', 'dist/build.js', 'dist/worker.js', 'runtime/bridge.ts', 'runtime/globals.ts', 'runtime/pipeline.ts', 'runtime/webapi/headers.ts'],
    tsgi: ['bin/tsgi.js', 'dist/main.js'],
  };
  // Tests, fuzz targets and corpora, build outputs, compile caches, tsbuildinfo, configs.
  const NEVER = [/(^|\/)test\//, /(^|\/)fuzz\//, /(^|\/)build\//, /node_modules\//, /\.cache\//, /\.tsbuildinfo$/, /\.(so|o|lo|la)$/, /tsconfig\.json$/, /\.sh$/, /testlib/];

  for (const name of PACKAGES) {
    it(`${name}: its commands' files, no tests or build outputs`, () => {
      const p = packed.find((x) => x.name === name)!;
      const files = p.files.map((f) => f.path);
      for (const f of NEEDS[name]!) expect(files, name).toContain(f);
      expect(files.filter((f) => NEVER.some((re) => re.test(f))), name).toEqual([]);
    });
  }

  it('no test tool among the dependencies; every bare import in the installed dist/ is a declared dependency', () => {
    for (const name of PACKAGES) {
      const dir = join(installed, name);
      // Installed from the tarballs, not linked to this checkout.
      expect(lstatSync(dir).isSymbolicLink(), name).toBe(false);
      const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as Record<string, Record<string, string> | undefined>;
      const deps = { ...pkg.dependencies };
      expect(Object.keys(deps), name).not.toContain('koffi');
      const declared = new Set([...Object.keys(deps), ...Object.keys(pkg.peerDependencies ?? {}), name]);
      const builtins = new Set(builtinModules);
      const missing = new Set<string>();
      for (const f of walk(join(dir, 'dist')).filter((x) => x.path.endsWith('.js'))) {
        const text = readFileSync(join(dir, 'dist', f.path), 'utf8');
        for (const m of text.matchAll(/(?:^|\s)(?:import|export)\s[^'"]*?from\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)|require(?:\.resolve)?\(\s*['"]([^'"]+)['"]\s*\)/g)) {
          const spec = m[1] ?? m[2] ?? m[3]!;
          if (spec.startsWith('.') || spec.startsWith('node:') || builtins.has(spec)) continue;
          const bare = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
          if (!declared.has(bare)) missing.add(`${name}/dist/${f.path} imports ${spec}`);
        }
      }
      expect([...missing], name).toEqual([]);
    }
  });
});

/** Lock file entries npm would warn about (EBADENGINE) on OLDEST_NODE; optional ones are skipped silently. */
function refusingNode(lockFile: string): string[] {
  const tree = JSON.parse(readFileSync(lockFile, 'utf8')) as {
    packages: Record<string, { version?: string; engines?: { node?: string } | string[]; optional?: boolean }>;
  };
  return Object.entries(tree.packages)
    .filter(([, p]) => !p.optional && p.engines && !Array.isArray(p.engines) && p.engines.node && !semver.satisfies(OLDEST_NODE, p.engines.node))
    .map(([path, p]) => `${path || '.'}@${p.version}: node ${(p.engines as { node: string }).node}`);
}

describe('no engine warnings on the README\'s Node', () => {
  it(`every package installed from the tarballs (ours and what they pull in) accepts Node ${OLDEST_NODE}`, () => {
    expect(refusingNode(join(installed, '.package-lock.json'))).toEqual([]);
  });

  it(`so does every package npm ci installs in this checkout`, () => {
    expect(refusingNode(join(repo, 'package-lock.json'))).toEqual([]);
  });
});

describe('installed from the tarballs into a fresh project: every command works from there', () => {
  const get = async (url: string): Promise<{ status: number; body: string }> => {
    const r = await fetch(url);
    return { status: r.status, body: await r.text() };
  };

  /** `tsgi <args>` from the project (the installed bin), until ready; answers GET /check; stops cleanly. */
  async function serves(args: string[]): Promise<void> {
    const r = await startCli(args, READY_LINE, { cwd: project, env: userEnv(), bin, timeoutMs: 90_000 });
    running.add(r);
    try {
      expect(await get(`${r.ready}/check`)).toEqual({ status: 200, body: 'hello from my-app /check\n' });
    } finally {
      running.delete(r);
      expect(await r.stop(), r.stderr()).toBe(0);
    }
  }

  it('npx tsgi --version', () => {
    const r = spawnSync('npx', ['--no-install', 'tsgi', '--version'], { cwd: project, env: userEnv(), encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim()).toBe(`tsgi ${version}`);
    expect(bin).toBe(join(installed, 'tsgi', 'bin', 'tsgi.js'));
    // @tsgi/conformance/testing, installed, runs the project's tsgi (not a checkout's).
    const t = spawnSync(process.execPath, ['--input-type=module', '-e', "console.log((await import('@tsgi/conformance/testing')).tsgiBin)"], { cwd: project, env: userEnv(), encoding: 'utf8', timeout: 30_000 });
    expect(t.stdout.trim(), t.stderr).toBe(bin);
  });

  it('tsgi serve handler.ts', async () => {
    await serves(['serve', 'handler.ts', '--port', '0']);
  });

  it('tsgi apache build (into the cache) and tsgi apache run', async () => {
    const b = spawnSync(process.execPath, [bin, 'apache', 'build'], { cwd: project, env: userEnv(), encoding: 'utf8', timeout: 120_000 });
    expect(b.status, b.stderr).toBe(0);
    expect(b.stdout.trim()).toMatch(new RegExp(`^${join(cache, 'tsgi', 'apache')}/mod-[0-9a-f]{16}/mod_tsgi\\.so$`));
    expect(b.stderr).toMatch(/^tsgi apache build: compiling mod_tsgi \(apxs\)\.\.\.$/m);
    await serves(['apache', 'run', 'handler.ts', '--port', '0']);
  });

  it('tsgi nginx build, tsgi nginx run (embedded) and tsgi nginx run --workers 1', async () => {
    const b = spawnSync(process.execPath, [bin, 'nginx', 'build', 'handler.ts', '-o', 'njs'], { cwd: project, env: userEnv(), encoding: 'utf8', timeout: 120_000 });
    expect(b.status, b.stderr).toBe(0);
    expect(b.stdout).toMatch(/^wrote .*\/project\/njs\/tsgi\.js \(\d+ bytes, loads in nginx\)$/m);
    await serves(['nginx', 'run', 'handler.ts', '--port', '0']);
    await serves(['nginx', 'run', 'handler.ts', '--port', '0', '--workers', '1']);
  });

  it('nothing was written into the installed packages (outputs went to the cache)', () => {
    const touched = PACKAGES.flatMap((name) =>
      walk(join(installed, name))
        .filter((f) => f.mtimeMs > installedAt)
        .map((f) => `${name}/${f.path}`),
    );
    expect(touched).toEqual([]);
    // The handler's compiled module and mod_tsgi went to the (private) user cache.
    expect(readdirSync(join(cache, 'tsgi'))).toEqual(expect.arrayContaining(['apache']));
  });
});
