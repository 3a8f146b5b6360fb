// The access log: `tsgi serve` prints one line per request in the format of the private nginx of
// `tsgi nginx run` (core access-log.ts), on stdout; --no-access-log turns it off on every command.
import { mkdtempSync, rmSync, writeFileSync, chmodSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { accessLogLine, timeLocal } from '@tsgi/core/node';
import { freePort, startTsgi, waitFor, type RunningTsgi } from '@tsgi/conformance/testing';

const dir = mkdtempSync(join(tmpdir(), 'tsgi-access-log-test-'));
chmodSync(dir, 0o755);
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const handler = join(dir, 'hello.ts');
writeFileSync(handler, `export default { fetch: () => new Response('hello') };\n`);
chmodSync(handler, 0o644);

/** The same request on every host: a query, a Referer and a User-Agent with a quote in it. */
async function ask(s: RunningTsgi, path: string): Promise<void> {
  const r = await fetch(s.url + path, { headers: { referer: 'http://ref.example/', 'user-agent': 'tsgi-test "ua"' } });
  await r.text();
}

/** A line with its time and duration masked (they differ between runs). */
const shape = (line: string): string =>
  line.replace(/\[[^\]]+\]/, '[TIME]').replace(/ \d+\.\d{3}$/, ' SECONDS').replace(/^::ffff:/, '');

const LINE = /^127\.0\.0\.1 - - \[\d\d\/[A-Z][a-z]{2}\/\d{4}:\d\d:\d\d:\d\d [+-]\d{4}\] "GET \/x\?q=1 HTTP\/1\.1" 200 5 "http:\/\/ref\.example\/" "tsgi-test \\x22ua\\x22" \d+\.\d{3}$/;

describe('access log', () => {
  it('accessLogLine: the Combined Log Format plus seconds, nginx escaping, - for what is missing', () => {
    const at = new Date(2026, 11, 1, 9, 5, 7);
    const line = accessLogLine({ ip: '10.0.0.1', method: 'GET', target: '/a b"\\', httpVersion: '1.0', status: 404, bytes: 0, durationMs: 1234.5, at });
    expect(line).toBe(`10.0.0.1 - - [${timeLocal(at)}] "GET /a b\\x22\\x5C HTTP/1.0" 404 0 "-" "-" 1.234`);
    expect(timeLocal(at)).toMatch(/^01\/Dec\/2026:09:05:07 [+-]\d{4}$/);
    expect(accessLogLine({ ip: '::1', user: 'alice', method: 'POST', target: '/\u00e9\n', httpVersion: '1.1', status: 200, bytes: 3, durationMs: 0, at })).toContain(
      '::1 - alice [',
    );
    expect(accessLogLine({ ip: '', method: 'GET', target: '/\u00e9\n', httpVersion: '1.1', status: 200, bytes: 3, durationMs: 0, at })).toContain('"GET /\\xE9\\x0A HTTP/1.1"');
  });

  it('tsgi serve, tsgi nginx run and tsgi apache run print the same line, on stdout', { timeout: 120_000 }, async () => {
    const serve = await startTsgi(['serve', handler, '--port', '0']);
    const nginx = await startTsgi(['nginx', 'run', handler, '--port', '0']);
    const apache = await startTsgi(['apache', 'run', handler, '--port', String(await freePort())]);
    try {
      for (const s of [serve, nginx, apache]) await ask(s, '/x?q=1');
      await waitFor(() => [serve, nginx, apache].every((s) => s.stdout().includes('\n')), 10_000, 'the three access log lines');
      const [a] = serve.stdout().trim().split('\n');
      const [b] = nginx.stdout().trim().split('\n');
      const [c] = apache.stdout().trim().split('\n');
      expect(a).toMatch(LINE);
      expect(c).toMatch(LINE);
      expect(shape(a!)).toBe(shape(b!));
      expect(shape(c!)).toBe(shape(b!));
      expect(serve.stderr()).not.toContain('GET /x');
    } finally {
      await serve.stop();
      await nginx.stop();
      await apache.stop();
    }
  });

  it('tsgi serve logs what the server answered itself too (404 outside --location)', async () => {
    const s = await startTsgi(['serve', handler, '--port', '0', '--location', '/app']);
    try {
      await ask(s, '/elsewhere');
      await waitFor(() => s.stdout().includes('\n'), 10_000, 'the access log line');
      expect(s.stdout().trim()).toMatch(/"GET \/elsewhere HTTP\/1\.1" 404 10 /);
    } finally {
      await s.stop();
    }
  });

  for (const [cmd, extra] of [
    [['serve'], []],
    [['apache', 'run'], []],
    [['nginx', 'run'], []],
    [['nginx', 'run'], ['--workers', '1']],
  ] as const) {
    it(`tsgi ${[...cmd, ...extra].join(' ')} --no-access-log: nothing on stdout`, { timeout: 120_000 }, async () => {
      const s = await startTsgi([...cmd, handler, '--port', '0', '--no-access-log', ...extra]);
      try {
        await ask(s, '/x?q=1');
        await ask(s, '/x?q=2');
        await new Promise((r) => setTimeout(r, 500));
        expect(s.stdout()).toBe('');
      } finally {
        await s.stop();
      }
    });
  }
});
