// The request URL the worker gives the handler: core's requestAuthority on the decoded REQUEST.
import { describe, expect, it } from 'vitest';
import { requestAuthority } from '@tsgi/core';
import { MsgType, decodePayload, encodeRequest, type RequestInit, type RequestMsg } from '../src/protocol.js';
import { requestTarget, targetUrl } from '../src/request.js';

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

  // requestTarget remembers the last accepted Host of an origin-form target: the answers must still be
  // core's for every request of a sequence that alternates good, refused and padded Hosts.
  it('answers as requestAuthority for each request of a mixed sequence (the remembered Host never leaks)', () => {
    const seq: [string, string, string][] = [
      ['/a', 'app.example', 'HTTP/1.1'], ['/b', 'bad host', 'HTTP/1.1'], ['/c', 'app.example', 'HTTP/1.1'],
      ['/d', 'bad host', 'HTTP/1.0'], ['/e', ' app.example ', 'HTTP/1.1'], ['/f', 'app.example', 'HTTP/1.1'],
      ['http://x.example/g', 'app.example', 'HTTP/1.1'], ['/h', 'a@b', 'HTTP/1.1'], ['/i', 'other.example:81', 'HTTP/1.0'],
      ['/j', 'app.example', 'HTTP/1.1'], ['/k', '', 'HTTP/1.1'], ['/l', '', 'HTTP/1.1'],
    ];
    for (const [uri, host, protocol] of seq) {
      const frame = encodeRequest({ ...base, uri, host, protocol });
      const m = decodePayload(MsgType.REQUEST, 0, frame, 8, frame.length) as RequestMsg;
      expect(requestTarget(m)).toEqual(requestAuthority(uri, [host], protocol === 'HTTP/1.0', host));
    }
  });
});
