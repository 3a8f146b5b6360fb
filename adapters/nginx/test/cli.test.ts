// `tsgi nginx` command line: bad input fails with one clear line before nginx starts; conf prints snippets.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildNjs } from '../src/build.js';
import { guardExample, httpPart, serverPart } from '../src/config.js';
import { findJsModule, nginxBinary } from '../src/nginx.js';
import { fixturesDir, runCli, sleep, startNginx, waitFor } from './helpers.js';

const hello = join(fixturesDir, 'hello.ts');
const runDirs = (): string[] => readdirSync(tmpdir()).filter((d) => d.startsWith('tsgi-nginx-'));

function oneLine(stderr: string): string {
  const lines = stderr.trim().split('\n');
  return lines[0]!;
}

describe('tsgi nginx: bad input', () => {
  it('a wrong handler path: one line, exit 1, nothing started', async () => {
    const before = runDirs();
    for (const extra of [[], ['--workers', '1']]) {
      const r = await runCli(['nginx', 'run', '/nonexistent/handler.ts', '--port', '1', ...extra]);
      expect(r.code).toBe(1);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
      expect(oneLine(r.stderr)).toBe('tsgi nginx: handler not found: /nonexistent/handler.ts');
      expect(r.stderr).not.toContain('ready');
    }
    // No temp dir was created (nginx never got a config).
    expect(runDirs().filter((d) => !before.includes(d))).toEqual([]);
  });

  it('a handler that is a directory, a bad --port or --workers, an unknown option, a missing include', async () => {
    const cases: [string[], RegExp][] = [
      [['nginx', 'run', fixturesDir, '--port', '8080'], /handler not found/],
      [['nginx', 'run', hello, '--port', '70000'], /--port must be an integer from 0 to 65535, got '70000'/],
      [['nginx', 'run', hello, '--port', '8080', '--workers', '0'], /--workers must be an integer from 1 to 256, got '0'/],
      [['nginx', 'run', hello, '--port', 'http'], /--port must be an integer/],
      [['nginx', 'run', hello, '--port', '8080', '--bogus'], /unknown option --bogus$/],
      [['nginx', 'run', hello, '--prot', '8080'], /unknown option --prot \(did you mean --port\?\)/],
      [['nginx', 'run', hello, '--port', '8080', '--include', '/nonexistent.conf'], /include file not found: \/nonexistent.conf/],
      [['nginx', 'build', hello], /build needs -o <dir>/],
      [['nginx', 'run', hello, '--port', '8080', '--preload', 'cfg'], /--preload wants NAME=FILE\.json, got 'cfg'/],
      [['nginx', 'run', hello, '--port', '8080', '--preload', `cfg=${hello}`], /preload file .*hello\.ts is not JSON/],
      [['nginx', 'frobnicate'], /unknown command 'frobnicate' \(build, conf, run or workers\)/],
      [['nginx', 'rnu', hello], /unknown command 'rnu' \(did you mean run\?\)/],
      [['nginx', 'run', hello, '--port', '8080', '--workers', '1', '--env', 'DATABASE_URL'], /--env needs --clear-env \(without it the workers get the whole environment\)/],
      [['nginx', 'run', hello, '--port', '8080', '--clear-env'], /--clear-env is for the Node workers of --workers N/],
      [['nginx', 'run', hello, '--port', '8080', '--workers', '1', '--clear-env', '--env', 'A-B'], /--env 'A-B' is not a variable name/],
    ];
    for (const [args, re] of cases) {
      const r = await runCli(args);
      expect(r.code, args.join(' ')).toBe(1);
      expect(oneLine(r.stderr)).toMatch(re);
      expect(oneLine(r.stderr)).toMatch(/^tsgi nginx: /);
    }
  });

  it('a port in use: one clear line before anything starts', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const port = (busy.address() as { port: number }).port;
    try {
      const before = runDirs();
      const r = await runCli(['nginx', 'run', hello, '--port', String(port), '--workers', '1']);
      expect(r.code).toBe(1);
      expect(r.stderr.trim()).toBe(`tsgi nginx: cannot listen on 127.0.0.1:${port}: address in use`);
      expect(runDirs().filter((d) => !before.includes(d))).toEqual([]);
    } finally {
      busy.close();
    }
  });

  it('a handler whose default export has no fetch fails to start in workers mode with one clear line', async () => {
    const r = await runCli(['nginx', 'run', join(fixturesDir, 'no-fetch.ts'), '--port', '1', '--workers', '1']);
    expect(r.code).toBe(1);
    // The worker's own reason, printed once by the command (decision 9).
    expect(r.stderr.trim().split('\n')).toEqual([
      `tsgi nginx: ${join(fixturesDir, 'no-fetch.ts')}: the default export must be an object with a fetch(request, ctx) method`,
    ]);
  });
});

