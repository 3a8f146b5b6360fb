// mod_tsgi's own behaviour in a real Apache, with a scripted fake worker
// (fixtures/fake-worker.mjs) that sends exactly the frames each case needs:
// header validation, protocol errors, ERROR replies,
// crashes, timeouts, body limits, supervision, socket security, stop. The real
// worker and the handler pipeline are covered by the integration tests.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freePort } from '@tsgi/conformance/testing';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildModule, packageDir } from '../src/build.js';
import { apacheConf as conf, stopPlain } from './helpers.js';

const FIXTURES = resolve(packageDir, 'test', 'fixtures');
const PROTOCOL_JS = resolve(packageDir, 'dist', 'protocol.js');
interface Raw {
  status: number;
  headers: http.IncomingHttpHeaders;
  raw: string[];
  body: Buffer;
  chunks: number;
}

function request(port: number, path: string, opts: { method?: string; headers?: Record<string, string>; body?: Buffer; chunked?: boolean } = {}): Promise<Raw> {
  return new Promise((ok, fail) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body && !opts.chunked) headers['content-length'] = String(opts.body.length);
    const req = http.request({ host: '127.0.0.1', port, path, method: opts.method ?? 'GET', headers, agent: false }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (c: Buffer) => parts.push(c));
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('response aborted')));
      res.on('end', () =>
        ok({ status: res.statusCode ?? 0, headers: res.headers, raw: res.rawHeaders, body: Buffer.concat(parts), chunks: parts.length }),
      );
    });
    req.on('error', fail);
    if (opts.body) {
      // Several writes so a chunked body really is streamed in chunks.
      for (let i = 0; i < opts.body.length; i += 256 << 10) req.write(opts.body.subarray(i, i + (256 << 10)));
    }
    req.end();
  });
}

