// `tsgi systemd serve|nginx-workers`: the unit systemd-analyze accepts without a warning, its fields,
// and its ExecStart line, run by hand as the unit says (User=), answering a request.
import { spawn, spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort, runCli, waitFor } from '@tsgi/conformance/testing';

const root = process.getuid?.() === 0;
const dir = mkdtempSync(join(tmpdir(), 'tsgi-systemd-test-'));
// The unit's user (www-data) reads the handler.
chmodSync(dir, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));
// A space and a % in the path: ExecStart's quoting and specifier escaping must hold.
const handler = join(dir, 'my app%1.ts');
writeFileSync(handler, 'export default { fetch: (req: Request) => new Response(`unit ${new URL(req.url).pathname}\\n`) };\n');
chmodSync(handler, 0o644);

/** The unit's key=value lines of [Service] and [Unit]. */
function fields(unit: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of unit.split('\n')) {
    const m = /^([A-Za-z]+)=(.*)$/.exec(l);
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}

/** systemd's ExecStart quoting undone (double quotes, backslash escapes, %% and $$). */
function execWords(line: string): string[] {
  const words: string[] = [];
  const re = /"((?:[^"\\]|\\.)*)"|(\S+)/g;
  for (let m; (m = re.exec(line)); ) words.push((m[1] !== undefined ? m[1].replace(/\\(.)/g, '$1') : m[2]!).replace(/%%/g, '%').replace(/\$\$/g, '$'));
  return words;
}

function verify(name: string, unit: string): void {
  const file = join(dir, name);
  writeFileSync(file, unit);
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8' });
  if (r.error) {
    // No systemd-analyze: the fields were checked above.
    return;
  }
  expect(r.status, r.stderr).toBe(0);
  expect(r.stderr).toBe('');
}

