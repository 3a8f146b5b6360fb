// The worker's hot-path REQUEST decoder agrees with protocol.ts's decodePayload on random
// messages, and refuses every truncation the same way.
import { describe, expect, it } from 'vitest';
import { MsgType, ProtocolError, decodePayload, encodeRequest, type RequestInit, type RequestMsg } from '../src/protocol.js';
import { requestTarget, targetUrl } from '../src/request.js';
import { decodeRequestFrame } from '../src/worker.js';

let seed = 42;
const rnd = (n: number) => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
};
const str = (n: number, max = 256) => String.fromCharCode(...Array.from({ length: rnd(n) }, () => rnd(max)));

function message(): RequestInit {
  const phase = rnd(4) as RequestInit['phase'];
  return {
    phase,
    clientPort: rnd(65536),
    serverPort: rnd(65536),
    contentLength: rnd(3) ? rnd(1e9) : -1,
    startUs: 1_700_000_000_000_000 + rnd(1e9),
    method: str(8),
    uri: str(60),
    protocol: 'HTTP/1.1',
    scheme: rnd(2) ? 'http' : 'https',
    host: str(20),
    clientIp: str(15),
    serverIp: str(15),
    user: str(10, 0xd000),
    id: str(24, 128),
    basePath: str(12),
    headers: Array.from({ length: rnd(6) * 2 }, (_, j) => str(j % 2 ? 300 : 20)),
    tls: rnd(2) === 1,
    hasBody: rnd(2) === 1,
    authnDone: rnd(2) === 1,
    authzDone: rnd(2) === 1,
    log: phase === 3 ? { status: rnd(600), bytes: rnd(1e9), durationUs: rnd(1e9) } : undefined,
  };
}

describe('worker REQUEST decoder', () => {
  it('decodes exactly what decodePayload decodes', () => {
    for (let i = 0; i < 3000; i++) {
      const f = encodeRequest(message());
      const want = decodePayload(0x02, 0, f, 8, f.length) as unknown as Record<string, unknown>;
      const got = decodeRequestFrame(f, 8, f.length) as unknown as Record<string, unknown>;
      for (const k of Object.keys(want)) expect(got[k], k).toEqual(want[k]);
    }
  });

  it('refuses truncated and padded payloads', () => {
    for (let i = 0; i < 1000; i++) {
      const f = encodeRequest(message());
      const cut = 8 + rnd(f.length - 8);
      expect(() => decodeRequestFrame(f, 8, cut)).toThrow(ProtocolError);
      const padded = Buffer.concat([f, Buffer.from([0])]);
      expect(() => decodeRequestFrame(padded, 8, padded.length)).toThrow(ProtocolError);
    }
  });

  it('refuses a bad phase and unknown flags', () => {
    const f = encodeRequest(message());
    const badPhase = Buffer.from(f);
    badPhase[8] = 4;
    expect(() => decodeRequestFrame(badPhase, 8, badPhase.length)).toThrow(ProtocolError);
    const badFlags = Buffer.from(f);
    badFlags[9] = 0x10;
    expect(() => decodeRequestFrame(badFlags, 8, badFlags.length)).toThrow(ProtocolError);
  });
});

describe('the request URL the worker gives the handler (core requestAuthority)', () => {
  const msg = (uri: string, host: string, scheme = 'http') => {
    const frame = encodeRequest({ ...base, uri, host, scheme });
    return decodePayload(MsgType.REQUEST, 0, frame, 8, frame.length) as RequestMsg;
  };
  const base: RequestInit = {
    phase: 0, clientPort: 1, serverPort: 80, contentLength: 0, startUs: 1, method: 'GET', uri: '/', protocol: 'HTTP/1.1',
    scheme: 'http', host: 'h', clientIp: '127.0.0.1', serverIp: '127.0.0.1', user: '', id: 'x', basePath: '', headers: [],
  };

  it.each([
    ['/a?b=1', 'app.example:8080', 'http', 'http://app.example:8080/a?b=1'],
    ['/a', 'app.example', 'https', 'https://app.example/a'],
    // The scheme is the connection's, never the client's.
    ['https://app.example/a', 'app.example', 'http', 'http://app.example/a'],
    ['http://app.example/a', 'app.example', 'https', 'https://app.example/a'],
    // The authority of an absolute-form target wins over Host.
    ['http://other.example:81/x?y', 'app.example', 'http', 'http://other.example:81/x?y'],
    ['*', 'app.example', 'http', 'http://app.example/*'],
  ])('%s with Host %s over %s is %s', (uri, host, scheme, url) => {
    const m = msg(uri, host, scheme);
    const t = requestTarget(m);
    expect('status' in t ? t : targetUrl(m, t)).toBe(url);
  });

  it.each([
    ['http://user@app.example/', 'app.example', /userinfo/],
    ['http://app example/', 'app.example', /malformed authority/],
    ['/', 'app.example/x', /malformed Host/],
    ['/', 'a@b', /malformed Host/],
  ])('%s with Host %s is refused with 400', (uri, host, reason) => {
    const r = requestTarget(msg(uri, host));
    expect(r).toMatchObject({ status: 400 });
    expect((r as { reason: string }).reason).toMatch(reason);
  });
});
