/**
 * `tsgi apache install <handler>`: mod_tsgi and the handler installed into Debian's Apache layout,
 * so the config names installed files only and survives `npm update` (or removal) of tsgi:
 *
 *   <modules>/mod_tsgi.so                        `apxs -q LIBEXECDIR` (Debian: /usr/lib/apache2/modules), 0644
 *   /etc/apache2/mods-available/tsgi.load        LoadModule (`a2enmod tsgi`)
 *   /var/lib/tsgi/<name>/app.mjs                 the handler and the worker runtime in one bundle,
 *                                                0640 root:<workers' group>, its dir 0750
 *   /etc/apache2/conf-available/tsgi-<name>.conf TsgiDaemon + <Location> (`a2enconf tsgi-<name>`)
 *
 * mod_tsgi is compiled in a temp dir removed afterwards (nothing is left in or read from the package's
 * build cache). Every file is written beside its target and renamed over it, so a running Apache (and
 * its graceful restart) never reads half a file, and a loaded mod_tsgi.so is never written in place.
 * `--root DIR` puts the same tree under DIR (DIR/etc/apache2, DIR/usr/lib/apache2/modules, DIR/var/lib/tsgi),
 * and the files name those paths: an Apache with ServerRoot DIR/etc/apache2 runs from them.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { DEBIAN_MODULES, quote } from './config.js';

/** The installed paths of daemon `name` under `root` ('' for /). */
export interface Installed {
  so: string;
  load: string;
  dir: string;
  bundle: string;
  conf: string;
}

/** Where Apache keeps its modules: apxs's answer, else Debian's directory. */
export function modulesDir(): string {
  try {
    const dir = execFileSync('apxs', ['-q', 'LIBEXECDIR'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
    if (dir.startsWith('/')) return dir;
  } catch {
    /* no apxs: the build below says so */
  }
  return DEBIAN_MODULES;
}

export function installedPaths(root: string, name: string): Installed {
  const r = root.replace(/\/+$/, '');
  const etc = `${r}/etc/apache2`;
  const dir = `${r}/var/lib/tsgi/${name}`;
  return {
    so: `${r}${modulesDir()}/mod_tsgi.so`,
    load: `${etc}/mods-available/tsgi.load`,
    dir,
    bundle: `${dir}/app.mjs`,
    conf: `${etc}/conf-available/tsgi-${name}.conf`,
  };
}

/** Written beside `to` and renamed over it. */
function put(to: string, write: (tmp: string) => void, mode: number, gid?: number): void {
  mkdirSync(dirname(to), { recursive: true, mode: 0o755 });
  const tmp = `${to}.tsgi-${process.pid}.tmp`;
  try {
    write(tmp);
    if (gid !== undefined) chownSync(tmp, process.getuid!(), gid);
    chmodSync(tmp, mode);
    renameSync(tmp, to);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw err;
  }
}

export const putText = (to: string, text: string, mode = 0o644, gid?: number): void => put(to, (tmp) => writeFileSync(tmp, text), mode, gid);

/**
 * Installs mod_tsgi (compiled with apxs in a temp dir) and the bundle (made by `bundle(file)`), then
 * the tsgi.load and conf files `text` gives for the installed paths. Returns the paths.
 */
export async function install(o: {
  root: string;
  name: string;
  gid?: number;
  bundle: (outfile: string) => Promise<void>;
  conf: (paths: Installed) => string;
}): Promise<Installed> {
  const paths = installedPaths(o.root, o.name);
  const { buildModule } = await import('./build.js');
  const work = mkdtempSync(join(tmpdir(), 'tsgi-apache-install-'));
  try {
    // The module's compiled-in default worker is the installed bundle, never the package's dist/.
    const { so } = await buildModule({ outDir: work, defaultWorker: paths.bundle });
    put(paths.so, (tmp) => copyFileSync(so, tmp), 0o644);
    // Its parents searchable by all (a recursive mkdir would give them the 0750 too).
    mkdirSync(dirname(paths.dir), { recursive: true, mode: 0o755 });
    mkdirSync(paths.dir, { recursive: true, mode: 0o750 });
    if (o.gid !== undefined) chownSync(paths.dir, process.getuid!(), o.gid);
    chmodSync(paths.dir, 0o750);
    const built = join(work, 'app.mjs');
    await o.bundle(built);
    put(paths.bundle, (tmp) => copyFileSync(built, tmp), 0o640, o.gid);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  putText(paths.load, `# tsgi (mod_tsgi), installed by tsgi apache install\nLoadModule tsgi_module ${quote(paths.so)}\n`);
  putText(paths.conf, o.conf(paths));
  return paths;
}

/** Whether daemon `name` is installed under `root`. */
export const isInstalled = (p: Installed): boolean => existsSync(p.so) && existsSync(p.bundle);
