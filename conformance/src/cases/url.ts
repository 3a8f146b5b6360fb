import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { expectJSON, get } from './shared.js';

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
      const r = await t.exchange(
        `GET http://${t.host}/echo/url?form=absolute HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { pathname: string; search: string; url: string };
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?form=absolute');
      assert.equal(body.url, `${t.baseURL}/echo/url?form=absolute`);
    },
  },
  {
    id: 'url.userinfo-refused',
    title: 'userinfo in an absolute-form target (GET http://user:pw@host/) is refused with 400 before the handler',
    async run(t) {
      const r = await t.exchange(
        `GET http://user:pw@${t.host}/echo/url HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 400, r.body.toString());
    },
  },
  {
    id: 'url.absolute-form-scheme',
    title: "the scheme of request.url is the connection's, not an absolute-form target's (https:// on plain HTTP)",
    async run(t) {
      const r = await t.exchange(`GET https://${t.host}/echo/url?s=1 HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`);
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(JSON.parse(r.body.toString()).url, `${t.baseURL}/echo/url?s=1`);
    },
  },
  {
    id: 'url.absolute-form-authority',
    title: "an absolute-form target's authority wins over the Host header",
    async run(t) {
      const r = await t.exchange(
        `GET http://other.example:8123/echo/url?a=1 HTTP/1.1\r\nHost: ${t.host}\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { url: string; host: string };
      assert.equal(body.url, 'http://other.example:8123/echo/url?a=1');
      assert.equal(body.host, t.host, 'the Host header itself is unchanged');
    },
  },
  {
    id: 'url.duplicate-host',
    title: 'two Host headers are refused with 400',
    async run(t) {
      const r = await t.exchange(
        `GET /echo/url HTTP/1.1\r\nHost: ${t.host}\r\nHost: other.example\r\nConnection: close\r\n\r\n`,
      );
      assert.equal(r.status, 400, r.body.toString());
    },
  },
  {
    id: 'url.malformed-host',
    title: 'a Host with userinfo, a bad port or stray characters is refused with 400 before the handler',
    async run(t) {
      for (const host of [`user@${t.host}`, 'a.example:99999', 'a.example:1:2', '[::1', 'a%20b.example', 'a!b.example']) {
        const r = await t.exchange(`GET /echo/url HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
        assert.equal(r.status, 400, `Host: ${host} got ${r.status} ${r.body.toString().slice(0, 200)}`);
      }
    },
  },
];
