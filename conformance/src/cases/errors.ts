import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { SECRET, expectBare500, get, noInjectedHeader, stillFine } from './shared.js';

export const errorsCases: ConformanceCase[] = [
  // ---- errors ------------------------------------------------------------
  {
    id: 'error.sync-throw',
    title: 'a synchronous throw in fetch gives a bare 500 with no message; the next request is fine',
    async run(t) {
      await expectBare500(t, '/throw/sync');
      await stillFine(t);
    },
  },
  {
    id: 'error.async-throw',
    title: 'a rejected fetch promise gives a bare 500 with no message; the next request is fine',
    async run(t) {
      await expectBare500(t, '/throw/async');
      await stillFine(t);
    },
  },
  {
    id: 'error.not-a-response',
    title: 'fetch resolving to something other than a Response gives a bare 500',
    async run(t) {
      await expectBare500(t, '/throw/not-response');
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-fast',
    title: 'CR/LF in a fast-Response plain-object header value never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/plain', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/plain');
      assert.equal(r.status, 500);
      assert.ok(!r.body.toString().includes(SECRET));
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-native',
    title: 'CR/LF in a standard Response init header never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/native', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/native');
      assert.equal(r.status, 500);
      await stillFine(t);
    },
  },
  {
    id: 'error.crlf-headers',
    title: 'CR/LF through new Headers().set never reaches the wire (500 expected)',
    async run(t) {
      const r = await t.exchange(get(t, '/crlf/headers', 'Connection: close\r\n'));
      noInjectedHeader(r, '/crlf/headers');
      assert.equal(r.status, 500);
      await stillFine(t);
    },
  },
];
