/**
 * Handlers for the pipeline differential test (runtime-pipeline.test.ts): the
 * same cases run through core's pipeline in Node and through the njs
 * runtime's port inside real njs 0.7.9, and their outcomes must be equal.
 * Free `Request`/`Response` are Node's globals in Node and the runtime's in
 * the njs bundle. Written for njs 0.7.9 after lowering: no for-of over
 * non-arrays, no spread of iterables, never `f(await x)`.
 */

type Phase = 'full' | 'access' | 'authenticate' | 'authorize' | 'fetch';

/** The pipeline functions one side provides (core's, or the port's). */
export interface PipelineImpl {
  runPhase(h: any, phase: string, req: any, ctx: any, log: (m: string, e?: unknown) => void): any;
  /** core runFetch; the port's fetchThen is wrapped to return the same. */
  runFetch(h: any, req: any, ctx: any, log: (m: string, e?: unknown) => void): any;
  accessReply(refused: any, user: string | undefined): { status: number; headers: string[] };
  runLog(h: any, entry: any, ctx: any, log: (m: string, e?: unknown) => void): void;
}

interface Case {
  phase: Phase;
  handler: any;
  /** Run the log hook too, with this entry. */
  log?: boolean;
}

const ok = function (): any {
  return new Response('ok:' + 'fetch', { headers: { 'x-from': 'fetch' } });
};
const whoami = function (_req: any, ctx: any): any {
  return new Response('user=' + String(ctx.user));
};
const challenge = function (): any {
  return new Response('no', { status: 401, headers: { 'www-authenticate': 'Bearer realm="t"', 'x-from': 'authn' } });
};
const boom = function (): any {
  throw new Error('boom');
};
const rejects = function (): any {
  return Promise.reject(new Error('async boom'));
};

const cases: Record<string, Case> = {
  'fetch sync Response': { phase: 'fetch', handler: { fetch: ok } },
  'fetch async Response': { phase: 'fetch', handler: { fetch: async () => ok() } },
  'fetch sync throw': { phase: 'fetch', handler: { fetch: boom } },
  'fetch async rejection': { phase: 'fetch', handler: { fetch: rejects } },
  'fetch returns null': { phase: 'fetch', handler: { fetch: () => null } },
  'fetch returns a string': { phase: 'fetch', handler: { fetch: () => 'text' } },
  'fetch returns a plain object': { phase: 'fetch', handler: { fetch: () => ({ status: 200 }) } },
  'fetch resolves to undefined': { phase: 'fetch', handler: { fetch: async () => undefined } },
  'fetch returns a thenable': { phase: 'fetch', handler: { fetch: () => ({ then: (res: (v: unknown) => void) => res(ok()) }) } },
  'full: no hooks, sync': { phase: 'full', handler: { fetch: ok } },
  'full: no hooks, async throw': { phase: 'full', handler: { fetch: rejects } },
  'full: authenticate {user}': { phase: 'full', handler: { authenticate: () => ({ user: 'alice' }), fetch: whoami } },
  'full: async authenticate {user}': { phase: 'full', handler: { authenticate: async () => ({ user: 'bob' }), fetch: whoami } },
  'full: authenticate Response (401)': { phase: 'full', handler: { authenticate: challenge, fetch: ok } },
  'full: authenticate null': { phase: 'full', handler: { authenticate: () => null, fetch: whoami } },
  'full: authenticate undefined': { phase: 'full', handler: { authenticate: () => undefined, fetch: whoami } },
  'full: authenticate throws': { phase: 'full', handler: { authenticate: boom, fetch: ok } },
  'full: authenticate rejects': { phase: 'full', handler: { authenticate: rejects, fetch: ok } },
  'full: authenticate invalid (user not a string)': { phase: 'full', handler: { authenticate: () => ({ user: 5 }), fetch: ok } },
  'full: authenticate invalid (a string)': { phase: 'full', handler: { authenticate: () => 'alice', fetch: ok } },
  'full: authorize true': { phase: 'full', handler: { authorize: () => true, fetch: ok } },
  'full: authorize false': { phase: 'full', handler: { authorize: () => false, fetch: ok } },
  'full: authorize null': { phase: 'full', handler: { authorize: () => null, fetch: ok } },
  'full: authorize Response (418)': { phase: 'full', handler: { authorize: () => new Response('tea', { status: 418 }), fetch: ok } },
  'full: authorize throws': { phase: 'full', handler: { authorize: boom, fetch: ok } },
  'full: authorize invalid (a number)': { phase: 'full', handler: { authorize: () => 5, fetch: ok } },
  'full: authorize sees the user': {
    phase: 'full',
    handler: { authenticate: () => ({ user: 'carol' }), authorize: (_r: any, c: any) => c.user === 'carol', fetch: whoami },
  },
  'full: authorize refuses after authenticate': {
    phase: 'full',
    handler: { authenticate: () => ({ user: 'dave' }), authorize: async () => false, fetch: ok },
  },
  'full: fetch not a Response after the hooks': { phase: 'full', handler: { authenticate: () => ({ user: 'eve' }), fetch: () => 42 } },
  'access: allowed with a user': { phase: 'access', handler: { authenticate: () => ({ user: 'alice' }), authorize: () => true, fetch: ok } },
  'access: allowed, no user': { phase: 'access', handler: { authenticate: () => null, fetch: ok } },
  'access: 401 challenge': { phase: 'access', handler: { authenticate: challenge, fetch: ok } },
  'access: authorize false': { phase: 'access', handler: { authorize: () => false, fetch: ok } },
  'access: other status (418)': { phase: 'access', handler: { authorize: () => new Response('tea', { status: 418 }), fetch: ok } },
  'access: a refusal with 500': { phase: 'access', handler: { authenticate: () => new Response('down', { status: 500 }), fetch: ok } },
  'access: authenticate throws': { phase: 'access', handler: { authenticate: boom, fetch: ok } },
  'access: authorize invalid': { phase: 'access', handler: { authorize: () => 'yes', fetch: ok } },
  'access: no hooks': { phase: 'access', handler: { fetch: ok } },
  'authenticate alone': { phase: 'authenticate', handler: { authenticate: () => ({ user: 'frank' }), authorize: () => false, fetch: ok } },
  'authorize alone refuses': { phase: 'authorize', handler: { authenticate: boom, authorize: () => false, fetch: ok } },
  'authorize alone throws': { phase: 'authorize', handler: { authorize: rejects, fetch: ok } },
  'log runs with the entry': { phase: 'fetch', log: true, handler: { fetch: ok, log: (e: any, c: any) => void (c.seen = e.method + ' ' + e.status) } },
  'log throws': { phase: 'fetch', log: true, handler: { fetch: ok, log: boom } },
  'log rejects': { phase: 'fetch', log: true, handler: { fetch: ok, log: rejects } },
  'no log hook': { phase: 'fetch', log: true, handler: { fetch: ok } },
};