describe('tsgi nginx run: operations options in embedded mode', () => {
  // --request-timeout and --server-timing are the bridge's own (the lifecycle matrix runs them on embedded nginx).
  it('what needs a Node process is refused with one line, before anything starts (issue 12)', async () => {
    for (const [flag, ...value] of [['--max-inflight', '4'], ['--max-requests', '10'], ['--max-heap', '64M'], ['--health', '/h'], ['--metrics', '/m'], ['--queue-timeout=5'], ['--drain-delay', '5']]) {
      const r = await runCli(['nginx', 'run', hello, '--port', '1', flag!, ...value]);
      expect(r.code, flag).toBe(1);
      const name = flag!.split('=')[0]!;
      expect(r.stderr.trim().split('\n'), flag).toEqual([
        `tsgi nginx: ${name} needs --workers N (embedded nginx runs the handler in njs, without a Node process to time, queue or recycle)`,
      ]);
    }
  });
});

describe('tsgi nginx conf', () => {
  it('embedded: js_import, js_content, the log hook via js_set, the auth location, body limits', async () => {
    const r = await runCli(['nginx', 'conf', hello, '--location', '/app/', '--max-body', '1048576', '-o', '/srv/tsgi']);
    expect(r.code).toBe(0);
    const s = r.stdout;
    expect(s).toContain('js_import tsgi from /srv/tsgi/tsgi.js;');
    expect(s).toMatch(/location \/app\/ \{[^}]*default_type "";\s+# ctx.basePath\s+set \$tsgi_base_path \/app;\s+js_content tsgi\.content;/);
    // the mount point itself too, and not /apps (a bare `location /app` would take it)
    expect(s).toMatch(/location = \/app \{[^}]*set \$tsgi_base_path \/app;/);
    expect(s).toContain('js_set $tsgi_log tsgi.log;');
    expect(s).toMatch(/log_format tsgi .*\$tsgi_log'/);
    expect(s).toMatch(/location = \/_tsgi_auth \{\s+internal;\s+js_content tsgi\.auth;/);
    expect(s).toContain('client_max_body_size 1048576;');
    expect(s).toContain('client_body_buffer_size 1048576;');
    expect(s).toContain('postpone_output 0;');
    expect(s).toContain('auth_request /_tsgi_auth;');
  });

  it('workers: --request-timeout keeps nginx waiting past the workers\' deadline and their stall limit, and goes into the printed workers command', async () => {
    const long = await runCli(['nginx', 'conf', hello, '--workers', '1', '--request-timeout', '10m']);
    expect(long.code, long.stderr).toBe(0);
    expect(long.stdout).toContain('proxy_read_timeout 613s;');
    expect(long.stdout).toContain('--request-timeout 600000ms');
    const usual = await runCli(['nginx', 'conf', hello, '--workers', '1']);
    expect(usual.stdout).toContain('proxy_read_timeout 300s;');
    expect(usual.stdout).not.toContain('--request-timeout');
    const bad = await runCli(['nginx', 'conf', hello, '--workers', '1', '--request-timeout', 'x']);
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe("tsgi nginx: --request-timeout must be a duration (seconds, or with ms, s, m or h), got 'x'");
  });

  it('--preload gives js_preload_object', async () => {
    const json = join(fixturesDir, 'config.json');
    const r = await runCli(['nginx', 'conf', hello, '--preload', `appConfig=${json}`]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`js_preload_object appConfig from ${json};`);
  });

  it('workers: upstream with keepalive, proxy headers, the phase header cleared for clients', async () => {
    const r = await runCli(['nginx', 'conf', hello, '--workers', '2']);
    expect(r.code).toBe(0);
    const s = r.stdout;
    expect(s).toMatch(/upstream tsgi_workers \{[^}]*server unix:\/run\/tsgi\/worker-0\.sock[^}]*worker-1\.sock[^}]*keepalive 64;/);
    expect(s).toContain('proxy_http_version 1.1;');
    expect(s).toContain('proxy_set_header Connection "";');
    expect(s).toContain('proxy_set_header X-Real-IP $remote_addr;');
    expect(s).toContain('proxy_set_header X-Forwarded-Proto $scheme;');
    expect(s).toContain('proxy_set_header X-Tsgi-Phase "";');
    expect(s).toMatch(/location = \/_tsgi_auth \{[^}]*proxy_set_header X-Tsgi-Phase access;[^}]*\}/);
    expect(s).toContain('proxy_pass_request_body off;');
    // The client's request line reaches the worker (request.url and Host of an absolute-form target).
    expect(s).toContain('proxy_set_header X-Tsgi-Request $request;');
    // Big response heads (64 KiB of handler headers and the status line), streamed uploads, and no 10 MiB body buffer per upload.
    expect(s).toContain('proxy_buffer_size 72k;');
    expect(s).toContain('proxy_request_buffering off;');
    expect(s).toContain('client_body_buffer_size 64k;');
  });

  it('the printed pieces form a config nginx accepts (nginx -t), in both modes', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsgi-conf-test-'));
    try {
      const { file } = await buildNjs({ handler: hello, outDir: dir, validate: false });
      for (const mode of ['embedded', 'workers'] as const) {
        const site = { mode, maxBody: 1 << 20, bundle: file, sockets: [join(dir, 'w0.sock'), join(dir, 'w1.sock')] };
        const conf = join(dir, `${mode}.conf`);
        writeFileSync(
          conf,
          `${mode === 'embedded' ? `load_module ${findJsModule()};` : ''}
pid ${dir}/nginx.pid;
error_log stderr;
events {}
http {
  client_body_temp_path ${dir}; proxy_temp_path ${dir}; fastcgi_temp_path ${dir}; uwsgi_temp_path ${dir}; scgi_temp_path ${dir};
  ${httpPart(site)}
  access_log off;
  server {
    listen unix:${dir}/${mode}.sock;
    ${serverPart(site)}
    ${guardExample('/files/', dir)}
  }
}
`,
        );
        const r = spawnSync(nginxBinary(), ['-t', '-q', '-p', dir, '-c', conf], { encoding: 'utf8' });
        expect(r.status, r.stderr).toBe(0);
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('the help texts', async () => {
    const r = await runCli(['nginx', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^ {2}run {2,}start a private nginx/m);
    const run = await runCli(['nginx', 'run', '--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(/^usage: tsgi nginx run <handler> \[options\]$/m);
    expect(run.stdout).toMatch(/^ {2}--include-server FILE {2,}/m);
  });
});

describe('tsgi nginx run --workers --drain-delay (core runner)', () => {
  it('Ctrl-C: nginx keeps serving with the health path at 503; a second Ctrl-C stops at once, the temp dir removed', async () => {
    const before = runDirs();
    // Far longer than the test: only the second Ctrl-C can end it in time.
    const s = await startNginx(hello, ['--workers', '1', '--health', '/healthz', '--drain-delay', '10m']);
    try {
      const health = (): Promise<number> => fetch(`${s.url}/healthz`, { headers: { connection: 'close' } }).then((r) => r.status, () => 0);
      expect(await health()).toBe(200);
      const exited = new Promise<number | null>((r) => s.proc.once('exit', (code) => r(code)));
      s.proc.kill('SIGINT');
      await waitFor(async () => (await health()) === 503, 30_000, 'the health path to say 503');
      expect((await fetch(`${s.url}/`)).status).toBe(200);
      expect(s.stderr()).toMatch(/tsgi nginx: draining for 600 s/);
      s.proc.kill('SIGINT');
      const code = await Promise.race([exited, sleep(30_000).then(() => 'still running')]);
      expect(code, s.stderr()).toBe(0);
      expect(runDirs().filter((d) => !before.includes(d))).toEqual([]);
    } finally {
      await s.stop();
    }
  });
});
