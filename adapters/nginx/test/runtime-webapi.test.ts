/**
 * The njs runtime's Web API polyfills against Node's own implementations:
 * the same cases (runtime-probe.ts) run on both, plus explicit checks of the
 * semantics handlers rely on, through describe.each over both sets.
 * The polyfills are imported directly; they touch no globals.
 */
import { describe, it, expect, beforeAll } from 'vitest';
import * as poly from '../runtime/globals.js';
import { cases, probe, type WebImpls } from './runtime-probe.js';

const node: WebImpls = { Headers, Request, Response, URL, URLSearchParams, ReadableStream, AbortController, FormData, Blob, File };
const njs: WebImpls = {
  Headers: poly.Headers,
  Request: poly.Request,
  Response: poly.Response,
  URL: poly.URL,
  URLSearchParams: poly.URLSearchParams,
  ReadableStream: poly.ReadableStream,
  AbortController: poly.AbortController,
  FormData: poly.FormData,
  Blob: poly.Blob,
  File: poly.File,
};

describe('runtime polyfills give the same results as Node for every probe case', () => {
  let expected: Record<string, unknown>;
  let actual: Record<string, unknown>;
  beforeAll(async () => {
    expected = Object.fromEntries(await probe(node));
    actual = Object.fromEntries(await probe(njs));
  });
  it.each(Object.keys(cases))('%s', (name) => {
    expect(actual[name]).toEqual(expected[name]);
  });
});

describe.each([
  ['node', node],
  ['tsgi-njs', njs],
] as const)('%s', (_label, W) => {
  it('Headers are case-insensitive and join repeats with ", "', () => {
    const h = new W.Headers([['X-A', '1'], ['x-a', '2']]);
    expect(h.get('x-A')).toBe('1, 2');
    expect(h.has('X-A')).toBe(true);
  });
  it('Headers reject CR, LF and NUL in values and bad names', () => {
    expect(() => new W.Headers({ a: 'x\r\ny' })).toThrow(TypeError);
    expect(() => new W.Headers({ a: 'x\0' })).toThrow(TypeError);
    expect(() => new W.Headers({ 'a:b': 'x' })).toThrow(TypeError);
    expect(() => new W.Headers().set('a b', 'x')).toThrow(TypeError);
  });
  it('getSetCookie keeps each cookie', () => {
    const h = new W.Headers();
    h.append('Set-Cookie', 'a=1');
    h.append('Set-Cookie', 'b=2, c=3');
    expect(h.getSetCookie()).toEqual(['a=1', 'b=2, c=3']);
  });
  it('Response is instanceof Response, Request instanceof Request', () => {
    expect(new W.Response('x')).toBeInstanceOf(W.Response);
    expect(W.Response.json({})).toBeInstanceOf(W.Response);
    expect(new W.Request('http://h/')).toBeInstanceOf(W.Request);
    expect({}).not.toBeInstanceOf(W.Response);
  });
  it('a body reads once', async () => {
    const r = new W.Response('abc');
    await expect(r.text()).resolves.toBe('abc');
    expect(r.bodyUsed).toBe(true);
    await expect(r.text()).rejects.toThrow(TypeError);
  });
  it('Response status range is enforced', () => {
    expect(() => new W.Response('x', { status: 99 })).toThrow(RangeError);
    expect(() => new W.Response('x', { status: 1000 })).toThrow(RangeError);
    expect(() => new W.Response('x', { status: 304 })).toThrow(TypeError);
  });
  it('URL parses the parts of an absolute URL', () => {
    const u = new W.URL('https://Example.com:444/a%20b/../c?x=1&x=2#h');
    expect([u.protocol, u.hostname, u.port, u.pathname, u.search, u.hash, u.origin]).toEqual([
      'https:', 'example.com', '444', '/c', '?x=1&x=2', '#h', 'https://example.com:444',
    ]);
    expect(u.searchParams.getAll('x')).toEqual(['1', '2']);
    expect(() => new W.URL('/no-base')).toThrow(TypeError);
  });
  it('URLSearchParams serialises as application/x-www-form-urlencoded', () => {
    const sp = new W.URLSearchParams();
    sp.append('q', 'a b&c');
    sp.append('q', 'é');
    expect(sp.toString()).toBe('q=a+b%26c&q=%C3%A9');
    expect(new W.URLSearchParams(sp.toString()).getAll('q')).toEqual(['a b&c', 'é']);
  });
  it('ReadableStream pull/cancel', async () => {
    let cancelled: unknown = 'no';
    let n = 0;
    const s = new W.ReadableStream({
      pull(c: { enqueue(x: Uint8Array): void }) {
        c.enqueue(new Uint8Array([n++]));
      },
      cancel(reason: unknown) {
        cancelled = reason;
      },
    });
    const rd = s.getReader();
    expect(s.locked).toBe(true);
    const first = await rd.read();
    expect(Array.from(first.value as Uint8Array)).toEqual([0]);
    await rd.cancel('enough');
    expect(cancelled).toBe('enough');
    expect((await rd.read()).done).toBe(true);
  });
  it('AbortController aborts its signal once', () => {
    const ac = new W.AbortController();
    let calls = 0;
    ac.signal.addEventListener('abort', () => calls++);
    ac.abort('r1');
    ac.abort('r2');
    expect([ac.signal.aborted, ac.signal.reason, calls]).toEqual([true, 'r1', 1]);
  });
});
