// `tsgi apache install --root R` into a private copy of Debian's /etc/apache2 (under R), enabled with
// Debian's own a2enmod/a2enconf, and a real Apache started from it (ServerRoot R/etc/apache2) answering
// from the handler; then a graceful restart and a reinstall of a changed handler. The real /etc/apache2
// and /var/lib/apache2 are only read.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, cpSync, existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort, runCli, sleep, waitFor } from '@tsgi/conformance/testing';

const root = process.getuid?.() === 0;
const repo = resolve(fileURLToPath(new URL('../../../', import.meta.url)));
const APACHE = existsSync('/usr/sbin/apache2') ? '/usr/sbin/apache2' : 'apache2';

let base: string;
beforeAll(() => {
  base = mkdtempSync(join(tmpdir(), 'tsgi-apache-install-test-'));
  // The workers (www-data) reach the installed bundle under it.
  chmodSync(base, 0o755);
});
afterAll(() => rmSync(base, { recursive: true, force: true }));

const handlerText = (word: string): string =>
  `export default { fetch: (req: Request, ctx: { server: string }) => Response.json({ word: ${JSON.stringify(word)}, url: req.url, server: ctx.server }) };\n`;

/** A copy of Debian's /etc/apache2 under R/etc/apache2 listening on 127.0.0.1:port; envvars and the run/log/lock dirs in R. */
function debianCopy(r: string, port: number): NodeJS.ProcessEnv {
  const etc = join(r, 'etc', 'apache2');
  mkdirSync(join(r, 'etc'), { recursive: true, mode: 0o755 });
  cpSync('/etc/apache2', etc, { recursive: true, verbatimSymlinks: true });
  // Passenger (enabled on this machine) starts agents of its own: not part of what is tested.
  for (const f of ['passenger.load', 'passenger.conf']) rmSync(join(etc, 'mods-enabled', f), { force: true });
  writeFileSync(join(etc, 'ports.conf'), `Listen 127.0.0.1:${port}\n`);
  const site = join(etc, 'sites-available', '000-default.conf');
  writeFileSync(site, readFileSync(site, 'utf8').replace('<VirtualHost *:80>', `<VirtualHost *:${port}>`));
  for (const d of ['run', 'lock', 'log', 'state']) mkdirSync(join(r, d));
  const env = {
    APACHE_CONFDIR: etc,
    APACHE_STATE_DIRECTORY: join(r, 'state'),
    APACHE_RUN_USER: 'www-data',
    APACHE_RUN_GROUP: 'www-data',
    APACHE_PID_FILE: join(r, 'run', 'apache2.pid'),
    APACHE_RUN_DIR: join(r, 'run'),
    APACHE_LOCK_DIR: join(r, 'lock'),
    APACHE_LOG_DIR: join(r, 'log'),
    LANG: 'C',
  };
  writeFileSync(join(etc, 'envvars'), Object.entries(env).map(([k, v]) => `export ${k}=${v}\n`).join(''));
  return { ...process.env, ...env };
}

async function get(port: number, path: string): Promise<{ status: number; body: string }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: r.status, body: await r.text() };
}

const mode = (f: string): number => statSync(f).mode & 0o777;

