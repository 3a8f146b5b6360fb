import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { CONFORMANCE_MAX_BODY, adler32, expectJSON, get, noise, sendOverLimit, stillFine } from './shared.js';

export const connectionCases: ConformanceCase[] = [
  // ---- connections -------------------------------------------------------
  {
    id: 'conn.keepalive-pipelining',
    title: 'keep-alive with three pipelined requests: three responses in order on one connection',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          get(t, '/text') +
            `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 5\r\n\r\nhello` +
            get(t, '/echo/url?n=3'),
        );
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'Hello, tsgi!');
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).text, 'hello');
        const r3 = await c.readResponse();
        assert.equal(r3.status, 200);
        assert.equal(JSON.parse(r3.body.toString()).search, '?n=3');
        // Still open for a fourth.
        await c.write(get(t, '/text'));
        assert.equal((await c.readResponse()).status, 200);
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.http10',
    title: 'HTTP/1.0 clients get whole bodies without chunked framing, and the connection closes',
    async run(t) {
      for (const [path, want] of [
        ['/text', 'Hello, tsgi!'],
        ['/stream/basic', 'chunk-1;caf\u00e9;chunk-3'],
      ] as const) {
        const c = await t.connect();
        try {
          await c.write(`GET ${path} HTTP/1.0\r\nHost: ${t.host}\r\n\r\n`);
          const r = await c.readResponse();
          assert.equal(r.status, 200, path);
          assert.ok(!/chunked/i.test(r.get('transfer-encoding') ?? ''), `${path}: chunked framing sent to an HTTP/1.0 client`);
          assert.equal(r.body.toString(), want, path);
          await c.readToEnd();
        } finally {
          c.close();
        }
      }
    },
  },
  {
    id: 'conn.concurrent',
    title: '24 concurrent requests with different bodies each get their own answer',
    async run(t) {
      const results = await Promise.all(
        Array.from({ length: 24 }, async (_, i) => {
          const data = noise(1000 + i * 977, i + 1);
          const path = i % 2 ? `/echo/sum?n=${i}` : `/echo/url?a=${i}`;
          const res = await t.fetch(path, i % 2 ? { method: 'POST', body: data } : undefined);
          const body = JSON.parse(await res.text()) as { length?: number; adler32?: number; a?: string[] };
          return { i, data, status: res.status, body };
        }),
      );
      for (const { i, data, status, body } of results) {
        assert.equal(status, 200, `request ${i}`);
        if (i % 2) assert.deepEqual([body.length, body.adler32], [data.length, adler32(data)], `request ${i}`);
        else assert.deepEqual(body.a, [String(i)], `request ${i}`);
      }
    },
  },
  {
    id: 'conn.unread-body',
    title: 'a request body the handler never reads does not break the next request on the connection',
    async run(t) {
      const c = await t.connect();
      try {
        const body = Buffer.alloc(100_000, 0x62);
        await c.write(`POST /ignore-body HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: ${body.length}\r\n\r\n`);
        await c.write(body);
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'ignored');
        if (/close/i.test(r1.get('connection') ?? '')) {
          assert.fail('the server closed the connection instead of discarding the unread body');
        }
        await c.write(get(t, '/echo/url?after=unread'));
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).search, '?after=unread');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.unread-body-chunked',
    title: 'an unread chunked request body does not break the next pipelined request',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          `POST /ignore-body HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\n\r\n` +
            'a\r\n0123456789\r\n5\r\nGET /\r\n0\r\n\r\n' +
            get(t, '/echo/url?after=chunked'),
        );
        const r1 = await c.readResponse();
        assert.equal(r1.status, 200);
        assert.equal(r1.body.toString(), 'ignored');
        const r2 = await c.readResponse();
        assert.equal(r2.status, 200);
        assert.equal(JSON.parse(r2.body.toString()).search, '?after=chunked');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'conn.oversized-header',
    title: 'a 64 KiB request header gets a 4xx (or the connection closed with one); the server stays up',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/text', `X-Big: ${'a'.repeat(64 * 1024)}\r\n`));
        const r = await c.readResponse();
        assert.ok(r.status >= 400 && r.status < 500, `status ${r.status}`);
      } finally {
        c.close();
      }
      await stillFine(t);
    },
  },
  {
    id: 'conn.malformed-request-line',
    title: 'a malformed request line gets 400; the server stays up',
    async run(t) {
      for (const line of ['THIS IS NOT HTTP\r\n\r\n', `GET /text HTTP/1.1 extra\r\nHost: ${t.host}\r\n\r\n`]) {
        const r = await t.exchange(line);
        assert.equal(r.status, 400, JSON.stringify(line));
      }
      await stillFine(t);
    },
  },

  {
    id: 'conn.missing-host',
    title: 'an HTTP/1.1 request without Host gets 400; the server stays up',
    async run(t) {
      const r = await t.exchange('GET /text HTTP/1.1\r\nConnection: close\r\n\r\n');
      assert.equal(r.status, 400);
      await stillFine(t);
    },
  },

  {
    id: 'conn.http10-no-host',
    title: 'an HTTP/1.0 request without Host is served; the URL carries the server\'s own host:port',
    async run(t) {
      const r = await t.exchange('GET /echo/url?v=10 HTTP/1.0\r\n\r\n');
      assert.equal(r.status, 200, r.body.toString());
      const body = JSON.parse(r.body.toString()) as { url: string; pathname: string; search: string };
      assert.equal(body.pathname, '/echo/url');
      assert.equal(body.search, '?v=10');
      assert.equal(body.url, `${t.baseURL}/echo/url?v=10`);
    },
  },

  // ---- body limit --------------------------------------------------------
  {
    id: 'limit.content-length',
    title: 'a Content-Length over the limit gets 413; the server stays up',
    async run(t) {
      const over = CONFORMANCE_MAX_BODY + 1;
      const r = await sendOverLimit(
        t,
        `POST /echo/sum HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: ${over}\r\nContent-Type: application/octet-stream\r\n\r\n`,
        false,
        over,
      );
      assert.equal(r.status, 413);
      await stillFine(t);
    },
  },
  {
    id: 'limit.chunked',
    title: 'a chunked body growing over the limit gets 413; the server stays up',
    async run(t) {
      const r = await sendOverLimit(
        t,
        `POST /echo/sum HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n`,
        true,
        CONFORMANCE_MAX_BODY + 128 * 1024,
      );
      assert.equal(r.status, 413);
      await stillFine(t);
    },
  },
  {
    id: 'limit.exact',
    title: 'a body of exactly the limit is accepted whole',
    async run(t) {
      const data = noise(CONFORMANCE_MAX_BODY, 12345);
      const body = await expectJSON<{ length: number; adler32: number }>(t, '/echo/sum', { method: 'POST', body: data });
      assert.equal(body.length, CONFORMANCE_MAX_BODY);
      assert.equal(body.adler32, adler32(data));
    },
  },
];
