// runPhase and accessReply: the one pipeline every host runs, whole or in part.
import { describe, expect, it } from 'vitest';
import { accessReply, runPhase, runPipelineThen, type Context, type Handler } from '@tsgi/core';

const ctx = (): Context => ({ server: 'node', ip: '127.0.0.1', user: undefined, id: 't', env: {}, waitUntil() {} });
const req = new Request('http://x/');
const logged: string[] = [];
const log = (m: string): void => void logged.push(m);

const calls: string[] = [];
const h: Handler = {
  authenticate: () => (calls.push('authn'), { user: 'alice' }),
  authorize: (_r, c) => (calls.push('authz'), c.user === 'alice'),
  fetch: () => (calls.push('fetch'), new Response('ok')),
};

describe('runPhase', () => {
  it('full runs authenticate, authorize, fetch in order', async () => {
    calls.length = 0;
    const r = await runPhase(h, 'full', req, ctx(), log);
    expect(await r!.text()).toBe('ok');
    expect(calls).toEqual(['authn', 'authz', 'fetch']);
  });
  it('full skips what the server already ran', async () => {
    calls.length = 0;
    const c = ctx();
    c.user = 'alice';
    await runPhase(h, 'full', req, c, log, { authenticate: true });
    expect(calls).toEqual(['authz', 'fetch']);
  });
  it('access runs both hooks and no fetch; undefined allows, ctx.user is set', async () => {
    calls.length = 0;
    const c = ctx();
    expect(await runPhase(h, 'access', req, c, log)).toBeUndefined();
    expect(calls).toEqual(['authn', 'authz']);
    expect(c.user).toBe('alice');
  });
  it('authenticate and authorize run alone', async () => {
    calls.length = 0;
    await runPhase(h, 'authenticate', req, ctx(), log);
    expect(calls).toEqual(['authn']);
    calls.length = 0;
    const refused = await runPhase(h, 'authorize', req, ctx(), log);
    expect(calls).toEqual(['authz']);
    expect(refused!.status).toBe(403);
  });
  it('a throw in a hook is the bare 500, logged, in every phase', async () => {
    const bad: Handler = { authenticate: () => Promise.reject(new Error('boom')), fetch: () => new Response('no') };
    for (const phase of ['full', 'access', 'authenticate'] as const) {
      logged.length = 0;
      const r = await runPhase(bad, phase, req, ctx(), log);
      expect(r!.status).toBe(500);
      expect(await r!.text()).toBe('Internal Server Error\n');
      expect(logged[0]).toMatch(/authenticate/);
    }
  });
});

describe('accessReply', () => {
  it('maps outcomes onto what auth_request understands', () => {
    expect(accessReply(undefined, 'alice')).toEqual({ status: 204, headers: ['x-tsgi-user', 'alice'] });
    expect(accessReply(undefined, undefined)).toEqual({ status: 204, headers: [] });
    const challenge = new Response(null, { status: 401, headers: { 'www-authenticate': 'Bearer' } });
    expect(accessReply(challenge, undefined)).toEqual({ status: 401, headers: ['www-authenticate', 'Bearer'] });
    expect(accessReply(new Response(null, { status: 418 }), undefined)).toEqual({ status: 403, headers: ['x-tsgi-status', '418'] });
    expect(accessReply(new Response(null, { status: 500 }), undefined)).toEqual({ status: 500, headers: [] });
  });
});

describe('runPipelineThen', () => {
  /** Runs it; resolves with what `then` got and how often, and whether it was called before runPipelineThen returned. */
  const run = async (hd: Handler): Promise<{ status: number; text: string; calls: number; sync: boolean }> => {
    const got: Response[] = [];
    runPipelineThen(hd, req, ctx(), log, (r) => void got.push(r));
    const sync = got.length > 0;
    await new Promise((r) => setTimeout(r, 5));
    return { status: got[0]!.status, text: await got[0]!.text(), calls: got.length, sync };
  };
  it('a synchronous fetch: its Response, once, before it returns', async () => {
    expect(await run({ fetch: () => new Response('s') })).toEqual({ status: 200, text: 's', calls: 1, sync: true });
  });
  it('an async fetch: its Response, once', async () => {
    expect(await run({ fetch: async () => new Response('a', { status: 201 }) })).toEqual({ status: 201, text: 'a', calls: 1, sync: false });
  });
  it('a throw, a rejection or a non-Response: the bare 500, logged, once', async () => {
    const bad: Handler[] = [
      { fetch: () => { throw new Error('sync boom'); } },
      { fetch: () => Promise.reject(new Error('async boom')) },
      { fetch: () => 'nope' as unknown as Response },
      { fetch: async () => null as unknown as Response },
    ];
    for (const hd of bad) {
      logged.length = 0;
      const r = await run(hd);
      expect([r.status, r.text, r.calls]).toEqual([500, 'Internal Server Error\n', 1]);
      expect(logged).toHaveLength(1);
    }
  });
  it('with access hooks: the whole pipeline, as runPipeline', async () => {
    calls.length = 0;
    expect(await run(h)).toMatchObject({ status: 200, text: 'ok', calls: 1 });
    expect(calls).toEqual(['authn', 'authz', 'fetch']);
    const refused = await run({ ...h, authorize: () => false });
    expect([refused.status, refused.calls]).toEqual([403, 1]);
  });
});
