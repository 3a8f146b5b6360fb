/**
 * What a case gets: the base URL, a fetch bound to it (undici's global fetch)
 * and a raw HTTP/1.1 socket client for what fetch cannot express
 * (pipelining, malformed requests, oversized headers, disconnects).
 */
import { connect as netConnect, type Socket } from 'node:net';

export type ServerKind = 'node' | 'apache' | 'nginx';
/** 'fastify': the Fastify mount of node-http (a node server whose WebSocket is not covered). */
export type ServerMode = 'embedded' | 'workers' | 'fastify';

export interface ConformanceTarget {
  /** A label for reports ("node serve", "apache"...). */
  name: string;
  server: ServerKind;
  mode?: ServerMode;
  /** Evaluated when the cases run (after the server has started). */
  baseURL: () => string;
  /**
   * The server mounts the fixture under this prefix (`--location /app`): only the mount cases run,
   * and they expect ctx.basePath to be it. Absent: the fixture is at the root.
   */
  basePath?: string;
}

/** One parsed HTTP/1.x response read off a raw socket. */
export interface RawResponse {
  status: number;
  reason: string;
  /** Header lines in wire order, names as sent. */
  headers: [string, string][];
  /** The status line and header block exactly as received (latin1). */
  head: string;
  body: Buffer;
  /** First value of a header (case-insensitive), or null. */
  get(name: string): string | null;
  /** All values of a header, one per header line. */
  all(name: string): string[];
}

export interface ReadOptions {
  /** The request method this response answers (HEAD has no body). */
  method?: string;
  timeoutMs?: number;
}

const DEFAULT_TIMEOUT = 15_000;
const CRLF2 = Buffer.from('\r\n\r\n');

function makeResponse(status: number, reason: string, headers: [string, string][], head: string, body: Buffer) {
  return {
    status,
    reason,
    headers,
    head,
    body,
    get(name: string) {
      const l = name.toLowerCase();
      const h = headers.find(([k]) => k.toLowerCase() === l);
      return h ? h[1] : null;
    },
    all(name: string) {
      const l = name.toLowerCase();
      return headers.filter(([k]) => k.toLowerCase() === l).map(([, v]) => v);
    },
  } satisfies RawResponse;
}

/** A raw TCP connection to the server with an HTTP/1.x response reader. */
export class RawConnection {
  private buf: Buffer = Buffer.alloc(0);
  private waiters: (() => void)[] = [];
  /** The peer ended or the socket closed/errored. */
  ended = false;
  error: Error | undefined;

  constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => {
      this.buf = this.buf.length ? Buffer.concat([this.buf, d]) : d;
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    socket.on('end', end);
    socket.on('close', end);
    socket.on('error', (err) => {
      this.error = err;
      end();
    });
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** What was received and not yet consumed, as latin1 text. */
  received(): string {
    return this.buf.toString('latin1');
  }

  /** Bytes received and not yet consumed by readResponse. */
  get pending(): number {
    return this.buf.length;
  }

  /** Resolves on the next data/end event, or rejects after timeoutMs. */
  private next(timeoutMs: number, what: string): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== done);
        reject(new Error(`timed out after ${timeoutMs} ms waiting for ${what}`));
      }, timeoutMs);
      const done = () => {
        clearTimeout(timer);
        resolve();
      };
      this.waiters.push(done);
    });
  }

  /** Waits until some response bytes arrived or the connection ended. */
  async waitForData(timeoutMs = DEFAULT_TIMEOUT): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.buf.length && !this.ended) await this.next(Math.max(1, deadline - Date.now()), 'response data');
  }

  /**
   * Writes data; resolves once the socket accepted it, or early when the
   * server has answered or closed (a server that rejected a body may stop
   * reading it). Write errors after that point are expected and ignored.
   */
  async write(data: string | Uint8Array): Promise<void> {
    if (this.ended) return;
    if (this.socket.write(data)) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        this.socket.off('drain', done);
        this.waiters = this.waiters.filter((w) => w !== check);
        resolve();
      };
      const check = () => {
        if (this.buf.length || this.ended) done();
        else this.waiters.push(check);
      };
      this.socket.on('drain', done);
      this.waiters.push(check);
    });
  }

  /** Tries to parse one response from the buffer; null when incomplete. */
  private parse(method: string, atEnd: boolean): RawResponse | null {
    const buf = this.buf;
    const headEnd = buf.indexOf(CRLF2);
    if (headEnd < 0) return null;
    const head = buf.subarray(0, headEnd).toString('latin1');
    const lines = head.split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(lines[0]!);
    if (!m) throw new Error(`not an HTTP/1.x status line: ${JSON.stringify(lines[0]!.slice(0, 200))}`);
    const status = Number(m[1]);
    const headers: [string, string][] = [];
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':');
      if (i <= 0) throw new Error(`malformed header line: ${JSON.stringify(line.slice(0, 200))}`);
      headers.push([line.slice(0, i), line.slice(i + 1).trim()]);
    }
    const res = (body: Buffer, consumed: number) => {
      this.buf = this.buf.subarray(consumed);
      return makeResponse(status, m[2] ?? '', headers, head, body);
    };
    const start = headEnd + 4;
    // Interim responses (100 Continue) carry no body; the caller reads on.
    if (status >= 100 && status < 200 && status !== 101) return res(Buffer.alloc(0), start);
    if (method === 'HEAD' || status === 204 || status === 304) return res(Buffer.alloc(0), start);
    const lower = (n: string) => headers.filter(([k]) => k.toLowerCase() === n).map(([, v]) => v);
    const te = lower('transfer-encoding').join(',').toLowerCase();
    if (te.includes('chunked')) {
      const parts: Buffer[] = [];
      let pos = start;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', pos);
        if (lineEnd < 0) return null;
        const size = parseInt(buf.subarray(pos, lineEnd).toString('latin1').split(';')[0]!.trim(), 16);
        if (!Number.isFinite(size) || size < 0) throw new Error('bad chunk size line');
        if (size === 0) {
          // Optional trailers, then an empty line.
          if (buf.length >= lineEnd + 4 && buf.subarray(lineEnd + 2, lineEnd + 4).toString() === '\r\n') {
            return res(Buffer.concat(parts), lineEnd + 4);
          }
          const trailerEnd = buf.indexOf(CRLF2, lineEnd);
          if (trailerEnd < 0) return null;
          return res(Buffer.concat(parts), trailerEnd + 4);
        }
        if (buf.length < lineEnd + 2 + size + 2) return null;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        pos = lineEnd + 2 + size + 2;
      }
    }
    const cl = lower('content-length');
    if (cl.length) {
      const n = Number(cl[0]);
      if (buf.length < start + n) return null;
      return res(buf.subarray(start, start + n), start + n);
    }
    // No framing: the body runs to the end of the connection.
    if (!atEnd) return null;
    return res(buf.subarray(start), buf.length);
  }

  /** Reads one final response (skipping 1xx). Throws if the connection ends first. */
  async readResponse(opts: ReadOptions = {}): Promise<RawResponse> {
    const method = (opts.method ?? 'GET').toUpperCase();
    const deadline = Date.now() + (opts.timeoutMs ?? DEFAULT_TIMEOUT);
    for (;;) {
      const r = this.parse(method, this.ended);
      if (r && (r.status < 100 || r.status >= 200 || r.status === 101)) return r;
      if (r) continue;
      if (this.ended) {
        const got = this.buf.length ? JSON.stringify(this.buf.subarray(0, 200).toString('latin1')) : 'nothing';
        throw new Error(
          `connection closed before a complete response (received ${got}${this.error ? `; ${this.error.message}` : ''})`,
        );
      }
      await this.next(Math.max(1, deadline - Date.now()), `a ${method} response`);
    }
  }

  /** Waits until the server closes the connection; returns what was left unread. */
  async readToEnd(timeoutMs = DEFAULT_TIMEOUT): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    while (!this.ended) await this.next(Math.max(1, deadline - Date.now()), 'the connection to close');
    const rest = this.buf;
    this.buf = Buffer.alloc(0);
    return rest;
  }

  close(): void {
    this.socket.destroy();
  }
}