export const caseNames = Object.keys(cases);

function describeResponse(res: any): Promise<unknown> {
  if (res === undefined) return Promise.resolve('(undefined)');
  const headers: string[] = [];
  res.headers.forEach(function (v: string, k: string) {
    headers.push(k + ': ' + v);
  });
  return res.text().then(function (body: string) {
    return { status: res.status, headers: headers, body: body, isResponse: res instanceof Response };
  });
}

/** Runs one case with `impl`; resolves to everything observable about its outcome. */
export function runCase(impl: PipelineImpl, name: string): Promise<unknown> {
  const c = cases[name];
  const logged: string[] = [];
  const log = function (m: string, e?: unknown): void {
    logged.push(m + (e === undefined ? '' : ' | ' + (e instanceof Error ? e.name + ': ' + e.message : String(e))));
  };
  const ctx: any = { server: 'nginx', ip: '127.0.0.1', id: 'T', user: undefined, env: {}, waitUntil: function () {} };
  const req = new Request('http://h.example/path?q=1');
  let out: any;
  if (c.phase === 'fetch') out = impl.runFetch(c.handler, req, ctx, log);
  else out = impl.runPhase(c.handler, c.phase, req, ctx, log);
  // Whether the outcome was there at once (core stays synchronous when the handler is).
  const isThen = out !== null && typeof out === 'object' && typeof out.then === 'function';
  const sync = !isThen;
  return Promise.resolve(out).then(function (res: any) {
    const reply = c.phase === 'access' ? impl.accessReply(res, ctx.user) : null;
    if (c.log) impl.runLog(c.handler, { method: 'GET', url: req.url, status: res ? res.status : 0, bytes: 2, durationMs: 1, user: ctx.user }, ctx, log);
    return describeResponse(res).then(function (response) {
      // A rejected log promise is logged a few ticks later.
      return new Promise(function (done) {
        setTimeout(done, 5);
      }).then(function () {
        return { sync: sync, response: response, reply: reply, user: ctx.user === undefined ? '(undefined)' : ctx.user, seen: ctx.seen, logged: logged };
      });
    });
  });
}