describe.runIf(root)('tsgi apache install into a copy of Debian\'s Apache', () => {
  it('installs module, tsgi.load, conf and bundle; a2enmod + a2enconf; Apache serves from installed files only, after a graceful restart and a reinstall too', async () => {
    const r = join(base, 'root');
    mkdirSync(r, { mode: 0o755 });
    const port = await freePort();
    const env = debianCopy(r, port);
    // The handler in a project of its own, outside this checkout.
    const project = join(base, 'project');
    mkdirSync(project);
    const handler = join(project, 'handler.ts');
    writeFileSync(handler, handlerText('one'));

    const inst = await runCli(['apache', 'install', handler, '--root', r, '--name', 'sysapp', '--location', '/app', '--workers', '2'], 180_000);
    expect(inst.code, inst.stderr).toBe(0);
    const etc = join(r, 'etc', 'apache2');
    const so = join(r, 'usr/lib/apache2/modules/mod_tsgi.so');
    const bundle = join(r, 'var/lib/tsgi/sysapp/app.mjs');
    const load = join(etc, 'mods-available/tsgi.load');
    const conf = join(etc, 'conf-available/tsgi-sysapp.conf');
    expect(inst.stdout).toContain(`next: APACHE_CONFDIR=${etc} a2enmod tsgi && APACHE_CONFDIR=${etc} a2enconf tsgi-sysapp`);
    for (const f of [so, bundle, load, conf]) expect(inst.stdout).toContain(f);
    expect(readFileSync(load, 'utf8')).toMatch(new RegExp(`^LoadModule tsgi_module ${so}$`, 'm'));
    const text = readFileSync(conf, 'utf8');
    expect(text).toContain(`TsgiDaemon sysapp handler=${bundle} worker=${bundle} processes=2`);
    expect(text).toContain('<Location /app>');
    expect(text).not.toContain('LoadModule');
    // Nothing installed names this checkout (its build cache, dist/ or node_modules): npm update cannot break it.
    for (const f of [so, load, conf]) expect(readFileSync(f, 'latin1'), f).not.toContain(repo);
    expect(readFileSync(so, 'latin1')).toContain(bundle);
    const wwwData = Number(spawnSync('getent', ['group', 'www-data'], { encoding: 'utf8' }).stdout.split(':')[2]);
    expect(mode(join(r, 'var/lib/tsgi/sysapp'))).toBe(0o750);
    expect(statSync(join(r, 'var/lib/tsgi/sysapp')).gid).toBe(wwwData);
    expect(mode(bundle)).toBe(0o640);
    expect(mode(so)).toBe(0o644);

    // Debian's own tools enable them (in the copy: APACHE_CONFDIR, and their state in R).
    for (const [tool, what] of [['a2enmod', 'tsgi'], ['a2enconf', 'tsgi-sysapp']]) {
      const a = spawnSync(`/usr/sbin/${tool}`, [what!], { env, encoding: 'utf8' });
      expect(a.status, a.stderr).toBe(0);
    }
    expect(readlinkSync(join(etc, 'mods-enabled/tsgi.load'))).toBe('../mods-available/tsgi.load');
    expect(lstatSync(join(etc, 'conf-enabled/tsgi-sysapp.conf')).isSymbolicLink()).toBe(true);

    // `tsgi apache conf` prints the same paths (installed ones); an uninstalled name says to install first.
    const c = await runCli(['apache', 'conf', handler, '--root', r, '--name', 'sysapp', '--location', '/app', '--workers', '2']);
    expect(c.code, c.stderr).toBe(0);
    expect(c.stderr).toBe('');
    expect(c.stdout).toContain(`LoadModule tsgi_module ${so}`);
    expect(c.stdout).toContain(`TsgiDaemon sysapp handler=${bundle} worker=${bundle}`);
    const other = await runCli(['apache', 'conf', handler, '--root', r, '--name', 'other']);
    expect(other.code).toBe(0);
    expect(other.stderr.trim()).toBe(`tsgi apache: other is not installed (${join(r, 'var/lib/tsgi/other/app.mjs')}): run tsgi apache install ${handler} --name other first`);

    const t = spawnSync(APACHE, ['-d', etc, '-f', 'apache2.conf', '-t'], { env, encoding: 'utf8' });
    expect(t.status, t.stderr).toBe(0);
    let apache: ChildProcess | undefined = spawn(APACHE, ['-d', etc, '-f', 'apache2.conf', '-DFOREGROUND'], { env, stdio: 'ignore' });
    try {
      const answers = async (word: string): Promise<void> => {
        let last = '';
        try {
          await waitFor(async () => (last = (await get(port, '/app/x').catch((e: Error) => ({ status: 0, body: e.message }))).body).includes(`"word":"${word}"`), 60_000, `answer ${word}`);
        } catch (err) {
          const log = join(r, 'log', 'error.log');
          throw new Error(`${(err as Error).message}: last ${last}\n${existsSync(log) ? readFileSync(log, 'utf8').slice(-3000) : 'no error log'}`);
        }
      };
      await answers('one');
      const first = JSON.parse((await get(port, '/app/x?q=1')).body);
      expect(first).toEqual({ word: 'one', url: `http://127.0.0.1:${port}/app/x?q=1`, server: 'apache' });

      // A graceful restart reads only installed files.
      process.kill(apache.pid!, 'SIGUSR1');
      await sleep(500);
      await answers('one');

      // A changed handler: install again, graceful: the new one answers.
      writeFileSync(handler, handlerText('two'));
      const again = await runCli(['apache', 'install', handler, '--root', r, '--name', 'sysapp', '--location', '/app', '--workers', '2'], 180_000);
      expect(again.code, again.stderr).toBe(0);
      process.kill(apache.pid!, 'SIGUSR1');
      await answers('two');
    } finally {
      if (apache && apache.exitCode === null) {
        const gone = new Promise((x) => apache!.once('exit', x));
        apache.kill('SIGTERM');
        const k = setTimeout(() => apache?.kill('SIGKILL'), 20_000);
        await gone;
        clearTimeout(k);
      }
      apache = undefined;
    }
  }, 300_000);

  it('bad input: one line, nothing written', async () => {
    const r = join(base, 'bad');
    const cases: [string[], RegExp][] = [
      [['apache', 'install', join(base, 'missing.ts'), '--root', r], /^tsgi apache: handler not found: /],
      [['apache', 'install', join(base, 'missing.ts'), '--root', 'rel/dir'], /^tsgi apache: --root must be an absolute path/],
      [['apache', 'install', join(base, 'missing.ts'), '--root', r, '--name', 'a b'], /^tsgi apache: --name must be a plain word/],
    ];
    for (const [args, line] of cases) {
      const res = await runCli(args);
      expect(res.code, args.join(' ')).toBe(1);
      expect(res.stderr.trim().split('\n')[0]).toMatch(line);
    }
    const bad = join(base, 'no-fetch.ts');
    writeFileSync(bad, 'export default {};\n');
    const res = await runCli(['apache', 'install', bad, '--root', r, '--user', 'no-such-user-x']);
    expect(res.code).toBe(1);
    expect(res.stderr.trim()).toBe("tsgi apache: no such user 'no-such-user-x' (--user)");
    const nf = await runCli(['apache', 'install', bad, '--root', r]);
    expect(nf.code).toBe(1);
    expect(nf.stderr.trim()).toMatch(/default export must be an object with a fetch/);
    expect(existsSync(r)).toBe(false);
  }, 60_000);
});