/** Helpers handed to every case. */
export interface CaseContext {
  /** The base URL without a trailing slash. */
  baseURL: string;
  target: { server: ServerKind; mode?: ServerMode };
  /** The prefix the fixture is mounted under ('' at the root): what ctx.basePath must be. */
  basePath: string;
  /** host:port for a raw Host header. */
  host: string;
  url(path: string): string;
  /** Global fetch against the base URL; redirects are not followed unless asked. */
  fetch(path: string, init?: RequestInit): Promise<Response>;
  /** Opens a raw TCP connection to the server. */
  connect(): Promise<RawConnection>;
  /** One raw request on a fresh connection; returns the response and closes. */
  exchange(request: string | Uint8Array, opts?: ReadOptions): Promise<RawResponse>;
  /** A key unique to this run, for the fixture's state routes. */
  key(prefix: string): string;
  /** Calls fn until done(value) or the bound; returns the last value (never a speed check). */
  poll<T>(fn: () => Promise<T>, done: (v: T) => boolean, timeoutMs?: number): Promise<T>;
}

let keySeq = 0;
const runId = `${process.pid.toString(36)}${Date.now().toString(36)}`;

export function makeContext(baseURL: string, target: { server: ServerKind; mode?: ServerMode; basePath?: string }): CaseContext {
  const base = new URL(baseURL);
  const origin = base.origin;
  const port = Number(base.port || (base.protocol === 'https:' ? 443 : 80));
  const hostname = base.hostname.replace(/^\[|\]$/g, '');
  const ctx: CaseContext = {
    baseURL: origin,
    target: { server: target.server, mode: target.mode },
    basePath: target.basePath ?? '',
    host: base.host,
    url: (path) => origin + path,
    fetch: (path, init) => fetch(origin + path, { redirect: 'manual', ...init }),
    connect: () =>
      new Promise((resolve, reject) => {
        const s = netConnect({ host: hostname, port });
        s.once('connect', () => {
          s.off('error', reject);
          s.setNoDelay(true);
          resolve(new RawConnection(s));
        });
        s.once('error', reject);
      }),
    async exchange(request, opts) {
      const c = await ctx.connect();
      try {
        await c.write(request);
        return await c.readResponse(opts);
      } finally {
        c.close();
      }
    },
    key: (prefix) => `${prefix}-${runId}-${++keySeq}`,
    async poll(fn, done, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const v = await fn();
        if (done(v) || Date.now() > deadline) return v;
        await new Promise((r) => setTimeout(r, 25));
      }
    },
  };
  return ctx;
}