function run(words: string[], user?: string): { proc: ReturnType<typeof spawn>; err: () => string } {
  const id = (flag: string): number => Number(spawnSync('id', [flag, user!], { encoding: 'utf8' }).stdout.trim());
  const ids = user ? { uid: id('-u'), gid: id('-g') } : {};
  const proc = spawn(words[0]!, words.slice(1), { ...ids, cwd: '/', stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  proc.stderr!.on('data', (d) => (err += d));
  proc.stdout!.resume();
  return { proc, err: () => err };
}

async function stopped(proc: ReturnType<typeof spawn>): Promise<number | null> {
  // Already gone (it failed to start): its exit status, not a wait for an exit that happened.
  if (proc.exitCode !== null || proc.signalCode !== null) return proc.exitCode;
  const gone = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  proc.kill('SIGTERM');
  return gone;
}

describe('tsgi systemd serve', () => {
  it('prints a unit systemd accepts; its ExecStart, run as its User=, serves, reloads on SIGHUP and stops on SIGTERM', async () => {
    const port = await freePort();
    const r = await runCli(['systemd', 'serve', handler, '--port', String(port), '--graceful-timeout', '3s', '--max-body', '1M', '--unit-user', 'www-data']);
    expect(r.code, r.stderr).toBe(0);
    const f = fields(r.stdout);
    expect(f).toMatchObject({
      Type: 'simple',
      User: 'www-data',
      Restart: 'on-failure',
      KillSignal: 'SIGTERM',
      KillMode: 'mixed',
      ExecReload: '/bin/kill -HUP $MAINPID',
      TimeoutStopSec: '18',
      WantedBy: 'multi-user.target',
    });
    const words = execWords(f.ExecStart!);
    expect(words[0]).toBe(process.execPath);
    expect(words.slice(2)).toEqual(['serve', handler, '--port', String(port), '--max-body', '1048576', '--graceful-timeout', '3000ms']);
    verify('tsgi-serve-test.service', r.stdout);
    // A stop waits the drain period first: systemd waits for it too.
    const d = await runCli(['systemd', 'serve', handler, '--graceful-timeout', '3s', '--health', '/h', '--drain-delay', '30s']);
    expect(fields(d.stdout).TimeoutStopSec, d.stderr).toBe('48');
    if (!root) return;

    const s = run(words, 'www-data');
    try {
      // www-data must be able to read this checkout (a clone in a 0700 temp dir cannot be run as another user).
      await waitFor(() => s.err().includes('tsgi serve: ready on') || s.proc.exitCode !== null, 30_000, 'ready');
      expect(s.err()).toContain('tsgi serve: ready on');
      expect(await (await fetch(`http://127.0.0.1:${port}/a`)).text()).toBe('unit /a\n');
      s.proc.kill('SIGHUP');
      await waitFor(() => s.err().includes('reloaded'), 30_000, 'reloaded');
      expect(await (await fetch(`http://127.0.0.1:${port}/b`)).text()).toBe('unit /b\n');
    } finally {
      expect(await stopped(s.proc)).toBe(0);
    }
  }, 90_000);

  it('bad options are the command\'s own one-line errors', async () => {
    const r = await runCli(['systemd', 'serve', handler, '--port', 'x']);
    expect(r.code).toBe(1);
    expect(r.stderr.split('\n')[0]).toBe("tsgi systemd: --port must be an integer from 0 to 65535, got 'x'");
    const m = await runCli(['systemd', 'srve', handler]);
    expect(m.code).toBe(1);
    expect(m.stderr.split('\n')[0]).toBe("tsgi systemd: unknown command 'srve' (did you mean serve?)");
  });
});

describe('tsgi systemd nginx-workers: the operations options', () => {
  it('pass through to ExecStart as typed (non-default values only); a bad one is the command\'s own line', async () => {
    const ops = ['--request-timeout', '5s', '--max-requests', '100', '--max-heap', '256M', '--metrics', '/metrics', '--server-timing'];
    const r = await runCli(['systemd', 'nginx-workers', handler, ...ops]);
    expect(r.code, r.stderr).toBe(0);
    const words = execWords(fields(r.stdout).ExecStart!);
    expect(words.slice(2)).toEqual(['nginx', 'workers', handler, '--request-timeout', '5000ms', '--max-requests', '100', '--max-heap', String(256 * 2 ** 20), '--metrics', '/metrics', '--server-timing']);
    const base = Number(fields(r.stdout).TimeoutStopSec);
    const d = await runCli(['systemd', 'nginx-workers', handler, '--drain-delay', '30s']);
    expect(Number(fields(d.stdout).TimeoutStopSec), d.stderr).toBe(base + 30);
    const bad = await runCli(['systemd', 'nginx-workers', handler, '--max-inflight', 'many']);
    expect(bad.code).toBe(1);
    expect(bad.stderr.split('\n')[0]).toBe("tsgi systemd: --max-inflight must be an integer from 0 to 1000000, got 'many'");
  });
});

describe.runIf(root)('tsgi systemd nginx-workers', () => {
  it('prints a unit ordered before nginx, run as root with --user for the workers; its ExecStart serves on the sockets', async () => {
    const sockets = join(dir, 'run');
    const r = await runCli(['systemd', 'nginx-workers', handler, '--socket-dir', sockets, '--processes', '2', '--user', 'www-data']);
    expect(r.code, r.stderr).toBe(0);
    const f = fields(r.stdout);
    expect(f).toMatchObject({ Type: 'simple', User: 'root', Before: 'nginx.service', Restart: 'on-failure', KillMode: 'mixed', ExecReload: '/bin/kill -HUP $MAINPID' });
    const words = execWords(f.ExecStart!);
    expect(words.slice(2)).toEqual(['nginx', 'workers', handler, '--socket-dir', sockets, '--workers', '2', '--user', 'www-data']);
    verify('tsgi-workers-test.service', r.stdout);

    const s = run(words);
    try {
      await waitFor(() => s.err().includes('tsgi nginx: ready:') || s.proc.exitCode !== null, 30_000, 'ready');
      expect(s.err()).toContain('tsgi nginx: ready:');
      const secret = /X-Tsgi-Secret ([0-9a-f]+);/.exec(readFileSync(join(sockets, 'secret.conf'), 'utf8'))![1]!;
      const body = await new Promise<string>((res, rej) => {
        const q = httpRequest({ socketPath: join(sockets, 'worker-1.sock'), path: '/w', headers: { host: 'x', 'x-tsgi-secret': secret } }, (p) => {
          let b = '';
          p.on('data', (d) => (b += d));
          p.on('end', () => res(b));
        });
        q.on('error', rej);
        q.end();
      });
      expect(body).toBe('unit /w\n');
    } finally {
      expect(await stopped(s.proc)).toBe(0);
    }
  }, 90_000);
});
