import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { NJS_NO_REASON_PHRASE, adler32, enc, expectText, expectWire500, get, stillFine } from './shared.js';

export const responseCases: ConformanceCase[] = [
  // ---- response headers --------------------------------------------------
  {
    id: 'hdr.set-cookie',
    title: 'two Set-Cookie headers (Headers.append) stay two separate header lines',
    async run(t) {
      const r = await t.exchange(get(t, '/cookies', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.deepEqual(r.all('set-cookie'), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    },
  },
  {
    id: 'hdr.set-cookie-fast',
    title: 'two Set-Cookie headers from the fast Response array init stay separate',
    async run(t) {
      const res = await t.fetch('/cookies?fast=1');
      assert.equal(await res.text(), 'cookies');
      assert.deepEqual(res.headers.getSetCookie(), ['a=1; Path=/', 'b=2; Path=/; HttpOnly']);
    },
  },
  {
    id: 'hdr.late-mutation',
    title: 'headers set on response.headers after construction reach the wire',
    async run(t) {
      const res = await expectText(t, '/headers/late', 200, 'late');
      assert.equal(res.headers.get('x-late'), 'yes');
    },
  },

  {
    id: 'hdr.large-head',
    title: 'a response head of ~15 KB (15 headers of 1000 bytes) arrives whole',
    async run(t) {
      // Raw client: fetch's own 16 KiB head limit is not what is tested here.
      const r = await t.exchange(get(t, '/headers/large?n=15', 'Connection: close\r\n'));
      assert.equal(r.status, 200, r.body.toString().slice(0, 200));
      let joined = '';
      for (let i = 0; i < 15; i++) {
        const v = r.get(`x-large-${i}`);
        assert.equal(v?.length, 1000, `x-large-${i}`);
        joined += v;
      }
      assert.deepEqual(JSON.parse(r.body.toString()), { n: 15, adler32: adler32(enc.encode(joined)) });
    },
  },

  // ---- HEAD --------------------------------------------------------------
  {
    id: 'head.no-body',
    title: 'HEAD gives the GET status and headers and no body bytes (next request on the connection is clean)',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(`HEAD /text HTTP/1.1\r\nHost: ${t.host}\r\n\r\n` + get(t, '/echo/url?after=head'));
        const head = await c.readResponse({ method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.match(head.get('content-type') ?? '', /^text\/plain/);
        const cl = head.get('content-length');
        if (cl !== null) assert.equal(cl, '12');
        const next = await c.readResponse();
        assert.equal(next.status, 200, 'the response after HEAD (body bytes after a HEAD would corrupt it)');
        assert.equal(JSON.parse(next.body.toString()).search, '?after=head');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'head.endless-stream',
    title: 'HEAD on an endless stream answers and the connection stays usable',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(`HEAD /stream/endless HTTP/1.1\r\nHost: ${t.host}\r\n\r\n`);
        const head = await c.readResponse({ method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.match(head.get('content-type') ?? '', /text\/event-stream/);
        // If the server pumped the endless body, this response would never come.
        await c.write(get(t, '/text'));
        const next = await c.readResponse({ timeoutMs: 10_000 });
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },

  // ---- statuses and redirects --------------------------------------------
  {
    id: 'status.204',
    title: '204 goes out with no body, and the next pipelined response is intact',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/status/204') + get(t, '/text'));
        const r = await c.readResponse();
        assert.equal(r.status, 204);
        assert.equal(r.get('x-status'), '204');
        assert.equal(r.get('transfer-encoding'), null);
        const next = await c.readResponse();
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'status.304',
    title: '304 goes out with no body and keeps its ETag; the next pipelined response is intact',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/status/304') + get(t, '/text'));
        const r = await c.readResponse();
        assert.equal(r.status, 304);
        assert.equal(r.get('etag'), '"v1"');
        const next = await c.readResponse();
        assert.equal(next.status, 200);
        assert.equal(next.body.toString(), 'Hello, tsgi!');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'status.201',
    title: 'a non-200 status with a body and a Location header',
    async run(t) {
      const res = await expectText(t, '/status/201', 201, 'created');
      assert.equal(res.headers.get('location'), '/text');
    },
  },
  {
    id: 'redirect.302',
    title: '302 with a relative Location is passed through unchanged',
    async run(t) {
      const res = await t.fetch('/redirect/302');
      await res.arrayBuffer();
      assert.equal(res.status, 302);
      assert.equal(res.headers.get('location'), '/text');
    },
  },
  {
    id: 'redirect.follow',
    title: 'Response.redirect (301, absolute) is followed to the target',
    async run(t) {
      const res = await t.fetch('/redirect/absolute', { redirect: 'follow' });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'Hello, tsgi!');
      assert.equal(res.url, `${t.baseURL}/text?from=redirect`);
    },
  },
  {
    id: 'redirect.303-post',
    title: 'a 303 after a POST is followed with a GET',
    async run(t) {
      const res = await t.fetch('/redirect/303', { method: 'POST', body: 'x', redirect: 'follow' });
      assert.equal(res.status, 200);
      assert.equal(await res.text(), 'GET');
    },
  },

  // ---- reason phrase -------------------------------------------------------
  {
    id: 'response.status-text',
    title: "a Response's statusText is the reason phrase on the wire (fast and native); an empty one gives the standard phrase",
    optOut: { 'nginx:embedded': NJS_NO_REASON_PHRASE },
    async run(t) {
      for (const [path, line, body] of [
        ['/status-text/native', 'HTTP/1.1 202 Custom Reason', 'native reason'],
        ['/status-text/fast', 'HTTP/1.1 200 Custom Reason', 'fast reason'],
        ['/status-text/empty', 'HTTP/1.1 200 OK', 'no reason'],
      ] as const) {
        const r = await t.exchange(get(t, path, 'Connection: close\r\n'));
        assert.equal(r.head.split('\r\n')[0], line, path);
        assert.equal(r.body.toString(), body, path);
      }
    },
  },

  // ---- construction snapshot (issue 9) -----------------------------------
  {
    id: 'hdr.init-snapshot',
    title:
      'new Response(bytes, init) keeps the status, headers and body of construction time; changing init or the bytes later changes nothing (native and fast Response)',
    async run(t) {
      for (const kind of ['native', 'fast']) {
        const r = await t.exchange(get(t, `/response/snapshot?kind=${kind}`, 'Connection: close\r\n'));
        assert.equal(r.status, 201, `${kind}: status`);
        assert.equal(r.get('x-snap'), 'before', `${kind}: x-snap`);
        assert.equal(r.get('x-added'), null, `${kind}: a header added to init later reached the wire`);
        assert.equal(r.body.toString(), 'before', `${kind}: body`);
      }
    },
  },
  {
    id: 'hdr.latin1-value',
    title: 'U+00E9 in a header value goes on the wire as the one byte E9 (latin1), from Response and fast Response',
    async run(t) {
      for (const q of ['', '&fast=1']) {
        const r = await t.exchange(get(t, `/headers/value?kind=latin1${q}`, 'Connection: close\r\n'));
        assert.equal(r.status, 200, r.body.toString());
        // The raw client reads the head as latin1: E9 is 'é', the UTF-8 pair C3 A9 would be 'Ã©'.
        assert.equal(r.get('x-value'), 'caf\u00e9', `x-value${q}: ${JSON.stringify(r.get('x-value'))}`);
      }
    },
  },
  {
    id: 'hdr.limits',
    title: 'response headers: 1000 lines and 64 KiB of them are sent; one line or one byte more gives the bare 500, and the server goes on',
    async run(t) {
      const ok = await t.exchange(get(t, '/headers/many?count=1000&bytes=20000', 'Connection: close\r\n'));
      assert.equal(ok.status, 200, '1000 header lines');
      assert.equal(ok.headers.filter(([k]) => k.toLowerCase().startsWith('x-h-')).length, 1000, '1000 header lines sent');
      await expectWire500(t, '/headers/many?count=1001&bytes=20000', 'x-h-0');
      const big = await t.exchange(get(t, '/headers/many?count=2&bytes=65536', 'Connection: close\r\n'));
      assert.equal(big.status, 200, '64 KiB of header lines');
      assert.equal((big.get('x-h-0') ?? '').length + (big.get('x-h-1') ?? '').length + 2 * 9, 65536, '64 KiB of header lines sent');
      await expectWire500(t, '/headers/many?count=2&bytes=65537', 'x-h-0');
      // 20,000 headers: refused as fast as the limit allows, not written one by one.
      await expectWire500(t, '/headers/many?count=20000&bytes=400000', 'x-h-0');
      await stillFine(t);
    },
  },
];
