/**
 * Compiles mod_tsgi with apxs (and, for tests, the C codec and supervision
 * policy as a shared library, and the libFuzzer target). Outputs live in
 * adapters/apache/build/<hash>/, keyed by a hash of the C sources and options,
 * so repeated runs are instant.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { StartupError } from '@tsgi/core/node';

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

export interface BuildOptions {
  /** Where build/<hash>/ directories go (default adapters/apache/build). */
  outDir?: string;
  /** Worker script compiled in as the default of `worker=` (default adapters/apache/dist/worker.js). */
  defaultWorker?: string;
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
async function cached(outDir: string, key: string, file: string, build: (tmp: string) => Promise<string>): Promise<string> {
  const dir = join(outDir, key);
  const target = join(dir, file);
  if (existsSync(target)) return target;
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
  return target;
}

/** apxs compiles with the CC APR was built with (Debian: gcc); fall back to clang, which the tests need anyway. */
function apxsCompiler(): string[] {
  return existsSync('/usr/bin/x86_64-linux-gnu-gcc') || existsSync('/usr/bin/gcc') ? [] : ['-S', 'CC=clang'];
}

function cc(): string {
  return existsSync('/usr/bin/cc') ? 'cc' : 'clang';
}

/** Compiles mod_tsgi.so with apxs; returns its absolute path. */
export async function buildModule(opts: BuildOptions = {}): Promise<{ so: string }> {
  const outDir = resolve(opts.outDir ?? join(packageDir, 'build'));
  const worker = resolve(opts.defaultWorker ?? join(packageDir, 'dist', 'worker.js'));
  if (/["\\\n]/.test(worker)) throw new StartupError(`unsupported characters in worker path: ${worker}`);
  const key = 'mod-' + sourceHash(moduleSources(), worker);
  const so = await cached(outDir, key, 'mod_tsgi.so', async (tmp) => {
    // A header, not -D: apxs/libtool strip the quotes of a string macro.
    writeFileSync(join(tmp, 'tsgi_build.h'), `#define TSGI_DEFAULT_WORKER ${JSON.stringify(worker)}\n`);
    await exec('apxs', [...apxsCompiler(), '-c', '-Wc,-O2', '-Wc,-Wall', '-Wc,-Wextra', '-Wc,-Wno-unused-parameter', ...moduleUnits()], tmp);
    return join(tmp, '.libs', 'mod_tsgi.so');
  });
  return { so };
}

/** The C codec plus its test shim as a shared library, for koffi. */
export async function buildCodecLib(opts: { outDir?: string } = {}): Promise<string> {
  const outDir = resolve(opts.outDir ?? join(packageDir, 'build'));
  const files = ['tsgi_proto.c', 'tsgi_proto.h', 'tsgi_policy.h', 'tsgi_testlib.c'];
  const key = 'codec-' + sourceHash(files, 'v2');
  return cached(outDir, key, 'libtsgi_proto.so', async (tmp) => {
    await exec(cc(), ['-shared', '-fPIC', '-O1', '-g', '-Wall', '-Wextra', '-o', 'libtsgi_proto.so', 'tsgi_proto.c', 'tsgi_testlib.c'], tmp);
    return join(tmp, 'libtsgi_proto.so');
  });
}

/** The libFuzzer target for the C decoder (clang -fsanitize=fuzzer,address). */
export async function buildFuzzer(opts: { outDir?: string } = {}): Promise<string> {
  const outDir = resolve(opts.outDir ?? join(packageDir, 'build'));
  const key = 'fuzz-' + sourceHash(['tsgi_proto.c', 'tsgi_proto.h', 'fuzz/fuzz_decoder.c'], 'v1');
  return cached(outDir, key, 'fuzz_decoder', async (tmp) => {
    await exec(
      'clang',
      ['-g', '-O1', '-fsanitize=fuzzer,address,undefined', '-fno-sanitize-recover=undefined', '-I.', '-o', 'fuzz_decoder',
        'fuzz/fuzz_decoder.c', 'tsgi_proto.c'],
      tmp,
    );
    return join(tmp, 'fuzz_decoder');
  });
}
