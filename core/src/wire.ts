/**
 * The wire rules every tsgi writer follows, on every host: which headers are
 * the server's, when a body may be sent, how long a stream's head waits, what
 * a header may hold, and how the request URL is formed from the request line.
 *
 * Written for every runtime tsgi has, the njs 0.7.9 bundle included: only
 * function declarations and primitives at the top level (njs re-runs a
 * module's top level per request, so a load-time object is a per-request
 * cost; a primitive memo just starts empty there), no classes, Map/Set or for-of.
 */

/** The bare bodies of the responses tsgi itself produces. */
export const INTERNAL_ERROR_TEXT = 'Internal Server Error\n';
export const FORBIDDEN_TEXT = 'Forbidden\n';
export const BAD_REQUEST_TEXT = 'Bad Request\n';
export const PLAIN_TEXT_TYPE = 'text/plain;charset=UTF-8';

/**
 * How long a stream's head waits for the first chunk. A stream that fails at
 * once still gets a clean 500; one that waits (SSE) gets its head promptly.
 */
export const FIRST_CHUNK_WAIT_MS = 10;

/**
 * Framing is the server's job (RFC 9110 7.6.1): a handler's value for one of
 * these (lower-case name) is never sent.
 */
export function isHopByHop(lowerName: string): boolean {
  switch (lowerName) {
    case 'connection':
    case 'keep-alive':
    case 'proxy-connection':
    case 'transfer-encoding':
    case 'upgrade':
    case 'te':
    case 'trailer':
      return true;
  }
  return false;
}

/** Bodies are forbidden for these statuses (RFC 9110 6.4.1, 15.3.5, 15.4.5). */
export function statusHasNoBody(status: number): boolean {
  return status === 204 || status === 304 || (status >= 100 && status < 200);
}

/** Whether body bytes go on the wire for this request method and response status. */
export function sendsBody(method: string, status: number): boolean {
  return method !== 'HEAD' && !statusHasNoBody(status);
}

/**
 * What becomes of a handler's Content-Length. Fixed bodies (string, bytes,
 * none) always carry the server's own count; a stream keeps a declared length
 * (and is cut if it delivers another); 204 and 1xx carry none; a 304 keeps the
 * handler's (it describes the representation, RFC 9110 8.6).
 *   'server': drop the handler's, send the server's count
 *   'handler': keep the handler's (a stream: cut the connection on a mismatch)
 *   'none': drop it and send none
 */
export function contentLengthRule(status: number, fixedBody: boolean): 'server' | 'handler' | 'none' {
  if (status === 304) return 'handler';
  if (statusHasNoBody(status)) return 'none';
  return fixedBody ? 'server' : 'handler';
}

/**
 * The most response headers a handler may send: lines, and bytes counted as
 * name + value + 4 (": " and CRLF) per line. Past either, the response is the
 * bare 500 on every host, so a handler cannot make a server write (or stall
 * on) an unbounded header block. Node's own limit for request headers is 16 KiB.
 */
export const MAX_RESPONSE_HEADERS = 1000;
export const MAX_RESPONSE_HEADER_BYTES = 65536;

/** Whether a flat [name, value, ...] header list stays within the limits above. */
export function headersFit(flat: readonly string[]): boolean {
  const n = flat.length;
  if (n > 2 * MAX_RESPONSE_HEADERS) return false;
  let bytes = 2 * n;
  for (let i = 0; i < n; i++) bytes += flat[i]!.length;
  return bytes <= MAX_RESPONSE_HEADER_BYTES;
}

/** RFC 9110 token (a header name, a method). */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 97 && c <= 122) continue; // a-z
    if (c >= 65 && c <= 90) continue; // A-Z
    if (c >= 48 && c <= 57) continue; // 0-9
    switch (c) {
      case 33: case 35: case 36: case 37: case 38: case 39: case 42: // ! # $ % & ' *
      case 43: case 45: case 46: case 94: case 95: case 96: case 124: case 126: // + - . ^ _ ` | ~
        continue;
    }
    return false;
  }
  return true;
}

/**
 * A header value tsgi sends: HTAB, SP, visible ASCII and obs-text (U+0080 to
 * U+00FF, sent as the single byte, as WebIDL's ByteString does). Control
 * characters, DEL and anything above U+00FF make the response a bare 500 on
 * every host. `value` is already trimmed of leading and trailing whitespace.
 */
export function isFieldValue(value: string): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c >= 32 && c < 127) continue;
    if (c === 9 || (c >= 128 && c <= 255)) continue;
    return false;
  }
  return true;
}

/** True when every character is ASCII (then the value's bytes are the same in latin1 and UTF-8). */
export function isAscii(value: string): boolean {
  for (let i = 0; i < value.length; i++) if (value.charCodeAt(i) > 127) return false;
  return true;
}

/** A reason phrase tsgi sends as given: HTAB, SP, VCHAR, obs-text (RFC 9112 4). */
export function isReasonPhrase(text: string): boolean {
  return isFieldValue(text);
}

// ---------------------------------------------------------------- request URL

/** Why a request line cannot make a request URL: the host answers 400 with this in its log. */
export interface UrlRefusal {
  status: 400;
  reason: string;
}

