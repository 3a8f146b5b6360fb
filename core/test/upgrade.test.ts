// runUpgrade, runSocketHook, isWebSocketUpgrade and the handler shape's websocket members: what every host runs for an upgrade.
import { describe, expect, it } from 'vitest';
import { handlerProblem, isWebSocketUpgrade, runSocketHook, runUpgrade, type Context, type Handler, type Peer } from '@tsgi/core';

const ctx = (): Context => ({ server: 'node', ip: '127.0.0.1', user: undefined, id: 't', env: {}, waitUntil() {} });
const req = new Request('http://x/ws');
const logged: string[] = [];
const log = (m: string): void => void logged.push(m);
const calls: string[] = [];

const ws = { open() {} };

describe('runUpgrade', () => {
  it('runs authenticate, authorize, then upgrade, never fetch; undefined accepts and ctx.user is set', async () => {
    calls.length = 0;
    const h: Handler = {
      authenticate: () => (calls.push('authn'), { user: 'alice' }),
      authorize: (_r, c) => (calls.push('authz'), c.user === 'alice'),
      upgrade: (_r, c) => void calls.push(`upgrade ${c.user}`),
      fetch: () => (calls.push('fetch'), new Response('no')),
      websocket: ws,
    };
    const c = ctx();
    expect(await runUpgrade(h, req, c, log)).toBeUndefined();
    expect(calls).toEqual(['authn', 'authz', 'upgrade alice']);
    expect(c.user).toBe('alice');
  });
  it('accepts without any hooks but websocket', async () => {
    expect(await runUpgrade({ fetch: () => new Response(''), websocket: ws }, req, ctx(), log)).toBeUndefined();
  });
  it('an authenticate refusal is answered as it is (401), and upgrade does not run', async () => {
    calls.length = 0;
    const h: Handler = {
      authenticate: () => new Response('who?', { status: 401, headers: { 'www-authenticate': 'Basic' } }),
      upgrade: () => void calls.push('upgrade'),
      fetch: () => new Response('no'),
      websocket: ws,
    };
    const r = await runUpgrade(h, req, ctx(), log);
    expect(r!.status).toBe(401);
    expect(r!.headers.get('www-authenticate')).toBe('Basic');
    expect(calls).toEqual([]);
  });
  it('authorize false is the bare 403', async () => {
    const r = await runUpgrade({ authorize: () => false, fetch: () => new Response(''), websocket: ws }, req, ctx(), log);
    expect(r!.status).toBe(403);
  });
  it('upgrade refuses with its Response', async () => {
    const r = await runUpgrade({ upgrade: () => new Response('no ws here', { status: 404 }), fetch: () => new Response(''), websocket: ws }, req, ctx(), log);
    expect(r!.status).toBe(404);
    expect(await r!.text()).toBe('no ws here');
  });
  it('a throw (or a wrong return) in any of the three is the bare 500, logged, never rejecting', async () => {
    const bad: Handler[] = [
      { authenticate: () => Promise.reject(new Error('boom')), fetch: () => new Response(''), websocket: ws },
      { authorize: () => { throw new Error('boom'); }, fetch: () => new Response(''), websocket: ws },
      { upgrade: async () => { throw new Error('boom'); }, fetch: () => new Response(''), websocket: ws },
      { upgrade: () => 42 as unknown as undefined, fetch: () => new Response(''), websocket: ws },
    ];
    for (const h of bad) {
      logged.length = 0;
      const r = await runUpgrade(h, req, ctx(), log);
      expect(r!.status).toBe(500);
      expect(await r!.text()).toBe('Internal Server Error\n');
      expect(logged[0]).toMatch(/request t: authenticate\/authorize\/upgrade threw/);
    }
  });
});

describe('runSocketHook', () => {
  const peer = { id: 'p1' } as Peer;
  it('passes peer and argument; a missing hook is nothing', () => {
    const seen: unknown[] = [];
    runSocketHook({ message: (p, m) => void seen.push(p.id, m) }, 'message', peer, 'hi', log, () => seen.push('failed'));
    runSocketHook({}, 'open', peer, undefined, log, () => seen.push('failed'));
    expect(seen).toEqual(['p1', 'hi']);
  });
  it('a throw or rejection in open/message is logged, goes to error, and fails the socket', async () => {
    for (const message of [
      () => {
        throw new Error('sync');
      },
      () => Promise.reject(new Error('async')),
    ]) {
      logged.length = 0;
      const seen: unknown[] = [];
      runSocketHook({ message, error: (_p, e) => void seen.push((e as Error).message) }, 'message', peer, 'x', log, () => seen.push('failed'));
      await new Promise((r) => setImmediate(r));
      expect(seen).toEqual([expect.stringMatching(/sync|async/), 'failed']);
      expect(logged).toEqual(['request p1: websocket.message threw']);
    }
  });
  it('a throw in close or error is only logged', () => {
    logged.length = 0;
    const seen: unknown[] = [];
    const hooks = {
      close: () => {
        throw new Error('c');
      },
      error: () => void seen.push('error'),
    };
    runSocketHook(hooks, 'close', peer, { code: 1000, reason: '' }, log, () => seen.push('failed'));
    expect(seen).toEqual([]);
    expect(logged).toEqual(['request p1: websocket.close threw']);
  });
});

describe('isWebSocketUpgrade', () => {
  it('finds the websocket token, case-insensitive, in a list', () => {
    expect(isWebSocketUpgrade('websocket')).toBe(true);
    expect(isWebSocketUpgrade('WebSocket')).toBe(true);
    expect(isWebSocketUpgrade('h2c, websocket')).toBe(true);
    expect(isWebSocketUpgrade('h2c')).toBe(false);
    expect(isWebSocketUpgrade('websockets')).toBe(false);
    expect(isWebSocketUpgrade(undefined)).toBe(false);
    expect(isWebSocketUpgrade('')).toBe(false);
  });
});

describe('handlerProblem: websocket members', () => {
  const fetch = (): Response => new Response('');
  it('accepts hooks objects and an upgrade function', () => {
    expect(handlerProblem({ fetch, websocket: {} })).toBeNull();
    expect(handlerProblem({ fetch, websocket: { open() {}, message() {}, close() {}, error() {} }, upgrade() {} })).toBeNull();
  });
  it('names what is wrong', () => {
    expect(handlerProblem({ fetch, websocket: () => {} })).toMatch(/^websocket must be an object/);
    expect(handlerProblem({ fetch, websocket: null })).toMatch(/^websocket must be an object/);
    expect(handlerProblem({ fetch, websocket: { message: 'x' } })).toBe('websocket.message must be a function');
    expect(handlerProblem({ fetch, upgrade: true })).toBe('upgrade must be a function');
  });
});
