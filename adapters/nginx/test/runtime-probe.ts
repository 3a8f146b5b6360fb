/**
 * Web API cases run three ways with the same code: against Node's own
 * implementations, against the njs runtime's polyfills imported in Node, and
 * inside real njs 0.7.9 (bundled with the polyfills). Each case records what
 * it observed (a value, or the error's name), so the runs can be compared.
 *
 * Written for njs 0.7.9 after lowering: no for-of over non-arrays (the
 * lowering assumes arrays), no spread of iterables, never `f(await x)`.
 */

export interface WebImpls {
  Headers: any;
  Request: any;
  Response: any;
  URL: any;
  URLSearchParams: any;
  ReadableStream: any;
  AbortController: any;
  FormData: any;
  Blob: any;
  File: any;
}

type Case = (W: WebImpls) => unknown;

function drain(it: any): any[] {
  const out: any[] = [];
  for (let s = it.next(); !s.done; s = it.next()) out.push(s.value);
  return out;
}

function urlParts(u: any): any {
  return [u.href, u.protocol, u.username, u.password, u.host, u.hostname, u.port, u.pathname, u.search, u.hash, u.origin];
}

const enc = (s: string) => new TextEncoder().encode(s);

export const cases: Record<string, Case> = {
  // ---- Blob, File, FormData
  'blob: size, type, text, slice': async (W) => {
    const b = new W.Blob(['héllo', new Uint8Array([33])], { type: 'Text/Plain' });
    const s = b.slice(1, -1, 'X/Y');
    const bt = await b.text();
    const st = await s.text();
    return [b.size, b.type, bt, s.size, s.type, st, new W.Blob(['a'], { type: 'a/bé' }).type, new W.Blob().size];
  },
  'blob: arrayBuffer and bytes copy': async (W) => {
    const b = new W.Blob([new Uint8Array([1, 2, 3]).buffer, new W.Blob(['x'])]);
    const ab = await b.arrayBuffer();
    return [ab.byteLength, new Uint8Array(ab)[3], b.size];
  },
  // njs 0.7.9's typed-array slice ignores a view's offset, and its isView misses DataView.
  'bytes: views with an offset read back exact (Response, Blob, slice, stream)': async (W) => {
    const big = new Uint8Array(20);
    for (let i = 0; i < 20; i++) big[i] = i * 7 + 1;
    const view = big.subarray(5, 12);
    const dv = new DataView(big.buffer, 3, 4);
    const res = await new W.Response(view).arrayBuffer();
    const bytes = await new W.Response(view).bytes();
    const dvBuf = await new W.Response(dv).arrayBuffer();
    const blob = new W.Blob([view, dv]);
    const slicedBuf = await blob.slice(2, 9).arrayBuffer();
    const streamedBuf = await new W.Response(new W.Blob([view]).stream()).arrayBuffer();
    const reqBuf = await new W.Request('http://h/', { method: 'POST', body: view }).arrayBuffer();
    const fromDv = new Uint8Array(dvBuf);
    const sliced = new Uint8Array(slicedBuf);
    const streamed = new Uint8Array(streamedBuf);
    const req = new Uint8Array(reqBuf);
    return [
      Array.prototype.slice.call(new Uint8Array(res)),
      Array.prototype.slice.call(bytes),
      Array.prototype.slice.call(fromDv),
      blob.size,
      Array.prototype.slice.call(sliced),
      Array.prototype.slice.call(streamed),
      Array.prototype.slice.call(req),
    ];
  },
  'file: name, type, lastModified, instanceof Blob': (W) => {
    const f = new W.File(['ab'], 'n.txt', { type: 'text/plain', lastModified: 42 });
    return [f.name, f.type, f.size, f.lastModified, f instanceof W.Blob, f instanceof W.File];
  },
  'file: needs two arguments': (W) => new W.File(['x']),
  'formdata: append, get, getAll, has, set, delete, order': (W) => {
    const fd = new W.FormData();
    fd.append('a', '1');
    fd.append('b', 2);
    fd.append('a', '3');
    const before = [fd.get('a'), fd.getAll('a'), fd.has('b'), fd.has('c'), fd.get('c')];
    fd.set('a', '4');
    fd.delete('b');
    fd.append('c', '5');
    const keys = drain(fd.keys());
    const entries = drain(fd.entries());
    const seen: string[] = [];
    fd.forEach((v: string, k: string) => seen.push(k + '=' + v));
    return [before, keys, entries, seen];
  },
  'formdata: a Blob becomes a File named blob; filename overrides': (W) => {
    const fd = new W.FormData();
    fd.append('b', new W.Blob(['x'], { type: 'text/plain' }));
    fd.append('f', new W.File(['yy'], 'orig.txt'), 'renamed.txt');
    fd.set('g', new W.File(['z'], 'keep.txt'));
    const b = fd.get('b');
    const f = fd.get('f');
    return [b instanceof W.File, b.name, b.type, b.size, f.name, fd.get('g').name];
  },
  'formdata: append needs two arguments; a filename needs a Blob': (W) => {
    const fd = new W.FormData();
    let one = 'ok';
    try {
      fd.append('x');
    } catch (e: any) {
      one = e.name;
    }
    let two = 'ok';
    try {
      fd.append('x', 'y', 'z.txt');
    } catch (e: any) {
      two = e.name;
    }
    return [one, two];
  },
  'formdata: Response round trip through multipart': async (W) => {
    const fd = new W.FormData();
    fd.append('a', 'line1\nline2');
    fd.append('q"x', 'é');
    fd.append('f', new W.Blob([new Uint8Array([0, 13, 10, 45, 45, 255])]), 'd.bin');
    fd.append('t', new W.Blob(['hi'], { type: 'text/html' }), 'x.html');
    const res = new W.Response(fd);
    const ct = res.headers.get('content-type');
    const back = await res.formData();
    const f = back.get('f');
    const t = back.get('t');
    const fb = await f.bytes();
    const tt = await t.text();
    return [ct.split(';')[0], /boundary=./.test(ct), back.get('a'), back.get('q"x'), back.get('q%22x'), f.name, f.type, Array.prototype.slice.call(fb), t.type, tt];
  },
  'formdata: parses a hand-written multipart body': async (W) => {
    const body =
      '--XyZ\r\nContent-Disposition: form-data; name="field"\r\n\r\nv1\r\n' +
      '--XyZ\r\ncontent-disposition: form-data; name="file"; filename="a b.txt"\r\n\r\nabc\r\n--XyZ--\r\n';
    const fd = await new W.Response(body, { headers: { 'content-type': 'multipart/form-data; boundary=XyZ' } }).formData();
    const f = fd.get('file');
    const ft = await f.text();
    return [fd.get('field'), f.name, f.type, ft, drain(fd.keys())];
  },
  'formdata: urlencoded request body': async (W) => {
    const req = new W.Request('http://h/', { method: 'POST', body: 'a=1&b=%20x+y&a=2', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    const fd = await req.formData();
    return drain(fd.entries());
  },
  'formdata: URLSearchParams body reads back': async (W) => {
    const fd = await new W.Response(new W.URLSearchParams('k=v&k=w')).formData();
    return fd.getAll('k');
  },
  'formdata: other content types reject with TypeError': async (W) => new W.Response('a=1').formData(),
  'formdata: a multipart preamble rejects with TypeError (as undici)': async (W) =>
    new W.Response('pre\r\n--B\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--B--\r\n', {
      headers: { 'content-type': 'multipart/form-data; boundary=B' },
    }).formData(),
  'formdata: broken multipart rejects with TypeError': async (W) =>
    new W.Response('--B\r\nno headers end', { headers: { 'content-type': 'multipart/form-data; boundary=B' } }).formData(),
  'blob: body.blob() type and bytes; a Blob body sets Content-Type': async (W) => {
    const a = await new W.Response('x', { headers: { 'content-type': 'Text/Plain; Charset=UTF-8' } }).blob();
    const b = await new W.Response(new Uint8Array([1])).blob();
    const r = new W.Response(new W.Blob(['<p>'], { type: 'text/html' }));
    const at = await a.text();
    const rt = await r.text();
    return [a.type, a.size, at, b.type, r.headers.get('content-type'), rt, a instanceof W.Blob];
  },
  // ---- Headers
  'headers: case-insensitive get/has': (W) => {
    const h = new W.Headers({ 'Content-Type': 'text/plain', 'X-A': '1' });
    return [h.get('content-type'), h.get('CONTENT-TYPE'), h.has('x-a'), h.has('x-b'), h.get('x-b')];
  },
  'headers: append joins with comma, set replaces, delete': (W) => {
    const h = new W.Headers();
    h.append('X-A', '1');
    h.append('x-a', '2');
    const joined = h.get('X-A');
    h.set('x-a', '3');
    const replaced = h.get('x-a');
    h.delete('X-A');
    return [joined, replaced, h.has('x-a')];
  },
  'headers: iteration is sorted, lowercased, combined': (W) => {
    const h = new W.Headers([['B', '2'], ['a', '1'], ['b', '3'], ['Set-Cookie', 'x=1'], ['set-cookie', 'y=2']]);
    return [drain(h.entries()), drain(h.keys()), drain(h.values()), drain(h[Symbol.iterator]())];
  },
  'headers: getSetCookie and get of set-cookie': (W) => {
    const h = new W.Headers();
    h.append('Set-Cookie', 'a=1; Path=/');
    h.append('Set-Cookie', 'b=2');
    return [h.getSetCookie(), h.get('set-cookie')];
  },
  'headers: forEach': (W) => {
    const out: any[] = [];
    new W.Headers({ b: '2', a: '1' }).forEach((v: string, k: string) => out.push(k + '=' + v));
    return out;
  },
  'headers: values are trimmed': (W) => new W.Headers({ a: '  x y \t' }).get('a'),
  'headers: a name with a space throws TypeError': (W) => new W.Headers({ 'bad name': 'x' }),
  'headers: empty name throws TypeError': (W) => new W.Headers([['', 'x']]),
  'headers: LF in value throws TypeError': (W) => new W.Headers({ a: 'x\ny' }),
  'headers: CR in value throws TypeError': (W) => new W.Headers().append('a', 'x\ry'),
  'headers: NUL in value throws TypeError': (W) => new W.Headers().set('a', 'x\0y'),
  'headers: bad pair throws TypeError': (W) => new W.Headers([['a', 'b', 'c']]),
  'headers: a character above U+00FF throws TypeError': (W) => new W.Headers({ a: 'x\u20acy' }),
  'headers: values with spaces, quotes, tabs, percent signs and latin1 keep their characters': (W) => {
    const vals = ['max-age=0, private', 'W/"0815-abc"', 'a\tb', '100%', 'caf\u00e9 cr\u00e8me', 'Tue, 01 Dec 2026 08:17:14 GMT', ''];
    const h = new W.Headers();
    for (let i = 0; i < vals.length; i++) h.append('x-' + i, vals[i]);
    const out: any[] = [];
    for (let i = 0; i < vals.length; i++) out.push(h.get('x-' + i));
    return out;
  },
  'headers: copy from Headers': (W) => {
    const a = new W.Headers({ x: '1' });
    const b = new W.Headers(a);
    a.set('x', '2');
    return b.get('x');
  },
  'headers: unusual token chars are valid names': (W) => new W.Headers({ "x-a!#$%&'*+.^_`|~": '1' }).has("X-A!#$%&'*+.^_`|~"),
  'headers: get of missing is null': (W) => new W.Headers().get('nope'),

  // ---- Request
  'request: defaults': (W) => {
    const r = new W.Request('http://example.com/a?b=1');
    return [r.method, r.url, r.body, r.bodyUsed, r.headers.get('x')];
  },
  'request: url is normalised': (W) => new W.Request('HTTP://EXAMPLE.com:80/a/../b/./c?q=a b#f').url,
  'request: method normalisation': (W) => [
    new W.Request('http://x/', { method: 'post' }).method,
    new W.Request('http://x/', { method: 'patch' }).method,
    new W.Request('http://x/', { method: 'Delete' }).method,
  ],
  'request: invalid method throws TypeError': (W) => new W.Request('http://x/', { method: 'bad method' }),
  'request: CONNECT throws TypeError': (W) => new W.Request('http://x/', { method: 'CONNECT' }),
  'request: relative url throws TypeError': (W) => new W.Request('/relative'),
  'request: GET with body throws TypeError': (W) => new W.Request('http://x/', { body: 'x' }),
  'request: text() and bodyUsed': async (W) => {
    const r = new W.Request('http://x/', { method: 'POST', body: 'héllo' });
    const before = r.bodyUsed;
    const t = await r.text();
    let second = 'ok';
    try {
      await r.text();
    } catch (e: any) {
      second = e.name;
    }
    return [before, t, r.bodyUsed, second, r.headers.get('content-type')];
  },
  'request: json()': async (W) => {
    const v = await new W.Request('http://x/', { method: 'POST', body: '{"a":[1,2]}' }).json();
    return v;
  },
  'request: bad json rejects SyntaxError': async (W) => new W.Request('http://x/', { method: 'POST', body: '{' }).json(),
  'request: arrayBuffer() and bytes from Uint8Array body': async (W) => {
    const r = new W.Request('http://x/', { method: 'PUT', body: new Uint8Array([1, 2, 3]) });
    const ab = await r.arrayBuffer();
    return [ab instanceof ArrayBuffer, Array.prototype.slice.call(new Uint8Array(ab)), r.headers.get('content-type')];
  },
  'request: URLSearchParams body': async (W) => {
    const r = new W.Request('http://x/', { method: 'POST', body: new W.URLSearchParams('a=1&b=x y') });
    const t = await r.text();
    return [t, r.headers.get('content-type')];
  },
  'request: clone reads independently': async (W) => {
    const r = new W.Request('http://x/p', { method: 'POST', body: 'abc', headers: { 'x-a': '1' } });
    const c = r.clone();
    const a = await r.text();
    const b = await c.text();
    return [a, b, c.method, c.url, c.headers.get('x-a')];
  },
  'request: from Request with init': async (W) => {
    const a = new W.Request('http://x/p', { method: 'POST', body: 'abc', headers: { 'x-a': '1' } });
    const b = new W.Request(a, { headers: { 'x-b': '2' } });
    const t = await b.text();
    return [b.url, b.method, b.headers.get('x-a'), b.headers.get('x-b'), t];
  },
  'request: headers init and mutation': (W) => {
    const r = new W.Request('http://x/', { headers: [['X-A', '1'], ['x-a', '2']] });
    r.headers.append('x-b', '3');
    return [r.headers.get('x-a'), r.headers.get('x-b')];
  },
  'request: signal and AbortController': (W) => {
    const ac = new W.AbortController();
    const seen: any[] = [];
    ac.signal.addEventListener('abort', () => seen.push('listener'));
    ac.signal.onabort = () => seen.push('onabort');
    const r = new W.Request('http://x/', { signal: ac.signal });
    const before = r.signal.aborted;
    ac.abort('why');
    ac.abort('again');
    return [before, r.signal.aborted, r.signal.reason, ac.signal.reason, seen.sort()];
  },
  'request: default signal is not aborted': (W) => {
    const s = new W.Request('http://x/').signal;
    return [s.aborted, s.reason];
  },
  'abort: default reason is an AbortError': (W) => {
    const ac = new W.AbortController();
    ac.abort();
    return [ac.signal.aborted, ac.signal.reason.name];
  },
  'abort: once listener and removeEventListener': (W) => {
    const ac = new W.AbortController();
    let n = 0;
    const f = () => n++;
    const g = () => (n += 10);
    ac.signal.addEventListener('abort', f, { once: true });
    ac.signal.addEventListener('abort', g);
    ac.signal.removeEventListener('abort', g);
    ac.abort();
    return n;
  },

  // ---- Response
  'response: defaults from string': async (W) => {
    const r = new W.Response('hi');
    const t = await r.text();
    return [r.status, r.ok, r.statusText, r.headers.get('content-type'), r.type, r.redirected, r.url, t, r instanceof W.Response];
  },
  'response: null body': async (W) => {
    const r = new W.Response(null, { status: 404, statusText: 'Nope' });
    const t = await r.text();
    return [r.status, r.ok, r.statusText, r.body, t, r.headers.get('content-type')];
  },
  'response: no-arg constructor': async (W) => {
    const r = new W.Response();
    const t = await r.text();
    return [r.status, r.body, t];
  },
  'response: status out of range throws RangeError': (W) => new W.Response('x', { status: 600 }),
  'response: status 199 throws RangeError': (W) => new W.Response('x', { status: 199 }),
  'response: 204 with body throws TypeError': (W) => new W.Response('x', { status: 204 }),
  'response: 204 without body': (W) => new W.Response(null, { status: 204 }).status,
  'response: CR/LF header throws TypeError': (W) => new W.Response('x', { headers: { 'x-a': 'a\r\nb: c' } }),
  'response: explicit content-type wins': (W) => new W.Response('x', { headers: { 'Content-Type': 'text/html' } }).headers.get('content-type'),
  'response: bytes body has no content-type': async (W) => {
    const r = new W.Response(new Uint8Array([104, 105]));
    const t = await r.text();
    return [r.headers.get('content-type'), t];
  },
  'response: ArrayBuffer body': async (W) => {
    const r = new W.Response(new Uint8Array([0, 255, 7]).buffer);
    const b = await r.arrayBuffer();
    return Array.prototype.slice.call(new Uint8Array(b));
  },
  'response: json() and bodyUsed': async (W) => {
    const r = new W.Response('{"x":1}');
    const v = await r.json();
    let again = 'ok';
    try {
      await r.json();
    } catch (e: any) {
      again = e.name;
    }
    return [v, r.bodyUsed, again];
  },
  'response: Response.json': async (W) => {
    const r = W.Response.json({ a: 1, b: 'é' }, { status: 201, headers: { 'x-a': '1' } });
    const t = await r.text();
    return [r.status, r.headers.get('content-type'), r.headers.get('x-a'), t];
  },
  'response: Response.json keeps explicit content-type': (W) =>
    W.Response.json({}, { headers: { 'content-type': 'application/vnd.x+json' } }).headers.get('content-type'),
  'response: Response.redirect': (W) => {
    const r = W.Response.redirect('http://example.com/a b', 301);
    return [r.status, r.headers.get('location'), r.body];
  },
  'response: Response.redirect default 302': (W) => W.Response.redirect('http://example.com/').status,
  'response: Response.redirect bad status throws RangeError': (W) => W.Response.redirect('http://example.com/', 200),
  'response: Response.error': (W) => {
    const r = W.Response.error();
    return [r.type, r.status, r.ok];
  },
  'response: set-cookie headers stay separate': (W) => {
    const h = new W.Headers();
    h.append('set-cookie', 'a=1');
    h.append('set-cookie', 'b=2');
    const r = new W.Response('x', { headers: h });
    return [r.headers.getSetCookie(), drain(r.headers.entries())];
  },
  'response: clone': async (W) => {
    const r = new W.Response('abc', { status: 202, headers: { 'x-a': '1' } });
    const c = r.clone();
    const a = await r.text();
    const b = await c.text();
    return [a, b, c.status, c.headers.get('x-a'), c instanceof W.Response];
  },
  'response: clone after read throws TypeError': async (W) => {
    const r = new W.Response('abc');
    await r.text();
    return r.clone();
  },
  'response: body stream of a string body': async (W) => {
    const r = new W.Response('héllo');
    const rd = r.body.getReader();
    const parts: number[] = [];
    for (;;) {
      const s = await rd.read();
      if (s.done) break;
      for (let i = 0; i < s.value.length; i++) parts.push(s.value[i]);
    }
    return [parts, r.bodyUsed];
  },
  'response: headers object is stable and mutable': (W) => {
    const r = new W.Response('x');
    r.headers.set('x-late', '1');
    return [r.headers === r.headers, r.headers.get('x-late')];
  },

  // ---- ReadableStream
  'stream: start enqueue close, reader': async (W) => {
    const s = new W.ReadableStream({
      start(c: any) {
        c.enqueue('a');
        c.enqueue('b');
        c.close();
      },
    });
    const rd = s.getReader();
    const locked = s.locked;
    const a = await rd.read();
    const b = await rd.read();
    const c = await rd.read();
    rd.releaseLock();
    return [locked, a, b, c, s.locked];
  },
  'stream: pull until close': async (W) => {
    let n = 0;
    const s = new W.ReadableStream({
      pull(c: any) {
        if (n < 3) c.enqueue(enc('p' + n++));
        else c.close();
      },
    });
    const t = await new W.Response(s).text();
    return t;
  },
  'stream: async pull with a promise': async (W) => {
    let n = 0;
    const s = new W.ReadableStream({
      pull(c: any) {
        return Promise.resolve().then(() => {
          if (n < 2) c.enqueue(enc('q' + n++));
          else c.close();
        });
      },
    });
    return new W.Response(s).text();
  },
  'stream: cancel reaches the source': async (W) => {
    const seen: any[] = [];
    const s = new W.ReadableStream({
      pull(c: any) {
        c.enqueue(enc('x'));
      },
      cancel(reason: any) {
        seen.push('cancel:' + reason);
      },
    });
    const rd = s.getReader();
    await rd.read();
    await rd.cancel('stop');
    const after = await rd.read();
    return [seen, after];
  },
  'stream: error rejects reads': async (W) => {
    const s = new W.ReadableStream({
      start(c: any) {
        c.error(new TypeError('bad'));
      },
    });
    return s.getReader().read();
  },
  'stream: second getReader throws TypeError': (W) => {
    const s = new W.ReadableStream({});
    s.getReader();
    return s.getReader();
  },
  'stream: enqueue after close throws TypeError': (W) => {
    let ctl: any;
    new W.ReadableStream({
      start(c: any) {
        ctl = c;
      },
    });
    ctl.close();
    return ctl.enqueue('x');
  },
  'stream: desiredSize': (W) => {
    let ctl: any;
    new W.ReadableStream({
      start(c: any) {
        ctl = c;
      },
    });
    const a = ctl.desiredSize;
    ctl.enqueue('x');
    const b = ctl.desiredSize;
    ctl.close();
    return [a, b, ctl.desiredSize];
  },
  'stream: locked body makes Response body unusable': async (W) => {
    const r = new W.Response(new W.ReadableStream({ start: (c: any) => c.close() }));
    r.body.getReader();
    return r.text();
  },
  'stream: response clone of a stream body': async (W) => {
    let n = 0;
    const r = new W.Response(
      new W.ReadableStream({
        pull(c: any) {
          if (n < 2) c.enqueue(enc('s' + n++));
          else c.close();
        },
      }),
    );
    const c = r.clone();
    const a = await r.text();
    const b = await c.text();
    return [a, b];
  },

  // ---- URL
  'url: components': (W) => urlParts(new W.URL('https://User:pw@Example.COM:8443/a/./b/../c?x=1&y=%20#frag')),
  'url: simple http with default port': (W) => urlParts(new W.URL('http://127.0.0.1:80/p?q=1')),
  'url: no path': (W) => urlParts(new W.URL('http://example.com')),
  'url: percent-encoding of path, query and fragment': (W) => urlParts(new W.URL('http://h/a b/é/%41?q=a b&c="x"\'#f g')),
  'url: keeps existing escapes': (W) => new W.URL('http://h/a%2Fb%20c?x=%26').href,
  'url: backslashes in special URLs': (W) => new W.URL('http:\\\\h\\a\\b').href,
  'url: IPv6 host': (W) => urlParts(new W.URL('http://[::1]:8080/x')),
  'url: relative resolution': (W) => [
    new W.URL('c/d?e', 'http://h/a/b').href,
    new W.URL('/x', 'http://h/a/b').href,
    new W.URL('?q', 'http://h/a/b?old#f').href,
    new W.URL('#frag', 'http://h/a/b?q').href,
    new W.URL('//other/p', 'https://h/a').href,
    new W.URL('../up', 'http://h/a/b/c').href,
    new W.URL('https://abs/', 'http://h/').href,
  ],
  'url: invalid throws TypeError': (W) => new W.URL('not a url'),
  'url: port out of range throws TypeError': (W) => new W.URL('http://h:70000/'),
  'url: empty host throws TypeError': (W) => new W.URL('http:///'),
  'url: non-special schemes': (W) => [new W.URL('mailto:a@b.c').href, new W.URL('mailto:a@b.c').pathname, new W.URL('foo://host/p?q').host],
  'url: setters': (W) => {
    const u = new W.URL('http://h/p?a=1#x');
    u.pathname = '/new path';
    u.search = '?b=2 3';
    u.hash = 'y';
    const one = u.href;
    u.port = '8080';
    u.hostname = 'other';
    u.protocol = 'https';
    return [one, u.href, u.host, String(u), JSON.stringify({ u })];
  },
  'url: searchParams is live': (W) => {
    const u = new W.URL('http://h/p?a=1&b=2');
    const sp = u.searchParams;
    sp.append('c', 'x y');
    sp.delete('a');
    const after = u.href;
    u.search = '?z=9';
    return [after, sp.get('z'), sp.get('b')];
  },
  'url: origin of non-http': (W) => [new W.URL('file:///etc/x').origin, new W.URL('file:///etc/x').href, new W.URL('ws://h:80/').origin],

  // ---- URLSearchParams
  'usp: parse repeated keys, +, escapes': (W) => {
    const sp = new W.URLSearchParams('?a=1&b=x+y&a=%C3%A9&c&=e&d=%zz');
    return [sp.getAll('a'), sp.get('b'), sp.get('c'), sp.get(''), sp.get('d'), sp.get('missing'), sp.has('a'), sp.size];
  },
  'usp: append, set, delete and has with a value': (W) => {
    const sp = new W.URLSearchParams('a=1&a=2&b=3');
    sp.append('a', '4');
    const h = [sp.has('a', '2'), sp.has('a', '9')];
    sp.delete('a', '2');
    const afterDel = sp.toString();
    sp.set('a', '5');
    return [h, afterDel, sp.toString()];
  },
  'usp: toString encoding': (W) => new W.URLSearchParams({ 'a b': "x&y=z ~!*'()é/?", c: '+' }).toString(),
  'usp: init from pairs and from URLSearchParams': (W) => {
    const a = new W.URLSearchParams([['x', '1'], ['x', '2']]);
    const b = new W.URLSearchParams(a);
    a.append('y', '3');
    return [a.toString(), b.toString()];
  },
  'usp: bad pair throws TypeError': (W) => new W.URLSearchParams([['a']]),
  'usp: sort is stable': (W) => {
    const sp = new W.URLSearchParams('z=1&a=2&z=0&a=1');
    sp.sort();
    return sp.toString();
  },
  'usp: iteration and forEach': (W) => {
    const sp = new W.URLSearchParams('a=1&b=2&a=3');
    const f: any[] = [];
    sp.forEach((v: string, k: string) => f.push(k + v));
    return [drain(sp.entries()), drain(sp.keys()), drain(sp.values()), drain(sp[Symbol.iterator]()), f];
  },
};

async function runOne(name: string, W: WebImpls): Promise<[string, unknown]> {
  try {
    const v = await cases[name]!(W);
    return [name, { v: normalise(v) }];
  } catch (e: any) {
    return [name, { e: e && e.name ? e.name : String(e) }];
  }
}

/**
 * Runs every case; a case's outcome is { v: value } or { e: errorName }.
 * Returns [name, outcome] pairs. (No block-scoped variable lives across the
 * await inside the loop: njs 0.7.9 restores a wrong one after the await.)
 */
export async function probe(W: WebImpls): Promise<Array<[string, unknown]>> {
  const out: Array<[string, unknown]> = [];
  const names = Object.keys(cases);
  let pair: [string, unknown];
  for (let i = 0; i < names.length; i++) {
    pair = await runOne(names[i]!, W);
    out.push(pair);
  }
  return out;
}

/** JSON-comparable form (Uint8Arrays and other views become number arrays). */
function normalise(v: any): any {
  if (v === undefined) return '<undefined>';
  if (v === null || typeof v !== 'object') return v;
  if (ArrayBuffer.isView(v)) return Array.prototype.slice.call(v);
  if (Array.isArray(v)) return v.map(normalise);
  const keys = Object.keys(v);
  const o: any = {};
  for (let i = 0; i < keys.length; i++) o[keys[i]!] = normalise(v[keys[i]!]);
  return o;
}
