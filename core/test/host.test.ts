// The private-server runner's pieces (core/src/node/host.ts) on their own; the runner
// itself runs real servers in cli/test/runner.test.ts.
import { chmodSync, closeSync, cpSync, mkdtempSync, openSync, rmSync, writeSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { claimPort, hostPort, lookupGroup, lookupUser, workerAccount } from '@tsgi/core/node';
import { createLocalUser, removeLocalUser, runAsUser } from '@tsgi/conformance/testing';
import { Relay } from '../src/node/host.js';

const isRoot = process.getuid?.() === 0;
const OTHER = 'tsgi-t-run';

describe('lookupUser and lookupGroup (NSS)', () => {
  it('find accounts by name and by id, and nothing for a name that does not exist', () => {
    expect(lookupUser('root')).toEqual({ name: 'root', uid: 0, gid: 0, home: '/root' });
    expect(lookupUser('0')?.name).toBe('root');
    expect(lookupGroup('root')).toEqual({ name: 'root', gid: 0 });
    expect(lookupGroup('0')?.name).toBe('root');
    expect(lookupUser('tsgi-no-such-user')).toBeUndefined();
    expect(lookupGroup('tsgi-no-such-group')).toBeUndefined();
  });
});

describe.runIf(isRoot)('workerAccount (as root)', () => {
  it('the first default user that exists, with its primary group; --user and --group by name', () => {
    const www = lookupUser('www-data')!;
    expect(workerAccount()).toEqual({ name: 'www-data', uid: www.uid, gid: www.gid, group: lookupGroup(String(www.gid))!.name, home: www.home });
    const nobody = workerAccount('nobody', 'www-data')!;
    expect([nobody.name, nobody.uid, nobody.group, nobody.gid]).toEqual(['nobody', lookupUser('nobody')!.uid, 'www-data', www.gid]);
  });

  it('refuses root, a user or a group that does not exist, in one line each', () => {
    expect(() => workerAccount('root')).toThrow(/^the workers must not run as root: pick another --user$/);
    expect(() => workerAccount('tsgi-no-such-user')).toThrow(/^no such user 'tsgi-no-such-user' \(--user\)$/);
    expect(() => workerAccount(undefined, 'tsgi-no-such-group')).toThrow(/^no such group 'tsgi-no-such-group' \(--group\)$/);
  });
});

describe.runIf(isRoot)('workerAccount (not root, as a second local user)', () => {
  // A copy the other user can read: a CI checkout may sit in a 0700 directory.
  let copy = '';
  beforeAll(() => {
    createLocalUser(OTHER);
    copy = mkdtempSync(join(tmpdir(), 'tsgi-host-test-'));
    chmodSync(copy, 0o755);
    cpSync(fileURLToPath(new URL('../dist', import.meta.url)), join(copy, 'dist'), { recursive: true });
    cpSync(fileURLToPath(new URL('../package.json', import.meta.url)), join(copy, 'package.json'));
    // @tsgi/core/node's one runtime dependency loaded at import (the WebSocket kit).
    cpSync(fileURLToPath(new URL('../../node_modules/ws', import.meta.url)), join(copy, 'node_modules', 'ws'), { recursive: true, dereference: true });
  });
  afterAll(() => {
    removeLocalUser(OTHER);
    if (copy) rmSync(copy, { recursive: true, force: true });
  });

  it('everything runs as that user: no account, and naming anyone else is an error', () => {
    const node = join(copy, 'dist', 'node.js');
    const seen = runAsUser(
      OTHER,
      `const { workerAccount } = await import(${JSON.stringify(node)});
const tryIt = (f) => { try { return f() ?? 'none'; } catch (e) { return e.message; } };
console.log(JSON.stringify({ none: tryIt(() => workerAccount()), self: tryIt(() => workerAccount('${OTHER}')), other: tryIt(() => workerAccount('www-data')), group: tryIt(() => workerAccount(undefined, 'root')) }));`,
    );
    expect(seen).toEqual({
      none: 'none',
      self: 'none',
      other: `--user www-data needs root (tsgi runs as ${OTHER})`,
      group: `--group root needs root (tsgi runs as ${OTHER})`,
    });
  });
});

describe('claimPort', () => {
  it('port 0: a free port, which is free again once it resolves', async () => {
    const port = await claimPort('127.0.0.1', 0);
    expect(port).toBeGreaterThan(0);
    await new Promise<void>((resolve, reject) => {
      const s = createServer().once('error', reject);
      s.listen(port, '127.0.0.1', () => s.close(() => resolve()));
    });
  });

  it('a busy port or an unknown host: the one line every command prints', async () => {
    const busy = createServer();
    await new Promise<void>((r) => busy.listen(0, '127.0.0.1', () => r()));
    const { port } = busy.address() as AddressInfo;
    try {
      await expect(claimPort('127.0.0.1', port)).rejects.toThrow(`cannot listen on 127.0.0.1:${port}: address in use`);
    } finally {
      busy.close();
    }
    await expect(claimPort('tsgi-no-such-host.invalid', 8080)).rejects.toThrow('cannot listen on tsgi-no-such-host.invalid:8080: unknown host');
  });

  it('hostPort brackets IPv6 addresses', () => {
    expect(hostPort('::1', 80)).toBe('[::1]:80');
    expect(hostPort('127.0.0.1', 80)).toBe('127.0.0.1:80');
  });
});

describe('Relay (a server log FIFO copied to one of our streams)', () => {
  const collect = (): { out: NodeJS.WriteStream; text: () => string } => {
    const chunks: Buffer[] = [];
    const out = { write: (d: Buffer) => chunks.push(Buffer.from(d)) } as unknown as NodeJS.WriteStream;
    return { out, text: () => Buffer.concat(chunks).toString('latin1') };
  };
  const writeTo = (path: string, text: string): void => {
    const fd = openSync(path, 'w');
    writeSync(fd, text);
    closeSync(fd);
  };
  const settle = (): Promise<void> => new Promise((r) => setTimeout(r, 100));

  it('with a line rewrite: whole lines rewritten, held until released, an unterminated last line shown at close', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'tsgi-relay-'));
    try {
      const { out, text } = collect();
      const held: string[] = [];
      const relay = new Relay(join(dir, 'log'), out, true, (t) => held.push(t), (l) => l.toUpperCase());
      writeTo(join(dir, 'log'), 'one\ntw');
      await settle();
      expect(text()).toBe('');
      expect(held.at(-1)).toBe('ONE\n');
      relay.release();
      expect(text()).toBe('ONE\n');
      writeTo(join(dir, 'log'), 'o\nthree');
      await settle();
      expect(text()).toBe('ONE\nTWO\n');
      relay.close();
      expect(text()).toBe('ONE\nTWO\nTHREE\n');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
