/**
 * URL and URLSearchParams: WHATWG parsing for http(s)/ws(s)/ftp/file and
 * opaque schemes (no IDNA, no IPv4 number forms), a regex-free fast path for
 * plain http(s) URLs, and application/x-www-form-urlencoded for the params.
 * A URL keeps its parts in `_record`; its searchParams (`_params`) stay live.
 */
import { shared } from './shared.js';

/** A parsed URL: the parts the standard keeps. `path` is one string (joined segments). */
export interface UrlRecord {
  protocol: string;
  username: string;
  password: string;
  hostname: string;
  port: string;
  path: string;
  query: string | null;
  fragment: string | null;
  opaque: boolean;
}

let urlInstalled = false;
let paramsInstalled = false;

export function URL(this: UrlObject, url: unknown, base?: unknown): void {
  if (!(this instanceof (URL as unknown as new () => UrlObject))) throw new TypeError("Failed to construct 'URL': Please use the 'new' operator");
  if (!urlInstalled) urlInternals().install();
  let b: UrlRecord | null = null;
  if (base !== undefined) b = base instanceof (URL as unknown as new () => UrlObject) ? base._record : urlInternals().parseURL(String(base), null);
  this._record = urlInternals().parseURL(String(url), b);
  this._params = null;
}

export function URLSearchParams(this: ParamsObject, init?: unknown): void {
  if (!(this instanceof (URLSearchParams as unknown as new () => ParamsObject))) throw new TypeError("Failed to construct 'URLSearchParams'");
  if (!paramsInstalled) urlInternals().installParams();
  this._url = null;
  let l: string[] = [];
  let i: number;
  if (init == null) {
    /* empty */
  } else if (init instanceof (URLSearchParams as unknown as new () => ParamsObject)) l = init._list.slice(0);
  else if (typeof init === 'object' || typeof init === 'function') {
    const o = init as Record<string, unknown>;
    const pairs = shared().pairsOf(o, 'Each query pair must be an iterable [name, value] tuple');
    if (pairs) {
      for (i = 0; i < pairs.length; i++) l.push(urlInternals().usv(pairs[i][0]), urlInternals().usv(pairs[i][1]));
    } else {
      const keys = Object.keys(o);
      for (i = 0; i < keys.length; i++) l.push(urlInternals().usv(keys[i]), urlInternals().usv(o[keys[i]]));
    }
  } else {
    let s = urlInternals().usv(init);
    if (s[0] === '?') s = s.slice(1);
    l = urlInternals().parsePairs(s);
  }
  this._list = l;
}

interface UrlObject {
  _record: UrlRecord;
  _params: ParamsObject | null;
}

interface ParamsObject {
  _list: string[];
  _url: UrlObject | null;
}

export interface UrlInternals {
  specialPort(protocol: string): number | undefined;
  parseURL(input: string, base: UrlRecord | null): UrlRecord;
  hrefOf(rec: UrlRecord): string;
  install(): void;
  installParams(): void;
  parsePairs(s: string): string[];
  usv(x: unknown): string;
}

let internals: UrlInternals | null = null;

