import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { NJS_NO_SHARED_STATE, SECRET, expectBare500, expectJSON, expectText, stillFine } from './shared.js';

export const hooksCases: ConformanceCase[] = [
  // ---- phase hooks: authenticate -----------------------------------------
  {
    id: 'hook.authn-accept',
    title: 'authenticate returning { user } continues, and fetch sees ctx.user',
    async run(t) {
      const body = await expectJSON(t, '/auth/accept', { headers: { authorization: 'Bearer good' } });
      assert.deepEqual(body, { path: '/auth/accept', user: 'alice' });
    },
  },
  {
    id: 'hook.authn-reject',
    title: 'authenticate returning a Response rejects with it (401 + WWW-Authenticate); fetch does not run',
    async run(t) {
      const res = await expectText(t, '/auth/accept', 401, 'who are you?\n');
      assert.equal(res.headers.get('www-authenticate'), 'Bearer realm="tsgi"');
      const bad = await t.fetch('/auth/accept', { headers: { authorization: 'Bearer bad' } });
      await bad.text();
      assert.equal(bad.status, 401);
    },
  },
  {
    id: 'hook.authn-no-opinion',
    title: 'authenticate returning undefined or null continues with ctx.user undefined',
    async run(t) {
      assert.deepEqual(await expectJSON(t, '/auth/none'), { path: '/auth/none', user: '(undefined)' });
      assert.deepEqual(await expectJSON(t, '/auth/null'), { path: '/auth/null', user: '(undefined)' });
    },
  },
  {
    id: 'hook.authn-throw',
    title: 'authenticate throwing (sync or async) gives a bare 500; the next request is fine',
    async run(t) {
      await expectBare500(t, '/auth/throw');
      await expectBare500(t, '/auth/throw-async');
      await stillFine(t);
    },
  },
  // ---- phase hooks: authorize --------------------------------------------
  {
    id: 'hook.authz-allow',
    title: 'authorize returning true or undefined lets the request through',
    async run(t) {
      assert.deepEqual(await expectJSON(t, '/authz/true'), { path: '/authz/true', user: '(undefined)' });
      assert.deepEqual(await expectJSON(t, '/authz/undefined'), { path: '/authz/undefined', user: '(undefined)' });
    },
  },
  {
    id: 'hook.authz-false',
    title: 'authorize returning false (sync or async) gives 403',
    async run(t) {
      for (const path of ['/authz/false', '/authz/async-false']) {
        const res = await t.fetch(path);
        const body = await res.text();
        assert.equal(res.status, 403, path);
        assert.ok(!body.includes('"path"'), `${path}: fetch must not have run`);
      }
    },
  },
  {
    id: 'hook.authz-response',
    title: 'authorize returning a Response rejects with it (418 body and headers, a 302)',
    async run(t) {
      const res = await expectText(t, '/authz/response', 418, 'teapot\n');
      assert.equal(res.headers.get('x-authz'), 'teapot');
      const redirect = await t.fetch('/authz/redirect');
      await redirect.arrayBuffer();
      assert.equal(redirect.status, 302);
      assert.equal(redirect.headers.get('location'), '/text');
    },
  },
  {
    id: 'hook.authz-throw',
    title: 'authorize throwing gives a bare 500; the next request is fine',
    async run(t) {
      await expectBare500(t, '/authz/throw');
      await stillFine(t);
    },
  },
  {
    id: 'hook.authz-sees-user',
    title: 'authorize runs after authenticate and sees ctx.user',
    async run(t) {
      const body = await expectJSON(t, '/auth/authz-user', { headers: { authorization: 'Bearer good' } });
      assert.deepEqual(body, { path: '/auth/authz-user', user: 'alice' });
    },
  },
  {
    id: 'hook.invalid-returns',
    title: 'authenticate or authorize returning a value outside the contract gives a bare 500',
    async run(t) {
      await expectBare500(t, '/auth/invalid');
      await expectBare500(t, '/authz/invalid');
      await stillFine(t);
    },
  },
  // ---- phase hooks: log --------------------------------------------------
  {
    id: 'hook.log-entry',
    title: 'log receives { method, url, status, bytes, durationMs, user } after the response',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const tag = t.key('log');
      await expectText(t, `/log/probe?logtag=${tag}`, 200, 'logged body');
      const res = await t.poll(
        () => t.fetch(`/log/last?tag=${tag}`).then(async (r) => ({ status: r.status, body: await r.text() })),
        (r) => r.status === 200,
      );
      assert.equal(res.status, 200, 'no log entry was recorded for the request');
      const entry = JSON.parse(res.body) as Record<string, unknown>;
      assert.equal(entry.method, 'GET');
      assert.equal(entry.url, `${t.baseURL}/log/probe?logtag=${tag}`);
      assert.equal(entry.status, 200);
      assert.equal(entry.bytes, 'logged body'.length);
      assert.equal(typeof entry.durationMs, 'number');
      assert.ok((entry.durationMs as number) >= 0);
      assert.equal(entry.user, '(undefined)');
    },
  },
  {
    id: 'hook.log-outcomes',
    title: 'log sees the rejecting status (401), the accepted user, a POST, a 500 from a throw, and 0 bytes for 204 and HEAD',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const last = async (tag: string) => {
        const r = await t.poll(
          () => t.fetch(`/log/last?tag=${tag}`).then(async (r) => ({ status: r.status, body: await r.text() })),
          (r) => r.status === 200,
        );
        assert.equal(r.status, 200, `no log entry for ${tag}`);
        return JSON.parse(r.body) as Record<string, unknown>;
      };
      const rejected = t.key('log');
      await (await t.fetch(`/auth/accept?logtag=${rejected}`)).text();
      const e1 = await last(rejected);
      assert.equal(e1.status, 401);
      assert.equal(e1.user, '(undefined)');
      assert.equal(e1.bytes, 'who are you?\n'.length);

      const accepted = t.key('log');
      await (await t.fetch(`/auth/accept?logtag=${accepted}`, { headers: { authorization: 'Bearer good' } })).text();
      const e2 = await last(accepted);
      assert.equal(e2.status, 200);
      assert.equal(e2.user, 'alice');

      const post = t.key('log');
      await (await t.fetch(`/echo/text?logtag=${post}`, { method: 'POST', body: 'abc' })).text();
      const e3 = await last(post);
      assert.equal(e3.method, 'POST');

      const failed = t.key('log');
      const f = await t.fetch(`/throw/sync?logtag=${failed}`);
      await f.arrayBuffer();
      assert.equal(f.status, 500);
      const e500 = await last(failed);
      assert.equal(e500.status, 500);

      const nobody = t.key('log');
      const n = await t.fetch(`/status/204?logtag=${nobody}`);
      await n.arrayBuffer();
      assert.equal(n.status, 204);
      const e204 = await last(nobody);
      assert.equal(e204.status, 204);
      assert.equal(e204.bytes, 0);

      const head = t.key('log');
      const h = await t.exchange(`HEAD /log/probe?logtag=${head} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`, {
        method: 'HEAD',
      });
      assert.equal(h.status, 200);
      const e4 = await last(head);
      assert.equal(e4.method, 'HEAD');
      assert.equal(e4.bytes, 0);
    },
  },
  {
    id: 'hook.log-throws',
    title: 'a log hook that throws changes nothing for the client; the next request is fine',
    async run(t) {
      const tag = t.key('log');
      const res = await expectText(t, `/log/throws?logtag=${tag}`, 200, 'logged body');
      assert.ok(![...res.headers.values()].some((v) => v.includes(SECRET)));
      await stillFine(t);
    },
  },
];
