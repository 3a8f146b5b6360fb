/**
 * Compiles mod_tsgi with apxs (and, for tests, the C codec and supervision
 * policy as a shared library, and the libFuzzer target). Outputs live in the
 * user's tsgi cache (`<cache>/apache/<hash>/`, the loader's cacheDir), never
 * inside the installed package, keyed by a hash of the C sources and options,
 * so repeated runs are instant.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { StartupError, cacheDir } from '@tsgi/core/node';

const run = promisify(execFile);

/** adapters/apache (this file is src/build.ts or dist/build.js). */
export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const moduleSourceDir = join(packageDir, 'mod_tsgi');

/** Every C source and header of the module (the build cache keys on all of them). */
function moduleSources(): string[] {
  return readdirSync(moduleSourceDir)
    .filter((f) => /\.(c|h)$/.test(f) && f !== 'tsgi_build.h')
    .sort();
}

/** The files apxs compiles: mod_tsgi.c first (it names the module), then the rest but the test shim. */
function moduleUnits(): string[] {
  return ['mod_tsgi.c', ...moduleSources().filter((f) => f.endsWith('.c') && f !== 'mod_tsgi.c' && f !== 'tsgi_testlib.c')];
}

/** Progress lines while a build takes seconds (the CLI prefixes and prints them). */
export type Progress = (line: string) => void;

export interface BuildOptions {
  /** Where the <hash>/ directories go (default: defaultOutDir()). */
  outDir?: string;
  /** Worker script compiled in as the default of `worker=` (default adapters/apache/dist/worker.js). */
  defaultWorker?: string;
  progress?: Progress;
}

export interface BuiltModule {
  so: string;
  /** false: an earlier build with the same sources and options was reused. */
  built: boolean;
  /** Set when the output went to a private temp dir (no usable cache): removes it. */
  dispose?: () => void;
}

/**
 * `<cache>/apache` (core's cacheDir: `$XDG_CACHE_HOME/tsgi`, else `~/.cache/tsgi`); without a
 * usable cache, a private temp dir of this run (`temporary`; nothing is reused from it).
 */
export function defaultOutDir(): { dir: string; temporary: boolean } {
  const cache = cacheDir();
  if (cache) {
    const dir = join(cache, 'apache');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    return { dir, temporary: false };
  }
  return { dir: mkdtempSync(join(tmpdir(), 'tsgi-apache-build-')), temporary: true };
}

function outDirOf(outDir: string | undefined): { dir: string; temporary: boolean } {
  return outDir === undefined ? defaultOutDir() : { dir: resolve(outDir), temporary: false };
}

function sourceHash(files: string[], extra: string): string {
  const h = createHash('sha256');
  for (const f of files) h.update(f).update(readFileSync(join(moduleSourceDir, f)));
  return h.update(extra).digest('hex').slice(0, 16);
}

async function exec(cmd: string, args: string[], cwd: string): Promise<void> {
  try {
    await run(cmd, args, { cwd, maxBuffer: 16 << 20 });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: string };
    if (e.code === 'ENOENT') throw new StartupError(`${cmd} not found (install apache2-dev and clang)`);
    const detail = (e.stderr ?? e.message).trim().split('\n').slice(-20).join('\n');
    throw new StartupError(`${cmd} failed: ${detail}`);
  }
}

/**
 * Builds into a private temp dir, then renames into place, so parallel
 * builds never see half-written files.
 */
