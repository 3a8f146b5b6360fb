import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { expectJSON, expectText, get, stillFine } from './shared.js';
import type { CaseContext } from '../client.js';

export const urlCases: ConformanceCase[] = [
  // ---- request URL -------------------------------------------------------
  {
    id: 'url.absolute',
    title: 'request.url is absolute with the scheme, host, path and query as sent',
    async run(t) {
      const body = await expectJSON<{ url: string; host: string; pathname: string; search: string }>(
        t,
        '/echo/url?x=1&y=two',
      );
      assert.equal(body.url, `${t.baseURL}/echo/url?x=1&y=two`);
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?x=1&y=two');
      assert.equal(body.host, t.host);
    },
  },
  {
    id: 'url.repeated-query',
    title: 'repeated query keys all reach searchParams.getAll, percent-decoded',
    async run(t) {
      const body = await expectJSON<{ a: string[]; b: string }>(t, '/echo/url?a=1&a=2&b=x%20y&a=%C3%A9%26');
      assert.deepEqual(body.a, ['1', '2', '\u00e9&']);
      assert.equal(body.b, 'x y');
    },
  },
  {
    id: 'url.percent-path',
    title: 'a percent-encoded path reaches the handler still encoded',
    async run(t) {
      const body = await expectJSON<{ pathname: string; url: string }>(t, '/echo/url/caf%C3%A9/a%20b');
      assert.equal(body.pathname, '/echo/url/caf%C3%A9/a%20b');
    },
  },
  {
    id: 'url.encoded-slash',
    title: 'an encoded slash (%2F) is neither decoded nor refused',
    async run(t) {
      const body = await expectJSON<{ pathname: string }>(t, '/echo/url/a%2Fb');
      assert.equal(body.pathname, '/echo/url/a%2Fb');
    },
  },
  {
    id: 'url.dot-segments',
    title: 'a dot-segment path on the wire is seen normalized (/x/../echo/url)',
    async run(t) {
      const r = await t.exchange(get(t, '/x/../echo/url?q=1', 'Connection: close\r\n'));
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { pathname: string; search: string };
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?q=1');
    },
  },

  {
    id: 'url.absolute-form',
    title: 'an absolute-form request target (GET http://host/path) is understood',
    async run(t) {
      const body = await echoTarget(t, `http://${t.host}/echo/url?form=absolute`);
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?form=absolute');
      assert.equal(body.url, `${t.baseURL}/echo/url?form=absolute`);
    },
  },

  // ---- request URL from the request line (RFC 9112 3.2) -----------------
  {
    id: 'url.userinfo-refused',
    title: 'a request target with userinfo (GET http://evil@host/...) gets 400 before the handler runs',
    async run(t) {
      const key = t.key('userinfo');
      await refused(t, `GET http://evil@${t.host}/signal/check?key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`, key);
      const keyPw = t.key('userinfo');
      await refused(t, `GET http://user:pw@${t.host}/signal/check?key=${keyPw} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`, keyPw);
    },
  },
  {
    id: 'url.absolute-form-scheme',
    title: 'an https:// absolute-form target over plain HTTP: the handler sees http:// (the scheme is the connection\'s)',
    async run(t) {
      const body = await echoTarget(t, `https://${t.host}/echo/url?form=https`);
      assert.equal(body.url, `http://${t.host}/echo/url?form=https`);
      assert.equal(body.pathname, '/echo/url');
    },
  },
  {
    id: 'url.absolute-form-authority',
    title: "an absolute-form target's authority wins over the Host header, in request.url and in the Host header the handler sees",
    async run(t) {
      const r = await t.exchange(
        `GET http://other.example:8123/echo/url?a=1 HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { url: string; host: string };
      assert.equal(body.url, 'http://other.example:8123/echo/url?a=1');
      // RFC 9112 3.2.2: the Host header is ignored in favour of the target's authority; the handler's
      // headers agree with its URL (Apache itself rewrites Host so; every host does the same).
      assert.equal(body.host, 'other.example:8123', 'the Host header the handler sees');
    },
  },
  {
    id: 'url.duplicate-host',
    title: 'two Host header lines get 400 before the handler runs',
    async run(t) {
      const key = t.key('dup-host');
      await refused(
        t,
        `GET /signal/check?key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nHost: other.example\r\nConnection: close\r\n\r\n`,
        key,
      );
    },
  },
  {
    id: 'url.malformed-host',
    title: 'a malformed Host (a/x@y, userinfo, a bad port, stray characters) gets 400 before the handler runs',
    async run(t) {
      const key = t.key('bad-host');
      await refused(t, `GET /signal/check?key=${key} HTTP/1.1\r\nHost: a/x@y\r\nConnection: close\r\n\r\n`, key);
      for (const host of [`user@${t.host}`, 'a.example:99999', 'a.example:1:2', '[::1', 'a%20b.example', 'a!b.example']) {
        const r = await t.exchange(`GET /echo/url HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        assert.equal(r.status, 400, `Host: ${host} got ${r.status} ${r.body.toString().slice(0, 200)}`);
      }
    },
  },
];

/** GET `target` (as the request line has it) with the server's own Host; the fixture's /echo/url answer. */
async function echoTarget(t: CaseContext, target: string): Promise<{ url: string; pathname: string; search: string }> {
  const r = await t.exchange(`GET ${target} HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
  assert.equal(r.status, 200, `GET ${target}: status (body ${JSON.stringify(r.body.toString().slice(0, 200))})`);
  return JSON.parse(r.body.toString()) as { url: string; pathname: string; search: string };
}

/**
 * The request gets 400, the fixture's /signal/check never ran for `key` (its
 * record stays unknown), and the server answers the next request.
 */
async function refused(t: CaseContext, request: string, key: string): Promise<void> {
  const r = await t.exchange(request);
  assert.equal(r.status, 400, `${request.split('\r\n')[0]}: status (body ${JSON.stringify(r.body.toString().slice(0, 200))})`);
  await expectText(t, `/signal/state?key=${key}`, 200, 'unknown');
  await stillFine(t);
}
