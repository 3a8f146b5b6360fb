import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { EDGE_SIZES, allBytes, bytesEqual, bytesOf, enc, expectJSON, expectText, get, noise, noiseText } from './shared.js';

export const bodyCases: ConformanceCase[] = [
  // ---- response body types -----------------------------------------------
  {
    id: 'body.string',
    title: 'string body arrives exact, with text/plain and a Content-Length',
    async run(t) {
      const res = await expectText(t, '/text', 200, 'Hello, tsgi!');
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    },
  },
  {
    id: 'body.fast-string',
    title: "the fast Response (@tsgi/core) with a string body and plain-object headers",
    async run(t) {
      const res = await expectText(t, '/fast/text', 200, 'Hello, fast!');
      assert.equal(res.headers.get('x-fast'), '1');
      assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
    },
  },
  {
    id: 'body.uint8array',
    title: 'Uint8Array body holding all 256 byte values arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/bytes/u8');
      assert.equal(res.status, 200);
      assert.equal(res.headers.get('content-type'), 'application/octet-stream');
      bytesEqual(await bytesOf(res), allBytes(), '/bytes/u8');
    },
  },
  {
    id: 'body.fast-uint8array',
    title: 'the fast Response with a Uint8Array body arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/fast/bytes');
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), allBytes(), '/fast/bytes');
    },
  },
  {
    id: 'body.arraybuffer',
    title: 'ArrayBuffer body arrives byte-exact',
    async run(t) {
      const res = await t.fetch('/bytes/ab');
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), allBytes(), '/bytes/ab');
    },
  },
  {
    id: 'body.readablestream',
    title: 'ReadableStream body arrives whole, with a UTF-8 character split across chunks intact',
    async run(t) {
      await expectText(t, '/stream/basic', 200, 'chunk-1;caf\u00e9;chunk-3');
    },
  },
  {
    id: 'body.null',
    title: 'null body: 200 with an empty body and the handler headers',
    async run(t) {
      const r = await t.exchange(get(t, '/null', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.equal(r.get('x-body'), 'null');
      assert.equal(r.body.length, 0);
      const cl = r.get('content-length');
      assert.ok(cl === null || cl === '0', `content-length ${cl}`);
    },
  },
  {
    id: 'body.empty-string',
    title: "empty string body: 200, Content-Length 0 (or empty chunked)",
    async run(t) {
      const r = await t.exchange(get(t, '/empty', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      assert.equal(r.get('x-body'), 'empty');
      assert.equal(r.body.length, 0);
    },
  },
  {
    id: 'body.utf8',
    title: 'UTF-8 text (2-, 3- and 4-byte characters) is byte-exact and Content-Length counts bytes',
    async run(t) {
      const want = 'h\u00e9llo w\u00f6rld \u2014 \u65e5\u672c\u8a9e \ud83c\udf89';
      const r = await t.exchange(get(t, '/utf8', 'Connection: close\r\n'));
      assert.equal(r.status, 200);
      bytesEqual(r.body, enc.encode(want), '/utf8');
      const cl = r.get('content-length');
      if (cl !== null) assert.equal(Number(cl), enc.encode(want).length);
    },
  },
  {
    id: 'body.json',
    title: 'Response.json gives application/json and the exact JSON',
    async run(t) {
      const body = await expectJSON(t, '/json');
      assert.deepEqual(body, { ok: true, n: 42, s: 'h\u00e9' });
    },
  },
  {
    id: 'body.large-response',
    title: 'a 3 MiB Uint8Array response (noise) arrives complete and exact',
    async run(t) {
      const size = 3 * 1024 * 1024 + 17;
      const res = await t.fetch(`/large?size=${size}`);
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), noise(size), `/large?size=${size}`);
    },
  },
  {
    id: 'body.large-stream',
    title: 'a 3 MiB streamed response (64 KiB chunks of noise) arrives complete and exact',
    async run(t) {
      const size = 3 * 1024 * 1024 + 5;
      const res = await t.fetch(`/large/stream?size=${size}`);
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), noise(size), `/large/stream?size=${size}`);
    },
  },
  {
    id: 'body.edge-sizes',
    title: 'byte bodies of 64 KiB - 1, 64 KiB, 64 KiB + 1 and ~300 KB (Uint8Array, ArrayBuffer, offset view, DataView, fast Response) arrive exact',
    async run(t) {
      for (const form of ['u8', 'ab', 'view', 'dataview', 'fast']) {
        for (const size of EDGE_SIZES) {
          const path = `/large/bytes?form=${form}&size=${size}`;
          const res = await t.fetch(path);
          assert.equal(res.status, 200, path);
          const cl = res.headers.get('content-length');
          if (cl !== null) assert.equal(Number(cl), size, `${path}: content-length`);
          bytesEqual(await bytesOf(res), noise(size), path);
        }
      }
    },
  },
  {
    id: 'body.edge-sizes-string',
    title: 'string bodies whose UTF-8 is 64 KiB - 1, 64 KiB, 64 KiB + 1 and ~300 KB, with characters across each 64 KiB boundary, arrive exact',
    async run(t) {
      for (const size of EDGE_SIZES) {
        const text = noiseText(size);
        const want = enc.encode(text);
        const r = await t.exchange(
          Buffer.concat([
            Buffer.from(
              `POST /echo/string HTTP/1.1\r\nHost: ${t.host}\r\nContent-Type: text/plain;charset=UTF-8\r\n` +
                `Content-Length: ${want.length}\r\nConnection: close\r\n\r\n`,
            ),
            want,
          ]),
        );
        assert.equal(r.status, 200, `${size}: status`);
        const cl = r.get('content-length');
        if (cl !== null) assert.equal(Number(cl), size, `${size}: content-length`);
        bytesEqual(r.body, want, `string body of ${size} bytes`);
      }
    },
  },
];
