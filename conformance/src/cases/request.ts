import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { EDGE_SIZES, NJS_NO_SHARED_STATE, adler32, allBytes, bytesEqual, bytesOf, enc, expectBare500, expectJSON, expectText, get, noise, noiseText, stillFine } from './shared.js';

export const requestCases: ConformanceCase[] = [
  // ---- request headers and bodies ----------------------------------------
  {
    id: 'req.headers',
    title: 'request headers: case-insensitive, repeated ones joined with ", ", absent ones null',
    async run(t) {
      const r = await t.exchange(
        get(t, '/echo/headers', 'X-Custom: hello\r\nX-Multi: one\r\nX-Multi: two\r\nConnection: close\r\n'),
      );
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body.toString()), {
        custom: 'hello',
        customUpper: 'hello',
        hasCustom: true,
        multi: 'one, two',
        absent: null,
        isHeaders: true,
        isRequest: true,
      });
    },
  },
  {
    id: 'req.json',
    title: 'a JSON request body is parsed by request.json()',
    async run(t) {
      const payload = { name: 'tsgi', list: [1, 2, 3], nested: { ok: true }, text: 'h\u00e9 \ud83c\udf89' };
      const body = await expectJSON(t, '/echo/json', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify(payload),
      });
      assert.deepEqual(body, { received: payload, type: 'application/json' });
    },
  },
  {
    id: 'req.formdata',
    title: 'request.formData() reads a multipart body (text, UTF-8 and a binary file) and an urlencoded one',
    async run(t) {
      const form = new FormData();
      form.append('a', '1');
      form.append('name', 'h\u00e9 \ud83c\udf89');
      const bin = new Uint8Array(256 * 3);
      for (let i = 0; i < bin.length; i++) bin[i] = i & 255;
      form.append('upload', new Blob([bin], { type: 'application/octet-stream' }), 'bytes.bin');
      form.append('a', '2');
      const body = await expectJSON(t, '/echo/form', { method: 'POST', body: form });
      assert.deepEqual(body, {
        entries: [
          ['a', '1'],
          ['name', 'h\u00e9 \ud83c\udf89'],
          ['upload', { file: 'bytes.bin', type: 'application/octet-stream', size: bin.length }],
          ['a', '2'],
        ],
        sums: [{ length: bin.length, adler32: adler32(bin), first: 0, last: 255 }],
        isFormData: true,
      });
      const url = await expectJSON(t, '/echo/form', {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: 'x=1&y=%C3%A9+z&x=2',
      });
      assert.deepEqual(url, { entries: [['x', '1'], ['y', '\u00e9 z'], ['x', '2']], sums: [], isFormData: true });
      // Anything else rejects with a TypeError: a bare 500.
      await expectBare500(t, '/echo/form', { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'x=1' });
    },
  },
  {
    id: 'body.formdata',
    title: 'a FormData response body goes out as multipart/form-data the client can parse',
    async run(t) {
      const res = await t.fetch('/form/response');
      assert.equal(res.status, 200);
      assert.match(res.headers.get('content-type') ?? '', /^multipart\/form-data; ?boundary=/);
      const form = await res.formData();
      assert.equal(form.get('greeting'), 'h\u00e9llo');
      const file = form.get('data') as File;
      assert.equal(file.name, 'all.bin');
      assert.deepEqual(new Uint8Array(await file.arrayBuffer()), allBytes());
    },
  },
  {
    id: 'req.binary',
    title: 'a binary request body (all 256 byte values, repeated) round-trips byte-exact',
    async run(t) {
      const data = new Uint8Array(256 * 40);
      for (let i = 0; i < data.length; i++) data[i] = i & 255;
      const res = await t.fetch('/echo/body', {
        method: 'POST',
        headers: { 'content-type': 'application/octet-stream' },
        body: data,
      });
      assert.equal(res.status, 200);
      bytesEqual(await bytesOf(res), data, 'echo');
    },
  },
  {
    id: 'req.chunked',
    title: 'a chunked upload without Content-Length arrives whole',
    async run(t) {
      const parts = [enc.encode('part-one;'), noise(100_000, 7), enc.encode(';part-three')];
      const all = Buffer.concat(parts);
      let i = 0;
      const stream = new ReadableStream<Uint8Array>({
        pull(c) {
          if (i < parts.length) c.enqueue(parts[i++]);
          else c.close();
        },
      });
      const body = await expectJSON<{ length: number; adler32: number }>(t, '/echo/sum', {
        method: 'POST',
        body: stream,
        duplex: 'half',
      } as RequestInit);
      assert.equal(body.length, all.length);
      assert.equal(body.adler32, adler32(all));
    },
  },
  {
    id: 'req.chunked-raw',
    title: 'a raw Transfer-Encoding: chunked upload (several chunks) is de-chunked',
    async run(t) {
      const r = await t.exchange(
        `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n` +
          '5\r\nhello\r\n1\r\n \r\n6\r\nworld!\r\n0\r\n\r\n',
      );
      assert.equal(r.status, 200);
      assert.deepEqual(JSON.parse(r.body.toString()), { text: 'hello world!', length: 12, method: 'POST' });
    },
  },
  {
    id: 'req.empty',
    title: 'an empty POST body reads as "" (Content-Length: 0)',
    async run(t) {
      const body = await expectJSON(t, '/echo/text', { method: 'POST', body: '' });
      assert.deepEqual(body, { text: '', length: 0, method: 'POST' });
      const sum = await expectJSON(t, '/echo/sum', { method: 'POST' });
      assert.equal(sum.length, 0);
    },
  },
  {
    id: 'req.large',
    title: 'a 3 MiB request body arrives complete (checksum)',
    async run(t) {
      const data = noise(3 * 1024 * 1024 + 3);
      const body = await expectJSON<{ length: number; adler32: number; first: number; last: number }>(t, '/echo/sum', {
        method: 'POST',
        body: data,
      });
      assert.deepEqual(body, {
        length: data.length,
        adler32: adler32(data),
        first: data[0],
        last: data[data.length - 1],
      });
    },
  },
  {
    id: 'req.body-once',
    title: 'a request body reads once: a second read rejects with TypeError',
    async run(t) {
      const body = await expectJSON(t, '/echo/twice', { method: 'POST', body: '{"a":1}' });
      assert.deepEqual(body, { first: '{"a":1}', second: 'TypeError', bodyUsed: true });
    },
  },
  {
    id: 'req.clone',
    title: 'request.clone() and new Request(request) work on the incoming request',
    async run(t) {
      const body = await expectJSON(t, '/echo/clone', { method: 'POST', body: 'clone me' });
      assert.deepEqual(body, {
        clone: 'clone me',
        rebuilt: 'clone me',
        sameURL: true,
        method: 'POST',
        cloneIsRequest: true,
        originalUsed: true,
      });
    },
  },
  {
    id: 'req.expect-continue',
    title: 'Expect: 100-continue gets a 100 before the body is sent, then the final response',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(
          `POST /echo/text HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 8\r\nExpect: 100-continue\r\n\r\n`,
        );
        await c.waitForData();
        assert.match(c.received(), /^HTTP\/1\.1 100/, 'expected 100 Continue before sending the body');
        await c.write('continue');
        const r = await c.readResponse();
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.body.toString()).text, 'continue');
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'req.truncated-body-rejects',
    title: 'a body cut short by a client disconnect makes the body read reject, never resolve truncated',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('trunc');
      const c = await t.connect();
      await c.write(`POST /echo/record?key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nContent-Length: 100000\r\n\r\n`);
      await c.write(Buffer.alloc(1000, 0x63));
      // Give the server the chance to start the handler; servers that buffer the
      // whole body first never start it, which is fine too.
      const started = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'unknown',
        3000,
      );
      c.close();
      if (started === 'unknown') return;
      const outcome = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'reading',
        12_000,
      );
      assert.equal(outcome, 'rejected');
      await stillFine(t);
    },
  },
  {
    id: 'req.streamed-upload',
    title: 'a chunked upload streams: the handler reads the first 70,000 bytes while the client still holds the rest',
    optOut: { 'nginx:embedded': 'njs 0.7.9 hands the handler the request body only once nginx has read all of it' },
    async run(t) {
      const key = t.key('upload');
      const first = noise(70_000, 21);
      const rest = noise(100_000, 22);
      const chunk = (b: Uint8Array): Buffer => Buffer.concat([Buffer.from(`${b.length.toString(16)}\r\n`), b, Buffer.from('\r\n')]);
      const c = await t.connect();
      try {
        await c.write(
          `POST /upload/progress?key=${key} HTTP/1.1\r\nHost: ${t.host}\r\nTransfer-Encoding: chunked\r\n` +
            'Content-Type: application/octet-stream\r\nConnection: close\r\n\r\n',
        );
        await c.write(chunk(first));
        // Seen through a second request while the upload is still open.
        const seen = await t.poll(
          () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
          (v) => /^seen:[1-9]/.test(v),
          10_000,
        );
        assert.match(seen, /^seen:\d+$/, 'the handler saw no byte before the upload ended (the body was buffered whole)');
        assert.ok(Number(seen.slice(5)) <= first.length, `the handler saw ${seen} before the rest was sent`);
        await c.write(Buffer.concat([chunk(rest), Buffer.from('0\r\n\r\n')]));
        const r = await c.readResponse();
        assert.equal(r.status, 200, r.body.toString());
        const all = Buffer.concat([first, rest]);
        assert.deepEqual(JSON.parse(r.body.toString()), { length: all.length, adler32: adler32(all), first: all[0], last: all[all.length - 1] });
      } finally {
        c.close();
      }
    },
  },
  {
    id: 'req.methods',
    title: 'PUT, PATCH, DELETE and OPTIONS reach the handler with their method',
    async run(t) {
      for (const method of ['PUT', 'PATCH', 'DELETE', 'OPTIONS']) {
        const res = await expectText(t, '/method', 200, method, { method });
        assert.equal(res.headers.get('x-method'), method);
      }
    },
  },
  {
    id: 'req.edge-sizes',
    title: 'request bodies of 64 KiB - 1 to ~300 KB read whole by arrayBuffer, bytes, blob, body stream and text (UTF-8 across 64 KiB boundaries)',
    async run(t) {
      for (const size of EDGE_SIZES) {
        const data = noise(size, 0x1234567 + size);
        const want = { length: size, adler32: adler32(data), first: data[0], last: data[size - 1] };
        for (const read of ['ab', 'bytes', 'blob', 'stream']) {
          const got = await expectJSON(t, `/echo/read?read=${read}`, { method: 'POST', body: data });
          assert.deepEqual(got, want, `${size} bytes read by ${read}`);
        }
        const text = enc.encode(noiseText(size));
        const got = await expectJSON(t, '/echo/read?read=text', {
          method: 'POST',
          headers: { 'content-type': 'text/plain;charset=UTF-8' },
          body: text,
        });
        assert.deepEqual(got, { length: size, adler32: adler32(text), first: text[0], last: text[size - 1] }, `${size} bytes read by text`);
      }
    },
  },
  {
    id: 'req.edge-sizes-echo',
    title: 'request bodies of 64 KiB - 1 to ~300 KB echoed back as a Uint8Array arrive exact',
    async run(t) {
      for (const size of EDGE_SIZES) {
        const data = noise(size, 0x7654321 + size);
        const res = await t.fetch('/echo/body', { method: 'POST', headers: { 'content-type': 'application/octet-stream' }, body: data });
        assert.equal(res.status, 200);
        bytesEqual(await bytesOf(res), data, `echo of ${size} bytes`);
      }
    },
  },
  {
    id: 'req.obs-text-header',
    title: 'request header bytes 0x80-0xFF reach the handler as one character each (latin1)',
    async run(t) {
      const r = await t.exchange(
        Buffer.concat([
          Buffer.from(`GET /echo/header-codes?name=x-obs HTTP/1.1\r\nHost: ${t.host}\r\nX-Obs: caf`),
          Buffer.from([0xe9, 0x20, 0xc3, 0xa9, 0x20, 0xff]),
          Buffer.from('\r\nConnection: close\r\n\r\n'),
        ]),
      );
      assert.equal(r.status, 200, r.body.toString());
      assert.deepEqual(JSON.parse(r.body.toString()), {
        codes: [99, 97, 102, 0xe9, 0x20, 0xc3, 0xa9, 0x20, 0xff],
        value: 'caf\u00e9 \u00c3\u00a9 \u00ff',
        length: 9,
      });
    },
  },
];
