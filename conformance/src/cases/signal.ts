import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { NJS_NO_SHARED_STATE, expectJSON, expectText, get, stillFine } from './shared.js';

export const signalCases: ConformanceCase[] = [
  // ---- request.signal ----------------------------------------------------
  {
    id: 'signal.abort-on-disconnect',
    title: 'request.signal aborts when the client disconnects before the response',
    optOut: {
      'nginx:embedded':
        `${NJS_NO_SHARED_STATE}; also, njs tears the request VM down on client abort (njs #955) ` +
        'without running JS, so no abort event can be delivered',
    },
    async run(t) {
      const key = t.key('sig');
      const c = await t.connect();
      await c.write(get(t, `/signal/wait?key=${key}`));
      // Wait until the handler is inside fetch, then hang up.
      const started = await t.poll(
        () => t.fetch(`/signal/state?key=${key}`).then((r) => r.text()),
        (v) => v !== 'unknown',
      );
      assert.equal(started, 'waiting');
      c.close();
      const after = await t.poll(
        () => t.fetch(`/signal/state?key=${key}`).then((r) => r.text()),
        (v) => v !== 'waiting',
        12_000,
      );
      assert.equal(after, 'aborted');
      await stillFine(t);
    },
  },
  {
    id: 'signal.not-aborted-get',
    title: 'request.signal does not abort when a GET completes normally (connection closed after)',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('sig');
      const c = await t.connect();
      try {
        await c.write(get(t, `/signal/check?key=${key}`, 'Connection: close\r\n'));
        const r = await c.readResponse();
        assert.equal(r.status, 200);
        assert.equal(JSON.parse(r.body.toString()).aborted, false);
        await c.readToEnd();
      } finally {
        c.close();
      }
      // A later request on another connection: any abort from the close has fired by now.
      await stillFine(t);
      await expectText(t, `/signal/state?key=${key}`, 200, 'ok');
    },
  },
  {
    id: 'signal.not-aborted-post',
    title: 'request.signal does not abort when a POST completes normally (signal read after the body)',
    optOut: { 'nginx:embedded': NJS_NO_SHARED_STATE },
    async run(t) {
      const key = t.key('sig');
      const body = await expectJSON(t, `/signal/check?key=${key}`, { method: 'POST', body: 'x'.repeat(10_000) });
      assert.deepEqual(body, { aborted: false, length: 10_000 });
      await stillFine(t);
      await expectText(t, `/signal/state?key=${key}`, 200, 'ok');
    },
  },
];