/** Polls until check() passes (bounded), for effects that land after a response. */
async function eventually(check: () => boolean | Promise<boolean>, tries = 100): Promise<void> {
  for (let i = 0; i < tries; i++) {
    if (await check()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

let root: string;
let port: number;
let apache: ChildProcess;
let so: string;
const errorLog = () => readFileSync(join(root, 'error.log'), 'utf8');

async function waitReady(): Promise<void> {
  for (let i = 0; i < 200 && apache.exitCode === null && apache.signalCode === null; i++) {
    try {
      const r = await request(port, '/app/');
      if (r.status === 200) return;
    } catch {
      // not listening yet
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`Apache did not come up:\n${existsSync(join(root, 'error.log')) ? errorLog() : ''}`);
}

beforeAll(async () => {
  so = (await buildModule()).so;
  root = mkdtempSync(join(tmpdir(), 'tsgi-mod-'));
  chmodSync(root, 0o755);
  writeFileSync(join(root, 'handler.mjs'), 'export default { fetch: () => new Response("unused") };\n');
  // The workers run as www-data: CI clones the repo into a 0700 temp dir, so they get copies in the 0755 root.
  for (const f of ['fake-worker.mjs', 'never-accepts.mjs']) copyFileSync(join(FIXTURES, f), join(root, f));
  copyFileSync(PROTOCOL_JS, join(root, 'protocol.mjs')); // no package.json there: .mjs keeps it ESM
  mkdirSync(join(root, 'files'));
  writeFileSync(join(root, 'files', 'secret.txt'), 'static secret\n');
  mkdirSync(join(root, 'plain'));
  writeFileSync(join(root, 'plain', 'hello.txt'), 'plain file\n');
  port = await freePort();
  writeFileSync(
    join(root, 'httpd.conf'),
    conf(root, port, so, `
TsgiDaemon app handler=handler.mjs worker=${root}/fake-worker.mjs processes=1 request-timeout=1 max-body=1M graceful-timeout=2
TsgiDaemon dead handler=handler.mjs worker=${root}/never-accepts.mjs connect-timeout=0.5
TsgiSchedBatch On
<Location /app>
  SetHandler tsgi
  TsgiDaemonName app
</Location>
# A file area nested in the tsgi location: mod_tsgi must not skip its file lookup.
Alias /app/plain ${root}/plain
<Location /app/plain>
  SetHandler none
</Location>
<Directory ${root}/plain>
  Require all granted
</Directory>
<Location /dead>
  SetHandler tsgi
  TsgiDaemonName dead
</Location>
# ctx.basePath: only a plain <Location> mounts at its path; regex locations mount nowhere ('').
<Location ~ "/rx">
  SetHandler tsgi
  TsgiDaemonName app
</Location>
<LocationMatch "/lm">
  SetHandler tsgi
  TsgiDaemonName app
</LocationMatch>
Alias /files ${root}/files
<Directory ${root}/files>
  AuthType tsgi
  AuthName files
  TsgiAuthenticate app
  TsgiAuthorize app
  TsgiLog app
  Require valid-user
</Directory>
`),
  );
  apache = spawn('apache2', ['-DFOREGROUND', '-f', join(root, 'httpd.conf')], {
    env: { ...process.env, FAKE_TSGI_PROTOCOL: join(root, 'protocol.mjs') },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  await waitReady();
});

afterAll(() => stopPlain(apache, root));

const info = async (path = '/app/info', init?: Parameters<typeof request>[2]) => {
  const r = await request(port, path, init);
  expect(r.status).toBe(200);
  return JSON.parse(r.body.toString()) as Record<string, unknown> & { env: Record<string, unknown>; headers: string[] };
};

describe('mod_tsgi in a real Apache', () => {
  it('runs workers as the Apache User (never root) with the listener on fd 3 and no secret in the environment', async () => {
    const i = await info();
    expect(i.uid).toBe(33);
    expect(i.gid).toBe(33);
    // Root's supplementary groups must not leak into the worker.
    expect(i.groups).toEqual([33]);
    expect(i.env).toMatchObject({ daemon: 'app', listen: '3', maxBody: '1048576', secretInEnv: false });
    expect(i.env.handler).toBe(join(root, 'handler.mjs'));
  });

  it('keeps the socket in a 0700 directory owned by the child user, socket 0600', () => {
    const dirs = spawnSync('sh', ['-c', `ls -d ${root}/run/tsgi.*`], { encoding: 'utf8' }).stdout.trim().split('\n');
    expect(dirs).toHaveLength(1);
    const dir = statSync(dirs[0]);
    expect(dir.mode & 0o777).toBe(0o700);
    expect(dir.uid).toBe(33);
    const sock = statSync(join(dirs[0], 'app.sock'));
    expect(sock.isSocket()).toBe(true);
    expect(sock.mode & 0o777).toBe(0o600);
  });

  it("sends ctx.basePath: a plain <Location>'s path, '' for a regex <Location ~> or <LocationMatch>", async () => {
    expect((await info('/app/info')).basePath).toBe('/app');
    expect((await info('/rx/info')).basePath).toBe('');
    expect((await info('/lm/info')).basePath).toBe('');
  });

  it('sends the raw URI with query, method, host, client address, request id and headers in order', async () => {
    const i = await info('/app/info?a=1&b=%20x', { headers: { 'X-One': '1', 'X-Two': 'two' } });
    expect(i).toMatchObject({ method: 'GET', uri: '/app/info?a=1&b=%20x', protocol: 'HTTP/1.1', scheme: 'http', host: `127.0.0.1:${port}`, clientIp: '127.0.0.1', serverPort: port, tls: false, hasBody: false, contentLength: 0 });
    const names = i.headers.filter((_, k) => k % 2 === 0).map((h) => h.toLowerCase());
    expect(names.indexOf('x-one')).toBeLessThan(names.indexOf('x-two'));
    expect(typeof i.id).toBe('string');
    // The id is Apache's log id, so the access log (%L) and the handler agree.
    const line = `200 ${i.id as string} - GET /app/info?a=1`;
    await eventually(() => readFileSync(join(root, 'access.log'), 'utf8').includes(line));
    expect(readFileSync(join(root, 'access.log'), 'utf8')).toContain(line);
  });

  it('keeps repeated Set-Cookie, applies Content-Type and Content-Length', async () => {
    const r = await request(port, '/app/headers');
    expect(r.status).toBe(201);
    expect(r.headers['set-cookie']).toEqual(['a=1', 'b=2']);
    expect(r.headers['content-type']).toBe('text/x-test');
    expect(r.headers['content-length']).toBe('5');
    expect(r.headers['transfer-encoding']).toBeUndefined();
    expect(r.raw.filter((h) => h === 'X-Multi')).toHaveLength(2);
    expect(r.body.toString()).toBe('hello');
  });

  it('TsgiSchedBatch On: the child\'s threads run as SCHED_BATCH, the root parent does not', () => {
    const parent = String(apache.pid);
    const child = spawnSync('pgrep', ['-P', parent, 'apache2'], { encoding: 'utf8' }).stdout.trim().split('\n')[0];
    expect(child).toMatch(/^\d+$/);
    const policies = (pid: string) => spawnSync('ps', ['-L', '-o', 'policy=', '-p', pid], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.trim()).filter(Boolean);
    expect(new Set(policies(child))).toEqual(new Set(['B']));
    expect(policies(parent)).toEqual(['TS']);
  });

  it('serves a file area nested in a tsgi <Location> (SetHandler none) from disk, not from the worker', async () => {
    const r = await request(port, '/app/plain/hello.txt');
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe('plain file\n');
    expect((await request(port, '/app/plain/missing.txt')).status).toBe(404);
  });

  it('sends no body for HEAD', async () => {
    const r = await request(port, '/app/headers', { method: 'HEAD' });
    expect(r.status).toBe(201);
    expect(r.headers['content-length']).toBe('5');
    expect(r.body.length).toBe(0);
  });

  it('answers 502 for a header with CR/LF or a bad name, and nothing leaks', async () => {
    const crlf = await request(port, '/app/crlf');
    expect(crlf.status).toBe(502);
    expect(crlf.headers.injected).toBeUndefined();
    expect(crlf.headers['x-evil']).toBeUndefined();
    expect((await request(port, '/app/badname')).status).toBe(502);
    expect(errorLog()).toMatch(/mod_tsgi: request \S+: worker sent an invalid header/);
  });

  it('never lets a body overrun or fall short of the worker\'s Content-Length', async () => {
    // More bytes than declared would land in the next response on a keep-alive connection.
    expect((await request(port, '/app/cl-long')).status).toBe(502);
    expect(errorLog()).toMatch(/worker sent more than its Content-Length/);
    await expect(request(port, '/app/cl-short')).rejects.toThrow();
    expect(errorLog()).toMatch(/worker sent 3 body bytes, Content-Length said 10/);
  });

  it("sends the worker's reason phrase in the status line, and refuses one with CR/LF (502)", async () => {
    const raw = await new Promise<string>((ok, fail) => {
      const sock = net.connect(port, '127.0.0.1', () => sock.write('GET /app/reason HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
      let got = '';
      sock.on('data', (d: Buffer) => (got += d.toString('latin1')));
      sock.on('end', () => ok(got));
      sock.on('error', fail);
    });
    expect(raw.split('\r\n')[0]).toBe('HTTP/1.1 203 Fine Thanks');
    const bad = await request(port, '/app/reason-crlf');
    expect(bad.status).toBe(502);
    expect(bad.headers.injected).toBeUndefined();
    expect(errorLog()).toMatch(/mod_tsgi: request \S+: worker sent an invalid reason phrase/);
  });

  it('passes unusual status codes and refuses 1xx', async () => {
    const r = await request(port, '/app/status299');
    expect(r.status).toBe(299);
    expect(r.body.toString()).toBe('odd');
    expect((await request(port, '/app/status100')).status).toBe(502);
  });

  it('answers 502 for protocol garbage or a frame out of place, then serves the next request', async () => {
    expect((await request(port, '/app/garbage')).status).toBe(502);
    expect((await request(port, '/app/decision')).status).toBe(502);
    expect(errorLog()).toMatch(/protocol error: unsupported protocol version/);
    expect(errorLog()).toMatch(/unexpected frame type 0x83/);
    const ok = await request(port, '/app/after');
    expect(ok.status).toBe(200);
    expect(ok.body.toString()).toBe('ok GET /app/after 0');
  });

  it('turns a worker ERROR into 503 with its Retry-After, logged with the request id', async () => {
    const r = await request(port, '/app/overload');
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('9');
    expect(errorLog()).toMatch(/mod_tsgi: request \S+: daemon app: worker refused the request: max-inflight reached \(503\)/);
  });

  it('streams flushed chunks and multi-frame bodies', async () => {
    // The first chunk must reach the client while the worker still holds the
    // stream open (it sends the rest only after /release): no timing involved.
    const body = await new Promise<string>((ok, fail) => {
      http.get({ host: '127.0.0.1', port, path: '/app/stream', agent: false }, (res) => {
        let text = '';
        res.on('data', (c: Buffer) => {
          if (!text) void request(port, '/app/release').catch(fail);
          text += c.toString();
        });
        res.on('end', () => ok(text));
        res.on('error', fail);
      }).on('error', fail);
    });
    expect(body).toBe('chunk 0\nchunk 1\n');
    const big = await request(port, '/app/big');
    expect(big.body.length).toBe(3 << 20);
    expect(big.body.every((b) => b === 97)).toBe(true);
  });

  it('forwards request bodies with Content-Length and chunked', async () => {
    const body = Buffer.alloc(300_000, 1);
    expect((await request(port, '/app/', { method: 'POST', body })).body.toString()).toBe('ok POST /app/ 300000');
    expect((await request(port, '/app/', { method: 'POST', body, chunked: true })).body.toString()).toBe('ok POST /app/ 300000');
    const i = await info('/app/info', { method: 'POST', body, chunked: true });
    expect(i).toMatchObject({ hasBody: true, contentLength: -1, bodyLength: 300000 });
  });

  it('answers 413 over max-body: before contacting the worker for Content-Length, mid-stream for chunked', async () => {
    const body = Buffer.alloc(1_500_000, 2);
    expect((await request(port, '/app/', { method: 'POST', body })).status).toBe(413);
    expect(errorLog()).toMatch(/Content-Length 1500000 exceeds max-body/);
    expect((await request(port, '/app/', { method: 'POST', body, chunked: true }).catch(() => ({ status: 413 }))).status).toBe(413);
    expect(errorLog()).toMatch(/body exceeds max-body \(1048576 bytes\)/);
    // The worker was told why (ABORT reason 3).
    expect((await request(port, '/app/aborted')).body.toString()).toBe('3');
  });

  it('gives 504 on request-timeout and aborts the request in the worker, which keeps serving', async () => {
    const r = await request(port, '/app/slow');
    expect(r.status).toBe(504);
    expect(errorLog()).toMatch(/daemon app: request-timeout \(504\)/);
    expect((await request(port, '/app/aborted')).body.toString()).toBe('2');
  });

  it('tells the worker to abort when the client hangs up while it computes', async () => {
    const sock = net.connect(port, '127.0.0.1');
    await new Promise((r) => sock.once('connect', r));
    sock.write('GET /app/slow HTTP/1.1\r\nHost: x\r\n\r\n');
    // Hang up only once the worker is inside the request.
    await eventually(async () => (await request(port, '/app/slowstate')).body.toString() === 'waiting');
    sock.destroy();
    let reason = '';
    for (let i = 0; i < 50 && reason !== '1'; i++) {
      await new Promise((r) => setTimeout(r, 20));
      reason = (await request(port, '/app/aborted')).body.toString();
    }
    expect(reason).toBe('1');
    expect(errorLog()).toMatch(/mod_tsgi: request \S+: client went away; worker told to abort/);
  });

  describe('TsgiAuthenticate, TsgiAuthorize and TsgiLog guarding a static file', () => {
    const get = (auth?: string) => request(port, '/files/secret.txt', auth ? { headers: { authorization: auth } } : {});

    it('serves the file when authenticate names a user and authorize allows', async () => {
      const r = await get('Bearer alice');
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe('static secret\n');
      const logged = /200 \S+ alice GET \/files\/secret.txt/;
      await eventually(() => logged.test(readFileSync(join(root, 'access.log'), 'utf8')));
      expect(readFileSync(join(root, 'access.log'), 'utf8')).toMatch(logged);
    });

    it('sends the rejecting Response of authenticate as is (status, headers, body)', async () => {
      const r = await get();
      expect(r.status).toBe(401);
      expect(r.headers['www-authenticate']).toBe('Bearer realm="t"');
      expect(r.headers['set-cookie']).toEqual(['x=1']);
      expect(r.body.toString()).toBe('who are you\n');
    });

    it('answers 401 for no opinion under AuthType tsgi', async () => {
      expect((await get('Bearer none')).status).toBe(401);
    });

    it('sends the rejecting Response of authorize, which saw the user', async () => {
      const r = await get('Bearer bob');
      expect(r.status).toBe(403);
      expect(r.body.toString()).toBe('no entry for bob\n');
    });

    it('runs log after each request with status, bytes and user', async () => {
      let logs: { uri: string; user: string; status: number; bytes: number }[] = [];
      for (let i = 0; i < 50 && logs.length < 4; i++) {
        await new Promise((res) => setTimeout(res, 20));
        logs = JSON.parse((await request(port, '/app/logs')).body.toString()) as typeof logs;
      }
      expect(logs.map((l) => [l.uri, l.status, l.user])).toEqual([
        ['/files/secret.txt', 200, 'alice'],
        ['/files/secret.txt', 401, ''],
        ['/files/secret.txt', 401, ''],
        ['/files/secret.txt', 403, 'bob'],
      ]);
      expect(logs[0].bytes).toBe(14);
    });
  });

  it('gives 503 with Retry-After when no worker accepts within connect-timeout', async () => {
    const r = await request(port, '/dead/');
    expect(r.status).toBe(503);
    expect(r.headers['retry-after']).toBe('1');
    expect(errorLog()).toMatch(/daemon dead: no worker accepted within connect-timeout \(503\)/);
  });

  it('gives 502 to a request whose worker is killed, restarts the worker, and serves again', async () => {
    const before = (await info()).pid;
    expect((await request(port, '/app/crash')).status).toBe(502);
    expect(errorLog()).toMatch(/worker closed the connection \(crashed\?\) \(502\)/);
    const after = (await info()).pid;
    expect(after).not.toBe(before);
    expect(errorLog()).toMatch(new RegExp(`worker #0 \\(pid ${before as number}\\) ended with exit code or signal 9; restarting`));
  });

  it('cuts the client connection when the worker dies after the response head', async () => {
    await expect(request(port, '/app/midcrash')).rejects.toThrow();
    expect((await request(port, '/app/')).status).toBe(200);
  });

  it('keeps serving on the same socket across a graceful restart', async () => {
    const before = (await info()).pid;
    const sockDir = spawnSync('sh', ['-c', `ls -d ${root}/run/tsgi.*`], { encoding: 'utf8' }).stdout.trim();
    process.kill(apache.pid!, 'SIGUSR1');
    let pid = before;
    for (let i = 0; i < 100 && pid === before; i++) {
      await new Promise((r) => setTimeout(r, 100));
      pid = (await info()).pid;
    }
    expect(pid).not.toBe(before);
    expect(existsSync(join(sockDir, 'app.sock'))).toBe(true);
    // The retired worker drains and is reaped as ours, not as a stray child.
    for (let i = 0; i < 100 && existsSync(`/proc/${before as number}`); i++) await new Promise((r) => setTimeout(r, 50));
    expect(existsSync(`/proc/${before as number}`)).toBe(false);
    expect(errorLog()).not.toMatch(/long lost child/);
  });

  it('on stop, exits cleanly, terminates the workers and removes the socket directory', async () => {
    const pid = (await info()).pid as number;
    apache.kill('SIGTERM');
    // A clean 0: nothing of the unloaded module may run at exit (a crash here was a dangling cleanup).
    const code = await new Promise((r) => apache.once('exit', (c) => r(c)));
    expect(code).toBe(0);
    for (let i = 0; i < 50 && existsSync(`/proc/${pid}`); i++) await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(`/proc/${pid}`)).toBe(false);
    expect(spawnSync('sh', ['-c', `ls ${root}/run`], { encoding: 'utf8' }).stdout.trim()).toBe('');
  });
});

describe('directive validation', () => {
  let dir: string;
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'tsgi-conf-'));
    writeFileSync(join(dir, 'h.mjs'), 'export default { fetch() {} }\n');
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const check = (body: string) => {
    writeFileSync(join(dir, 'c.conf'), conf(dir, 1, so, body));
    const r = spawnSync('apache2', ['-t', '-f', join(dir, 'c.conf')], { encoding: 'utf8' });
    return { ok: r.status === 0, out: `${r.stdout}${r.stderr}` };
  };
  const daemon = `TsgiDaemon app handler=h.mjs worker=${root}/fake-worker.mjs`;

  it('accepts a complete configuration', () => {
    const r = check(`${daemon} processes=2 max-requests=100 max-inflight=10 request-timeout=2.5 queue-timeout=5 connect-timeout=1 graceful-timeout=3 max-body=8M max-heap=512M health=/healthz metrics=/metrics metrics-public server-timing user=www-data group=www-data clear-env env=DATABASE_URL env=TZ
<Location /a>
  SetHandler tsgi
  TsgiDaemonName app
  TsgiAuthenticate app
  TsgiAuthorize app
  TsgiLog app
</Location>`);
    expect(r.out).toContain('Syntax OK');
    expect(r.ok).toBe(true);
  });

  it.each([
    ['a missing handler=', 'TsgiDaemon app processes=2', /handler=<path> is required/],
    ['a missing handler file', `TsgiDaemon app handler=${'/nope/h.mjs'}`, /handler file not found: \/nope\/h.mjs/],
    ['a non-numeric count', `${daemon} processes=abc`, /processes=abc is not a whole number in 1\.\.512/],
    ['zero processes', `${daemon} processes=0`, /processes=0 is not a whole number/],
    ['a negative timeout', `${daemon} request-timeout=-1`, /request-timeout=-1 is not a number of seconds/],
    ['a bad size suffix', `${daemon} max-body=12Q`, /max-body=12Q is not a size/],
    ['an unknown option', `${daemon} colour=blue`, /unknown option 'colour'/],
    ['a bad max-heap', `${daemon} max-heap=lots`, /max-heap=lots is not a size/],
    ['a health path without /', `${daemon} health=healthz`, /health=healthz is not a URL path starting with \//],
    ['a metrics path without /', `${daemon} metrics=m`, /metrics=m is not a URL path starting with \//],
    ['an option without a value', `${daemon} processes`, /expected key=value, got 'processes'/],
    ['a missing node', `${daemon} node=/nope/node`, /node executable not found: \/nope\/node/],
    ['an unknown user', `${daemon} user=no-such-user-tsgi`, /unknown user 'no-such-user-tsgi'/],
    ['a daemon defined twice', `${daemon}\n${daemon}`, /TsgiDaemon app: defined twice/],
    ['env= without clear-env', `${daemon} env=DATABASE_URL`, /env= lists what clear-env keeps; add clear-env/],
    ['env= with no variable name', `${daemon} clear-env env=1X`, /env=1X is not a variable name/],
    ["env= naming one of mod_tsgi's variables", `${daemon} clear-env env=TSGI_HANDLER`, /env=TSGI_HANDLER is not a variable name/],
    ['an unknown TsgiDaemonName', '<Location /a>\n TsgiDaemonName ghost\n</Location>', /TsgiDaemonName: unknown daemon 'ghost'/],
    ['an unknown TsgiAuthenticate', '<Location /a>\n TsgiAuthenticate ghost\n</Location>', /TsgiAuthenticate: unknown daemon 'ghost'/],
    ['TsgiDaemon inside <Location>', `<Location /a>\n ${daemon}\n</Location>`, /TsgiDaemon not allowed in <Location> context/],
    ['TsgiSchedBatch in a <VirtualHost>', '<VirtualHost *:1>\n TsgiSchedBatch On\n</VirtualHost>', /TsgiSchedBatch cannot occur within <VirtualHost> section/],
    ['TsgiSchedBatch with a bad flag', 'TsgiSchedBatch maybe', /TsgiSchedBatch must be On or Off/],
  ])('rejects %s', (_what, body, message) => {
    const r = check(body);
    expect(r.ok).toBe(false);
    expect(r.out).toMatch(message);
  });

  it('refuses to start workers as root', () => {
    writeFileSync(join(dir, 'root.conf'), conf(dir, 1, so, `${daemon} user=root`));
    const r = spawnSync('apache2', ['-DFOREGROUND', '-f', join(dir, 'root.conf')], { encoding: 'utf8', timeout: 30_000 });
    expect(r.status).not.toBe(0);
    expect(readFileSync(join(dir, 'error.log'), 'utf8')).toMatch(/daemon app: refusing to run workers as root/);
  });
});