/** The URL parser and the prototypes, built on first use in a request. */
export function urlInternals(): UrlInternals {
  if (internals !== null) return internals;
  /** Default port of a special scheme, 0 for file:, undefined for non-special schemes. */
  function specialPort(protocol: string): number | undefined {
    switch (protocol) {
      case 'http:':
      case 'ws:':
        return 80;
      case 'https:':
      case 'wss:':
        return 443;
      case 'ftp:':
        return 21;
      case 'file:':
        return 0;
    }
    return undefined;
  }
  /** Percent-encodes what `keep` does not match, as UTF-8. */
  function pctEncode(s: string, set: string): string {
    if (s === '') return s;
    // Fast path (no regex): encodeURI leaves only ASCII alphanumerics and -_.!~*'();/?:@&=+$,#
    // alone, and none of those need encoding in these sets except ' (special query)
    // and the delimiters of the userinfo set.
    if (set !== 'user') {
      let plain = false;
      try {
        plain = encodeURI(s) === s;
      } catch (_e) {
        /* lone surrogate */
      }
      if (plain && (set !== 'squery' || s.indexOf("'") < 0)) return s;
    }
    const bad = encSet(set);
    if (!bad.test(s)) return s;
    let out = '';
    for (let i = 0; i < s.length; i++) {
      const ch = s[i];
      const code = s.charCodeAt(i);
      if (code >= 0xd800 && code <= 0xdbff && i + 1 < s.length) {
        out += encodeURIComponent(s.slice(i, i + 2));
        i++;
      } else if (code >= 0xd800 && code <= 0xdfff) out += '%EF%BF%BD';
      else if (bad.test(ch)) out += code < 0x80 ? '%' + (code < 16 ? '0' : '') + code.toString(16).toUpperCase() : encodeURIComponent(ch);
      else out += ch;
    }
    return out;
  }
  // WHATWG percent-encode sets, as "must encode" classes (plus non-ASCII), built
  // only when a slow-path URL needs them.
  function encSet(name: string): RegExp {
    switch (name) {
      case 'path':
        return /[\0-\x20"#<>?`{}\x7f-\uffff]/;
      case 'query':
        return /[\0-\x20"#<>\x7f-\uffff]/;
      case 'squery':
        return /[\0-\x20"#<>'\x7f-\uffff]/;
      case 'frag':
        return /[\0-\x20"<>`\x7f-\uffff]/;
      case 'user':
        return /[\0-\x20"#<>?`{}/:;=@[\\\]^|\x7f-\uffff]/;
    }
    return /[\0-\x1f\x7f-\uffff]/;
  }
  function normPath(segs: string[], special: boolean): string[] {
    const out: string[] = [];
    for (let i = 0; i < segs.length; i++) {
      const s = segs[i];
      const l = s.toLowerCase();
      const last = i === segs.length - 1;
      if (l === '..' || l === '.%2e' || l === '%2e.' || l === '%2e%2e') {
        if (out.length) out.pop();
        if (last) out.push('');
      } else if (l === '.' || l === '%2e') {
        if (last) out.push('');
      } else out.push(pctEncode(s, 'path'));
    }
    if (special && !out.length) out.push('');
    return out;
  }
  function parseHost(h: string, special: boolean): string {
    if (h === '') {
      if (special) throw new TypeError('Invalid URL');
      return '';
    }
    if (h[0] === '[') {
      if (h[h.length - 1] !== ']' || !/^\[[0-9a-fA-F:.]+\]$/.test(h)) throw new TypeError('Invalid URL');
      return h.toLowerCase();
    }
    if (!special) return pctEncode(h, 'c0');
    let d: string;
    try {
      d = decodeURIComponent(h);
    } catch (_e) {
      throw new TypeError('Invalid URL');
    }
    d = d.toLowerCase();
    if (/[\0\t\n\r #/:<>?@[\\\]^|%]/.test(d) || /[^\x00-\x7f]/.test(d)) throw new TypeError('Invalid URL');
    // IPv4 in the common dotted-decimal form; anything else numeric-looking is left as a name.
    return d;
  }
  /**
   * Parses an absolute URL, or `input` against `base`, into the record
   * { protocol, username, password, hostname, port, path (string), query (null|string), fragment }.
   */
  function parseURL(input: string, base: UrlRecord | null): UrlRecord {
    const fast = fastURL(input);
    if (fast !== null) return fast;
    let s = input.replace(/^[\0-\x20]+|[\0-\x20]+$/g, '').replace(/[\t\n\r]/g, '');
    const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*):/.exec(s);
    let rec: UrlRecord;
    if (m) {
      const protocol = m[1].toLowerCase() + ':';
      const special = specialPort(protocol) !== undefined;
      s = s.slice(m[0].length);
      if (special) s = s.replace(/\\/g, '/');
      if (special && base && base.protocol === protocol && s.slice(0, 2) !== '//') {
        return resolveRelative(s, base);
      }
      rec = { protocol: protocol, username: '', password: '', hostname: '', port: '', path: '', query: null, fragment: null, opaque: false };
      if (protocol === 'file:') {
        if (s.slice(0, 2) !== '//') s = '//' + s;
      } else if (special) s = s.replace(/^\/*/, '//');
      if (s.slice(0, 2) === '//') {
        s = s.slice(2);
        let end = s.search(/[/?#]/);
        if (end < 0) end = s.length;
        let auth = s.slice(0, end);
        s = s.slice(end);
        const at = auth.lastIndexOf('@');
        if (at >= 0) {
          const cred = auth.slice(0, at);
          auth = auth.slice(at + 1);
          const colon = cred.indexOf(':');
          rec.username = pctEncode(colon >= 0 ? cred.slice(0, colon) : cred, 'user');
          rec.password = colon >= 0 ? pctEncode(cred.slice(colon + 1), 'user') : '';
        }
        let portStr: string | null = null;
        if (auth[0] === '[') {
          const close = auth.indexOf(']');
          if (close < 0) throw new TypeError('Invalid URL');
          const rest = auth.slice(close + 1);
          if (rest !== '') {
            if (rest[0] !== ':') throw new TypeError('Invalid URL');
            portStr = rest.slice(1);
          }
          auth = auth.slice(0, close + 1);
        } else {
          const c = auth.indexOf(':');
          if (c >= 0) {
            portStr = auth.slice(c + 1);
            auth = auth.slice(0, c);
          }
        }
        if (portStr !== null && portStr !== '') {
          if (!/^[0-9]+$/.test(portStr)) throw new TypeError('Invalid URL');
          const port = parseInt(portStr, 10);
          if (port > 65535) throw new TypeError('Invalid URL');
          rec.port = specialPort(protocol) === port ? '' : String(port);
        }
        if (protocol === 'file:' && auth.toLowerCase() === 'localhost') auth = '';
        if (protocol !== 'file:' && special && auth === '') throw new TypeError('Invalid URL');
        rec.hostname = parseHost(auth, special && protocol !== 'file:');
      } else if (!special) {
        if (s[0] !== '/') rec.opaque = true;
      }
      splitRest(rec, s, special);
      return rec;
    }
    if (!base) throw new TypeError('Invalid URL');
    if (specialPort(base.protocol) !== undefined) s = s.replace(/\\/g, '/');
    if (s.slice(0, 2) === '//') return parseURL(base.protocol + s, null);
    return resolveRelative(s, base);
  }
  /**
   * The common case without regexes: http(s)://host[:port]/path[?query][#fragment]
   * where nothing needs percent-encoding, lower-casing or dot-segment removal.
   * Anything else (returns null) takes the full parser.
   */
  function fastURL(s: string): UrlRecord | null {
    let i: number;
    let protocol: string;
    if (s.slice(0, 7) === 'http://') {
      protocol = 'http:';
      i = 7;
    } else if (s.slice(0, 8) === 'https://') {
      protocol = 'https:';
      i = 8;
    } else return null;
    try {
      if (encodeURI(s) !== s) return null; // %, spaces, controls, non-ASCII, \ [ ] ^ | { } < > " `
    } catch (_e) {
      return null;
    }
    let end = s.length;
    const a = s.indexOf('/', i);
    const b = s.indexOf('?', i);
    const c = s.indexOf('#', i);
    if (a >= 0) end = a;
    if (b >= 0 && b < end) end = b;
    if (c >= 0 && c < end) end = c;
    let host = s.slice(i, end);
    if (host === '' || host.indexOf('@') >= 0) return null;
    let port = '';
    const colon = host.indexOf(':');
    if (colon >= 0) {
      port = host.slice(colon + 1);
      host = host.slice(0, colon);
      if (port !== '') {
        const n = parseInt(port, 10);
        if (String(n) !== port || n > 65535) return null;
        if (n === (protocol === 'http:' ? 80 : 443)) port = '';
      }
      if (host === '') return null;
    }
    if (host.toLowerCase() !== host) return null;
    let rest = s.slice(end);
    let fragment: string | null = null;
    let query: string | null = null;
    const h = rest.indexOf('#');
    if (h >= 0) {
      fragment = rest.slice(h + 1);
      rest = rest.slice(0, h);
    }
    const q = rest.indexOf('?');
    if (q >= 0) {
      query = rest.slice(q + 1);
      rest = rest.slice(0, q);
      if (query.indexOf("'") >= 0) return null;
    }
    if (rest === '') rest = '/';
    else if (rest.indexOf('/.') >= 0) return null;
    return { protocol: protocol, username: '', password: '', hostname: host, port: port, path: rest, query: query, fragment: fragment, opaque: false };
  }
  function resolveRelative(s: string, base: UrlRecord): UrlRecord {
    if (base.opaque && s[0] !== '#') throw new TypeError('Invalid URL');
    const rec: UrlRecord = {
      protocol: base.protocol,
      username: base.username,
      password: base.password,
      hostname: base.hostname,
      port: base.port,
      path: base.path,
      query: base.query,
      fragment: null,
      opaque: base.opaque,
    };
    const special = specialPort(rec.protocol) !== undefined;
    if (s === '') return rec;
    if (s[0] === '#') {
      rec.fragment = pctEncode(s.slice(1), 'frag');
      return rec;
    }
    if (s[0] === '?') {
      splitRest(rec, s, special, true);
      return rec;
    }
    if (s[0] !== '/') {
      const dir = base.path.slice(0, base.path.lastIndexOf('/') + 1);
      s = dir + s;
    }
    splitRest(rec, s, special);
    return rec;
  }
  function splitRest(rec: UrlRecord, s: string, special: boolean, keepPath?: boolean): void {
    const hash = s.indexOf('#');
    if (hash >= 0) {
      rec.fragment = pctEncode(s.slice(hash + 1), 'frag');
      s = s.slice(0, hash);
    } else rec.fragment = null;
    const q = s.indexOf('?');
    if (q >= 0) {
      rec.query = pctEncode(s.slice(q + 1), special ? 'squery' : 'query');
      s = s.slice(0, q);
    } else if (!keepPath) rec.query = null;
    if (keepPath) return;
    if (rec.opaque) rec.path = pctEncode(s, 'c0');
    else if (s === '' && !special) rec.path = '';
    else rec.path = normPath(s.split('/'), special).join('/').replace(/^(?!\/)/, '/');
  }
  function hostOf(rec: UrlRecord): string {
    return rec.hostname + (rec.port !== '' ? ':' + rec.port : '');
  }
  function hrefOf(rec: UrlRecord): string {
    let out = rec.protocol;
    if (rec.hostname !== '' || specialPort(rec.protocol) !== undefined) {
      out += '//';
      if (rec.username !== '' || rec.password !== '') out += rec.username + (rec.password !== '' ? ':' + rec.password : '') + '@';
      out += hostOf(rec);
    }
    out += rec.path;
    if (rec.query !== null) out += '?' + rec.query;
    if (rec.fragment !== null) out += '#' + rec.fragment;
    return out;
  }
  function installURL(): void {
    urlInstalled = true;
    const p = URL.prototype as unknown as Record<string, unknown>;
    function acc(name: string, get: (this: UrlObject) => unknown, set?: (this: UrlObject, v: unknown) => void): void {
      Object.defineProperty(p, name, { configurable: true, enumerable: true, get: get, set: set });
    }
    acc(
      'href',
      function (this: UrlObject) {
        return hrefOf(this._record);
      },
      function (this: UrlObject, v: unknown) {
        this._record = parseURL(String(v), null);
        if (this._params) this._params._list = parsePairs(this._record.query || '');
      },
    );
    acc('origin', function (this: UrlObject) {
      const u = this._record;
      return specialPort(u.protocol) !== undefined && u.protocol !== 'file:' ? u.protocol + '//' + hostOf(u) : 'null';
    });
    acc(
      'protocol',
      function (this: UrlObject) {
        return this._record.protocol;
      },
      function (this: UrlObject, v: unknown) {
        const m = /^([a-zA-Z][a-zA-Z0-9+\-.]*)/.exec(String(v));
        if (!m) return;
        const np = m[1].toLowerCase() + ':';
        if ((specialPort(np) !== undefined) !== (specialPort(this._record.protocol) !== undefined)) return;
        this._record.protocol = np;
        if (specialPort(np) === Number(this._record.port)) this._record.port = '';
      },
    );
    acc(
      'username',
      function (this: UrlObject) {
        return this._record.username;
      },
      function (this: UrlObject, v: unknown) {
        if (this._record.hostname !== '') this._record.username = pctEncode(String(v), 'user');
      },
    );
    acc(
      'password',
      function (this: UrlObject) {
        return this._record.password;
      },
      function (this: UrlObject, v: unknown) {
        if (this._record.hostname !== '') this._record.password = pctEncode(String(v), 'user');
      },
    );
    acc(
      'host',
      function (this: UrlObject) {
        return hostOf(this._record);
      },
      function (this: UrlObject, v: unknown) {
        if (this._record.opaque) return;
        try {
          const rr = parseURL(this._record.protocol + '//' + String(v), null);
          this._record.hostname = rr.hostname;
          this._record.port = rr.port;
        } catch (_e) {
          /* invalid host: ignored, as the standard says */
        }
      },
    );
    acc(
      'hostname',
      function (this: UrlObject) {
        return this._record.hostname;
      },
      function (this: UrlObject, v: unknown) {
        if (this._record.opaque) return;
        try {
          this._record.hostname = parseURL(this._record.protocol + '//' + String(v).replace(/:.*/, ''), null).hostname;
        } catch (_e) {
          /* ignored */
        }
      },
    );
    acc(
      'port',
      function (this: UrlObject) {
        return this._record.port;
      },
      function (this: UrlObject, v: unknown) {
        const s = String(v);
        if (s === '') {
          this._record.port = '';
          return;
        }
        const m = /^[0-9]+/.exec(s);
        if (!m || Number(m[0]) > 65535) return;
        const n = Number(m[0]);
        this._record.port = specialPort(this._record.protocol) === n ? '' : String(n);
      },
    );
    acc(
      'pathname',
      function (this: UrlObject) {
        return this._record.path;
      },
      function (this: UrlObject, v: unknown) {
        if (this._record.opaque) return;
        const special = specialPort(this._record.protocol) !== undefined;
        let s = String(v);
        if (special) s = s.replace(/\\/g, '/');
        if (s[0] !== '/') s = '/' + s;
        this._record.path = normPath(s.split('/'), special).join('/').replace(/^(?!\/)/, '/');
      },
    );
    acc(
      'search',
      function (this: UrlObject) {
        const q = this._record.query;
        return q === null || q === '' ? '' : '?' + q;
      },
      function (this: UrlObject, v: unknown) {
        let s = String(v);
        if (s[0] === '?') s = s.slice(1);
        this._record.query = s === '' ? null : pctEncode(s, specialPort(this._record.protocol) !== undefined ? 'squery' : 'query');
        if (this._params) this._params._list = parsePairs(s);
      },
    );
    acc('searchParams', function (this: UrlObject) {
      if (!this._params) {
        const sp = new (URLSearchParams as unknown as new (i: string) => ParamsObject)(this._record.query || '');
        sp._url = this;
        this._params = sp;
      }
      return this._params;
    });
    acc(
      'hash',
      function (this: UrlObject) {
        const f = this._record.fragment;
        return f === null || f === '' ? '' : '#' + f;
      },
      function (this: UrlObject, v: unknown) {
        let s = String(v);
        if (s[0] === '#') s = s.slice(1);
        this._record.fragment = s === '' ? null : pctEncode(s, 'frag');
      },
    );
    p.toString = function (this: UrlObject) {
      return hrefOf(this._record);
    };
    p.toJSON = p.toString;
  }
  /** Decodes application/x-www-form-urlencoded bytes leniently (bad escapes stay as they are). */
  function formDecode(s: string): string {
    if (s.indexOf('+') >= 0) s = s.replace(/\+/g, ' ');
    if (s.indexOf('%') < 0) return s;
    try {
      return decodeURIComponent(s);
    } catch (_e) {
      // Fall back to byte-wise decoding: UTF-8 of the text, escapes replaced by their bytes.
      const bytes: number[] = [];
      const enc = new TextEncoder().encode(s);
      for (let i = 0; i < enc.length; i++) {
        const c = enc[i];
        if (c === 0x25 && i + 2 < enc.length + 0 && /^[0-9a-fA-F]{2}$/.test(String.fromCharCode(enc[i + 1], enc[i + 2]))) {
          bytes.push(parseInt(String.fromCharCode(enc[i + 1], enc[i + 2]), 16));
          i += 2;
        } else bytes.push(c);
      }
      return new TextDecoder().decode(new Uint8Array(bytes));
    }
  }
  /** application/x-www-form-urlencoded byte serializer: keeps *-._ and alphanumerics, space -> +. */
  function formEncode(s: string): string {
    let e = encodeURIComponent(s);
    if (e.indexOf('%20') >= 0) e = e.split('%20').join('+');
    if (e.indexOf('!') >= 0 || e.indexOf("'") >= 0 || e.indexOf('(') >= 0 || e.indexOf(')') >= 0 || e.indexOf('~') >= 0) {
      e = e.replace(/[!'()~]/g, function (c: string) {
        return '%' + c.charCodeAt(0).toString(16).toUpperCase();
      });
    }
    return e;
  }
  function parsePairs(s: string): string[] {
    const l: string[] = [];
    if (s === '') return l;
    const parts = s.split('&');
    for (let i = 0; i < parts.length; i++) {
      const part = parts[i];
      if (part === '') continue;
      const eq = part.indexOf('=');
      if (eq >= 0) l.push(formDecode(part.slice(0, eq)), formDecode(part.slice(eq + 1)));
      else l.push(formDecode(part), '');
    }
    return l;
  }
  function usv(x: unknown): string {
    const s = String(x);
    // Lone surrogates become U+FFFD, as USVString conversion does.
    return /[\ud800-\udfff]/.test(s) ? s.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(^|[^\ud800-\udbff])[\udc00-\udfff]/g, function (m: string) {
      return m.length === 2 ? m[0] + '\ufffd' : '\ufffd';
    }) : s;
  }
  function installParams(): void {
    paramsInstalled = true;
    const p = URLSearchParams.prototype as unknown as Record<string, unknown>;
    function update(sp: ParamsObject): void {
      if (sp._url) {
        const s = sp.toString();
        sp._url._record.query = s === '' ? null : s;
      }
    }
    function pairs(l: string[]): string[][] {
      const out: string[][] = [];
      for (let i = 0; i < l.length; i += 2) out.push([l[i], l[i + 1]]);
      return out;
    }
    p.append = function (this: ParamsObject, n: unknown, v: unknown) {
      this._list.push(usv(n), usv(v));
      update(this);
    };
    p.delete = function (this: ParamsObject, n: unknown, v?: unknown) {
      n = usv(n);
      const l = this._list;
      const withV = v !== undefined;
      if (withV) v = usv(v);
      for (let i = l.length - 2; i >= 0; i -= 2) if (l[i] === n && (!withV || l[i + 1] === v)) l.splice(i, 2);
      update(this);
    };
    p.get = function (this: ParamsObject, n: unknown) {
      n = usv(n);
      const l = this._list;
      for (let i = 0; i < l.length; i += 2) if (l[i] === n) return l[i + 1];
      return null;
    };
    p.getAll = function (this: ParamsObject, n: unknown) {
      n = usv(n);
      const l = this._list;
      const out: string[] = [];
      for (let i = 0; i < l.length; i += 2) if (l[i] === n) out.push(l[i + 1]);
      return out;
    };
    p.has = function (this: ParamsObject, n: unknown, v?: unknown) {
      n = usv(n);
      const l = this._list;
      const withV = v !== undefined;
      if (withV) v = usv(v);
      for (let i = 0; i < l.length; i += 2) if (l[i] === n && (!withV || l[i + 1] === v)) return true;
      return false;
    };
    p.set = function (this: ParamsObject, name: unknown, value: unknown) {
      const n = usv(name);
      const v = usv(value);
      const l = this._list;
      let found = false;
      for (let i = 0; i < l.length; i += 2) {
        if (l[i] === n) {
          if (!found) {
            l[i + 1] = v;
            found = true;
          } else {
            l.splice(i, 2);
            i -= 2;
          }
        }
      }
      if (!found) l.push(n, v);
      update(this);
    };
    p.sort = function (this: ParamsObject) {
      const ps = pairs(this._list);
      // Stable sort by UTF-16 code units (Array.prototype.sort stability is not guaranteed in njs).
      for (let i = 0; i < ps.length; i++) (ps[i] as unknown as (string | number)[]).push(i);
      const keyed = ps as unknown as [string, string, number][];
      keyed.sort(function (a, b) {
        return a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : a[2] - b[2];
      });
      const l: string[] = [];
      for (let j = 0; j < ps.length; j++) l.push(ps[j][0], ps[j][1]);
      this._list = l;
      update(this);
    };
    p.toString = function (this: ParamsObject) {
      const l = this._list;
      let out = '';
      for (let i = 0; i < l.length; i += 2) out += (i ? '&' : '') + formEncode(l[i]) + '=' + formEncode(l[i + 1]);
      return out;
    };
    p.forEach = function (this: ParamsObject, cb: (v: string, k: string, p: ParamsObject) => void, thisArg: unknown) {
      const l = this._list;
      for (let i = 0; i < l.length; i += 2) cb.call(thisArg, l[i + 1], l[i], this);
    };
    p.entries = function (this: ParamsObject) {
      return shared().arrayIterator(pairs(this._list));
    };
    p.keys = function (this: ParamsObject) {
      const out: string[] = [];
      for (let i = 0; i < this._list.length; i += 2) out.push(this._list[i]);
      return shared().arrayIterator(out);
    };
    p.values = function (this: ParamsObject) {
      const out: string[] = [];
      for (let i = 0; i < this._list.length; i += 2) out.push(this._list[i + 1]);
      return shared().arrayIterator(out);
    };
    (p as unknown as Record<symbol, unknown>)[Symbol.iterator] = p.entries;
    Object.defineProperty(p, 'size', {
      configurable: true,
      get: function () {
        return this._list.length / 2;
      },
    });
  }

  internals = { specialPort: specialPort, parseURL: parseURL, hrefOf: hrefOf, install: installURL, installParams: installParams, parsePairs: parsePairs, usv: usv };
  return internals;
}