/** The last authority isAuthority accepted: a keep-alive client sends the same Host on every request. */
let lastAuthority = '\u0000';

/**
 * The authority as a client may send it (RFC 9112 3.2, RFC 3986 3.2.2/3.2.3):
 * a reg-name, IPv4 or bracketed IPv6 literal, optional :port. No userinfo, no
 * path, no whitespace.
 */
export function isAuthority(a: string): boolean {
  if (a === lastAuthority) return true;
  if (a.length === 0 || a.length > 255) return false;
  let i = 0;
  if (a.charCodeAt(0) === 91 /* [ */) {
    const close = a.indexOf(']');
    if (close < 2) return false;
    for (let j = 1; j < close; j++) {
      const c = a.charCodeAt(j);
      const hex = (c >= 48 && c <= 57) || (c >= 97 && c <= 102) || (c >= 65 && c <= 70);
      if (!hex && c !== 58 /* : */ && c !== 46 /* . */) return false;
    }
    i = close + 1;
  } else {
    for (; i < a.length; i++) {
      const c = a.charCodeAt(i);
      if (c === 58 /* : */) break;
      const ok =
        (c >= 97 && c <= 122) || (c >= 65 && c <= 90) || (c >= 48 && c <= 57) || c === 45 || c === 46 || c === 95 || c === 126;
      if (!ok) return false;
    }
    if (i === 0) return false;
  }
  if (i === a.length) {
    lastAuthority = a;
    return true;
  }
  if (a.charCodeAt(i) !== 58) return false;
  if (a.length - i - 1 > 5) return false;
  // The port's digits read in place (an empty port is allowed).
  let port = 0;
  for (let j = i + 1; j < a.length; j++) {
    const c = a.charCodeAt(j);
    if (c < 48 || c > 57) return false;
    port = port * 10 + (c - 48);
  }
  if (port > 65535) return false;
  lastAuthority = a;
  return true;
}

/**
 * The authority and origin-form target of a request, the same way on every
 * host (RFC 9112 3.2 and 3.2.2):
 * - absolute-form (`GET http://a.example/x`): the authority is the target's;
 *   its scheme is ignored (the scheme is the connection's, never the client's
 *   say-so);
 * - origin-form: the authority is the Host header;
 * - exactly one Host header on HTTP/1.1 (none on HTTP/1.0 takes `fallback`);
 *   a second Host, userinfo, or a malformed authority is refused (400).
 * `hosts` are the values of every Host header line received.
 */
export function requestAuthority(
  target: string,
  hosts: readonly string[],
  http10: boolean,
  fallback: string,
): { authority: string; path: string } | UrlRefusal {
  if (hosts.length > 1) return { status: 400, reason: 'more than one Host header' };
  let host = hosts.length === 1 ? hosts[0]! : undefined;
  // Trimmed only when it needs it (no new string in the usual case; no extra top-level function for njs).
  if (host !== undefined && host.length > 0 && (host.charCodeAt(0) <= 32 || host.charCodeAt(host.length - 1) <= 32)) host = host.trim();
  if (host === undefined && !http10) return { status: 400, reason: 'no Host header' };
  if (host !== undefined && !isAuthority(host)) return { status: 400, reason: 'malformed Host header' };
  const c0 = target.charCodeAt(0);
  if (c0 === 47 /* / */) return { authority: host ?? fallback, path: target };
  const lower = target.slice(0, 8).toLowerCase();
  const skip = lower.indexOf('http://') === 0 ? 7 : lower.indexOf('https://') === 0 ? 8 : -1;
  if (skip < 0) {
    // asterisk-form (OPTIONS *) and anything else becomes a path under the Host
    return { authority: host ?? fallback, path: '/' + target };
  }
  let end = skip;
  while (end < target.length) {
    const c = target.charCodeAt(end);
    if (c === 47 || c === 63 || c === 35) break; // / ? #
    end++;
  }
  const authority = target.slice(skip, end);
  if (authority.indexOf('@') >= 0) return { status: 400, reason: 'userinfo in the request target' };
  if (!isAuthority(authority)) return { status: 400, reason: 'malformed authority in the request target' };
  const rest = target.slice(end);
  return { authority, path: rest.charCodeAt(0) === 47 ? rest : '/' + rest };
}

/**
 * The mount prefix (ctx.basePath) of a location: the path without its trailing
 * slashes, `''` for `/`. `/app` and `/app/` both mount at `/app`.
 */
export function mountPrefix(location: string): string {
  let end = location.length;
  while (end > 0 && location.charCodeAt(end - 1) === 47) end--;
  return location.slice(0, end);
}

/**
 * Whether a request path (the target's path, before any `?`) is inside the
 * mount `prefix` (a mountPrefix result): the prefix itself or below it, on a
 * segment boundary (`/app`, `/app/x`; never `/apps`).
 */
export function insideMount(path: string, prefix: string): boolean {
  if (prefix === '') return true;
  if (path.length < prefix.length || path.slice(0, prefix.length) !== prefix) return false;
  const next = path.charCodeAt(prefix.length);
  // end of the path, '/', or the start of the query
  return path.length === prefix.length || next === 47 || next === 63;
}