async function cached(
  outDir: string,
  key: string,
  file: string,
  build: (tmp: string) => Promise<string>,
  say: { progress?: Progress; what: string } = { what: file },
): Promise<{ path: string; built: boolean }> {
  const dir = join(outDir, key);
  const target = join(dir, file);
  if (existsSync(target)) {
    say.progress?.(`${say.what} is up to date (cached build ${target})`);
    return { path: target, built: false };
  }
  const started = Date.now();
  say.progress?.(`compiling ${say.what}...`);
  mkdirSync(dir, { recursive: true });
  const tmp = join(dir, `.tmp-${process.pid}-${Date.now()}`);
  mkdirSync(tmp, { recursive: true });
  try {
    for (const f of readdirSync(moduleSourceDir)) {
      if (/\.(c|h)$/.test(f) && f !== 'tsgi_build.h') copyFileSync(join(moduleSourceDir, f), join(tmp, f));
    }
    mkdirSync(join(tmp, 'fuzz'), { recursive: true });
    const fuzzDir = join(moduleSourceDir, 'fuzz');
    if (existsSync(fuzzDir)) for (const f of readdirSync(fuzzDir)) copyFileSync(join(fuzzDir, f), join(tmp, 'fuzz', f));
    const built = await build(tmp);
    renameSync(built, target);
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
  say.progress?.(`done in ${((Date.now() - started) / 1000).toFixed(1)} s: ${target}`);
  return { path: target, built: true };
}

/** apxs compiles with the CC APR was built with (Debian: gcc); fall back to clang, which the tests need anyway. */
function apxsCompiler(): string[] {
  return existsSync('/usr/bin/x86_64-linux-gnu-gcc') || existsSync('/usr/bin/gcc') ? [] : ['-S', 'CC=clang'];
}

function cc(): string {
  return existsSync('/usr/bin/cc') ? 'cc' : 'clang';
}

/** Compiles mod_tsgi.so with apxs; returns its absolute path. */
export async function buildModule(opts: BuildOptions = {}): Promise<BuiltModule> {
  const out = outDirOf(opts.outDir);
  const dispose = out.temporary ? () => rmSync(out.dir, { recursive: true, force: true }) : undefined;
  const worker = resolve(opts.defaultWorker ?? join(packageDir, 'dist', 'worker.js'));
  if (/["\\\n]/.test(worker)) throw new StartupError(`unsupported characters in worker path: ${worker}`);
  const key = 'mod-' + sourceHash(moduleSources(), worker);
  const r = await cached(out.dir, key, 'mod_tsgi.so', async (tmp) => {
    // A header, not -D: apxs/libtool strip the quotes of a string macro.
    writeFileSync(join(tmp, 'tsgi_build.h'), `#define TSGI_DEFAULT_WORKER ${JSON.stringify(worker)}\n`);
    await exec('apxs', [...apxsCompiler(), '-c', '-Wc,-O2', '-Wc,-Wall', '-Wc,-Wextra', '-Wc,-Wno-unused-parameter', ...moduleUnits()], tmp);
    return join(tmp, '.libs', 'mod_tsgi.so');
  }, { progress: opts.progress, what: 'mod_tsgi (apxs)' }).catch((err: unknown) => {
    dispose?.();
    throw err;
  });
  return { so: r.path, built: r.built, dispose };
}

/** The C codec plus its test shim as a shared library, for koffi. */
export async function buildCodecLib(opts: { outDir?: string } = {}): Promise<string> {
  const outDir = outDirOf(opts.outDir).dir;
  const files = ['tsgi_proto.c', 'tsgi_proto.h', 'tsgi_policy.h', 'tsgi_testlib.c'];
  const key = 'codec-' + sourceHash(files, 'v2');
  const r = await cached(outDir, key, 'libtsgi_proto.so', async (tmp) => {
    await exec(cc(), ['-shared', '-fPIC', '-O1', '-g', '-Wall', '-Wextra', '-o', 'libtsgi_proto.so', 'tsgi_proto.c', 'tsgi_testlib.c'], tmp);
    return join(tmp, 'libtsgi_proto.so');
  });
  return r.path;
}

/** The libFuzzer target for the C decoder (clang -fsanitize=fuzzer,address). */
export async function buildFuzzer(opts: { outDir?: string } = {}): Promise<string> {
  const outDir = outDirOf(opts.outDir).dir;
  const key = 'fuzz-' + sourceHash(['tsgi_proto.c', 'tsgi_proto.h', 'fuzz/fuzz_decoder.c'], 'v1');
  const r = await cached(outDir, key, 'fuzz_decoder', async (tmp) => {
    await exec(
      'clang',
      ['-g', '-O1', '-fsanitize=fuzzer,address,undefined', '-fno-sanitize-recover=undefined', '-I.', '-o', 'fuzz_decoder',
        'fuzz/fuzz_decoder.c', 'tsgi_proto.c'],
      tmp,
    );
    return join(tmp, 'fuzz_decoder');
  });
  return r.path;
}
