/**
 * What the bridge reads from nginx about a request beyond the usual request's
 * path: the request line and Host checked with core wire.ts requestAuthority,
 * the header list, the environment. Built on first use in a request.
 */
import { requestAuthority } from '@tsgi/core/src/wire.js';
import type { HeaderList, NjsRequest } from './types.js';

/** A request's authority and origin-form path (wire.ts requestAuthority), or its refusal. */
export type Authority = { authority: string; path: string; absolute: boolean } | { status: 400; reason: string };

export interface Incoming {
  /**
   * wire.ts requestAuthority on the request line and Host: an absolute-form
   * target's authority wins over Host, userinfo or a malformed authority is
   * refused. $request_uri drops an absolute-form target's authority, so the
   * target comes from the request line.
   */
  checkAuthority(r: NjsRequest): Authority;
  /**
   * The header list of r.rawHeadersIn, repeats kept. With `authority` (an
   * absolute-form target's), Host is that authority, as RFC 9112 3.2.2 says.
   */
  headerList(r: NjsRequest, authority: string | null): HeaderList;
  /** A copy of process.env (njs sees only the variables listed with `env NAME;`). */
  environment(): Record<string, string | undefined>;
}

let built: Incoming | null = null;

export function incoming(): Incoming {
  if (built !== null) return built;
  function checkAuthority(r: NjsRequest): Authority {
    const v = r.variables;
    const line = String(v.request || '');
    const sp = line.indexOf(' ');
    const end = line.lastIndexOf(' ');
    const target = end > sp ? line.slice(sp + 1, end) : line.slice(sp + 1);
    const host = r.headersIn.Host as string | undefined; // nginx itself refuses a second Host line
    const http10 = r.httpVersion !== '1.1';
    let fallback = '';
    if (host === undefined && http10) {
      // HTTP/1.0 without Host: the server's own address.
      const addr = String(v.server_addr || '127.0.0.1');
      fallback = (addr.indexOf(':') >= 0 ? '[' + addr + ']' : addr) + ':' + String(v.server_port);
    }
    const a = requestAuthority(target, host === undefined ? [] : [host], http10, fallback);
    if ('status' in a) return a;
    return { authority: a.authority, path: a.path, absolute: target.charCodeAt(0) !== 47 && a.authority !== host && a.authority !== fallback };
  }
  /**
   * njs hands header bytes over as byte strings (a byte per character as far as
   * charCodeAt goes, raw bytes when the string is written out); each byte
   * becomes the character of that code, as Node reads headers (latin1). One
   * join, one conversion and one split for the whole list: values never hold LF.
   */
  function headerList(r: NjsRequest, authority: string | null): HeaderList {
    const raw = r.rawHeadersIn as unknown as string[][];
    let l: HeaderList = [];
    for (let i = 0; i < raw.length; i++) l.push(String(raw[i][0]).toLowerCase(), String(raw[i][1]));
    if (l.length > 0) {
      const joined = l.join('\n') as NjsByteString;
      const text = typeof joined.fromBytes === 'function' ? joined.fromBytes() : joined;
      if (text !== joined) {
        l = text.split('\n');
        if (Buffer.byteLength(text) !== text.length) l._latin1 = true;
      }
    }
    if (authority !== null) {
      let found = false;
      for (let j = 0; j < l.length; j += 2) {
        if (l[j] !== 'host') continue;
        l[j + 1] = authority;
        found = true;
      }
      if (!found) l.push('host', authority);
    }
    return l;
  }
  let env: Record<string, string | undefined> | null = null;
  function environment(): Record<string, string | undefined> {
    if (env === null) {
      env = {};
      try {
        const pe = (globalThis as { process?: { env?: Record<string, string> } }).process;
        if (pe && pe.env) {
          const keys = Object.keys(pe.env);
          for (let i = 0; i < keys.length; i++) env[keys[i]] = pe.env[keys[i]];
        }
      } catch (_e) {
        /* no process object */
      }
    }
    return env;
  }
  built = { checkAuthority: checkAuthority, headerList: headerList, environment: environment };
  return built;
}
