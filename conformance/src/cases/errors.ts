import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { SECRET, expectBare500, expectWire500, get, noInjectedHeader, stillFine } from './shared.js';

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
  {
    id: 'error.ctl-header',
    title: 'a control character (U+0001, DEL) in a header value gives the bare 500, from Response and fast Response',
    async run(t) {
      for (const q of ['kind=ctl', 'kind=del', 'kind=ctl&fast=1', 'kind=del&fast=1']) await expectWire500(t, `/headers/value?${q}`);
      await stillFine(t);
    },
  },
  {
    id: 'error.non-latin1-header',
    title: 'a character above U+00FF (U+20AC) in a header value gives the bare 500, from Response and fast Response',
    async run(t) {
      for (const q of ['kind=wide', 'kind=wide&fast=1']) await expectWire500(t, `/headers/value?${q}`);
      await stillFine(t);
    },
  },
];
