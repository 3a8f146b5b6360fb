// SIGHUP to `tsgi nginx run` picks up a changed handler (embedded: rebuilt bundle; workers: rebuilt
// worker bundle, workers rolled). A handler that no longer builds or starts leaves the old code serving.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { sleep, startNginx, type Running } from './helpers.js';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-reload-test-'));
const handler = join(dir, 'handler.ts');
const version = (v: string): void => {
  writeFileSync(handler, `export default { fetch: () => new Response('version ${v}\\n') };\n`);
  chmodSync(handler, 0o644);
};
const servers: Record<string, Running> = {};

beforeAll(async () => {
  version('1');
  const [e, w] = await Promise.all([startNginx(handler), startNginx(handler, ['--workers', '1'])]);
  servers.embedded = e;
  servers.workers = w;
});
afterAll(async () => {
  await Promise.all(Object.values(servers).map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

async function hup(srv: Running, expect: RegExp): Promise<void> {
  const seen = srv.stderr().length;
  srv.proc.kill('SIGHUP');
  const end = Date.now() + 60_000;
  while (!expect.test(srv.stderr().slice(seen))) {
    if (Date.now() > end) throw new Error(`no ${expect} after SIGHUP:\n${srv.stderr()}`);
    await sleep(50);
  }
}

const body = async (srv: Running): Promise<string> => (await fetch(srv.url + '/')).text();

describe('SIGHUP reload picks up handler changes', () => {
  // Sequential on purpose: both servers read the same handler file.
  it('a changed handler is served after SIGHUP, in both modes', async () => {
    expect(await body(servers.embedded!)).toBe('version 1\n');
    expect(await body(servers.workers!)).toBe('version 1\n');
    version('2');
    await hup(servers.embedded!, /tsgi nginx: reloaded/);
    await hup(servers.workers!, /tsgi nginx: reloaded/);
    expect(await body(servers.embedded!)).toBe('version 2\n');
    expect(await body(servers.workers!)).toBe('version 2\n');
  });

  it('a handler that no longer builds: reload fails with a message, the previous version keeps serving', async () => {
    writeFileSync(handler, `import { readFileSync } from 'node:fs';\nexport default { fetch: () => new Response(readFileSync('/etc/hostname')) };\n`);
    await hup(servers.embedded!, /reload failed: .*imports the Node built-in "node:fs"/);
    expect(await body(servers.embedded!)).toBe('version 2\n');
    writeFileSync(handler, `export default { nofetch: 1 };\n`);
    await hup(servers.workers!, /reload failed: a new worker did not start; still serving the previous handler/);
    // The new worker's own reason, as the start-up failure line would give it.
    expect(servers.workers!.stderr()).toMatch(/keeping the old one: \S+handler\.ts: the default export must be an object with a fetch/);
    expect(await body(servers.workers!)).toBe('version 2\n');
  });
});
