import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { EDGE_SIZES, NJS_NO_SHARED_STATE, SECRET, bytesEqual, bytesOf, expectBare500, expectText, get, noise, stillFine } from './shared.js';
import type { RawResponse } from '../client.js';

export const streamCases: ConformanceCase[] = [
  // ---- streaming ---------------------------------------------------------
  {
    id: 'stream.incremental',
    title: 'the first chunk of a stream arrives while the handler still holds the stream open',
    optOut: { 'nginx:embedded': `${NJS_NO_SHARED_STATE} (the stream is released by a second request)` },
    async run(t) {
      const key = t.key('hold');
      const res = await t.fetch(`/stream/hold?key=${key}`);
      assert.equal(res.status, 200);
      const reader = res.body!.getReader();
      const dec = new TextDecoder();
      let got = '';
      while (!got.includes('\n')) {
        const { value, done } = await reader.read();
        assert.ok(!done, `the stream ended before its first chunk was complete (got ${JSON.stringify(got)})`);
        got += dec.decode(value, { stream: true });
      }
      // The server has not finished the stream: it waits for this release.
      assert.equal(got, 'first\n', 'only the first chunk before the release');
      await expectText(t, `/stream/release?key=${key}`, 200, 'released');
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        got += dec.decode(value, { stream: true });
      }
      assert.equal(got, 'first\nreleased\n');
    },
  },

  {
    id: 'stream.cancel-on-disconnect',
    title: "a client that leaves mid-stream makes the server cancel the handler's stream",
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('cancel');
      const c = await t.connect();
      await c.write(get(t, `/stream/endless?key=${key}`));
      await c.waitForData();
      assert.match(c.received(), /^HTTP\/1\.1 200/);
      c.close();
      const outcome = await t.poll(
        () => t.fetch(`/outcome?key=${key}`).then((r) => r.text()),
        (v) => v !== 'streaming',
        12_000,
      );
      assert.equal(outcome, 'cancelled');
      await stillFine(t);
    },
  },
  {
    id: 'stream.error-before-first-byte',
    title: 'a stream that errors before its first chunk gives a bare 500',
    async run(t) {
      await expectBare500(t, '/stream/error-early');
      await stillFine(t);
    },
  },
  {
    id: 'stream.error-midway',
    title: 'a stream that errors after some chunks never looks like a complete 200 (cut connection, or a bare 500 if nothing was sent)',
    async run(t) {
      const c = await t.connect();
      try {
        await c.write(get(t, '/stream/error-midway'));
        let complete: RawResponse | undefined;
        try {
          complete = await c.readResponse();
        } catch {
          // The connection closed before the body was complete: the client can tell.
        }
        if (complete) {
          // Only a server that held the body back may still answer, and then with a bare 500.
          assert.equal(
            complete.status,
            500,
            `a failed stream must not look like a complete body (got ${complete.status} ${JSON.stringify(complete.body.toString())})`,
          );
          assert.ok(!complete.body.toString().includes(SECRET), 'the stream error leaked');
        } else {
          assert.match(c.received(), /^HTTP\/1\.1 200/);
          assert.ok(!c.received().includes(SECRET), 'the stream error leaked');
        }
      } finally {
        c.close();
      }
      await stillFine(t);
    },
  },
  {
    id: 'stream.edge-chunks',
    title: 'streams of 64 KiB - 1 to ~300 KB in chunks below, at and above 64 KiB (views into one buffer) arrive exact',
    async run(t) {
      for (const chunk of [1000, 65535, 65536, 65537, 200_000]) {
        for (const size of EDGE_SIZES) {
          const path = `/large/stream?size=${size}&chunk=${chunk}`;
          const res = await t.fetch(path);
          assert.equal(res.status, 200, path);
          bytesEqual(await bytesOf(res), noise(size), path);
        }
      }
    },
  },
];
