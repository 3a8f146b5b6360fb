import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { NJS_NO_SHARED_STATE, SECRET, expectJSON, expectText, get, stillFine } from './shared.js';

export const contextCases: ConformanceCase[] = [
  // ---- ctx ---------------------------------------------------------------
  {
    id: 'ctx.fields',
    title: 'ctx: server, a loopback ip, a unique string id, user undefined, waitUntil, env',
    async run(t) {
      const a = await expectJSON<Record<string, unknown>>(t, '/ctx');
      const b = await expectJSON<Record<string, unknown>>(t, '/ctx');
      assert.equal(a.server, t.target.server);
      assert.ok(['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(a.ip as string), `ctx.ip is ${String(a.ip)}`);
      assert.equal(a.idType, 'string');
      assert.ok((a.id as string).length > 0);
      assert.notEqual(a.id, b.id, 'ctx.id must differ between requests');
      assert.equal(a.user, '(undefined)');
      assert.equal(a.waitUntilType, 'function');
      assert.equal(a.envIsObject, true);
    },
  },

  {
    id: 'ctx.init',
    title: 'init ran before the first request, with the server kind and env',
    async run(t) {
      const body = await expectJSON<{ count: number; server: string; envIsObject: boolean }>(t, '/init');
      // At least once: a process may host the same handler module under several listeners.
      assert.ok(body.count >= 1, `init ran ${body.count} times`);
      assert.equal(body.server, t.target.server);
      assert.equal(body.envIsObject, true);
    },
  },
  {
    id: 'ctx.ip-not-spoofable',
    title: 'ctx.ip ignores X-Forwarded-For and X-Real-IP sent by the client',
    async run(t) {
      const r = await t.exchange(
        get(t, '/ctx', 'X-Forwarded-For: 203.0.113.7\r\nX-Real-IP: 203.0.113.8\r\nForwarded: for=203.0.113.9\r\nConnection: close\r\n'),
      );
      assert.equal(r.status, 200);
      const ip = JSON.parse(r.body.toString()).ip as string;
      assert.ok(['127.0.0.1', '::1', '::ffff:127.0.0.1'].includes(ip), `ctx.ip is ${ip}`);
    },
  },

  // ---- waitUntil ---------------------------------------------------------
  {
    id: 'wait.after-response',
    title: 'waitUntil work keeps running after the response was sent, and finishes',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('wait');
      // The response comes while the waitUntil promise is still pending.
      await expectText(t, `/wait/start?key=${key}`, 200, 'started');
      await expectText(t, `/wait/result?key=${key}`, 200, 'pending');
      await expectText(t, `/wait/release?key=${key}`, 200, 'released');
      const r = await t.poll(
        () => t.fetch(`/wait/result?key=${key}`).then((r) => r.text()),
        (v) => v !== 'pending',
      );
      assert.equal(r, 'done');
    },
  },
  {
    id: 'wait.bad-values',
    title: 'waitUntil never throws: a rejection, a number and null are accepted, the response is normal',
    async run(t) {
      const res = await expectText(t, '/wait/bad', 200, 'still fine');
      assert.ok(![...res.headers.values()].some((v) => v.includes(SECRET)));
      await stillFine(t);
    },
  },
];
