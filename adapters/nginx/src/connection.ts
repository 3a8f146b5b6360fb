/**
 * One connection from nginx in workers mode: its HTTP/1.1 requests read off
 * the socket here, one at a time, instead of by node:http (node:http's
 * parser, IncomingMessage and ServerResponse are most of what a worker
 * spends on a request: adapters/nginx/README.md, "Cost per request").
 *
 * Read here is what nginx sends for an ordinary request (config.ts
 * proxyCommon): an origin-form request line, HTTP/1.1, one Host, and no body
 * or a Content-Length one of at most DIRECT_BODY_MAX bytes, which arrives
 * whole before the handler runs. Anything else (an upgrade, a chunked or a
 * larger body, Expect, an absolute-form target, no Host, a head that does
 * not parse or is too large) hands the connection, with what was read of it,
 * to the worker's node:http server, which serves it from that request on:
 * one implementation for every rare framing, and the same answers.
 */
import type { Socket } from 'node:net';
import { FORBIDDEN_TEXT, PLAIN_TEXT_TYPE } from '@tsgi/core';
import { hostAuthority } from '@tsgi/core/node';
import { NginxExchange, type NginxHost } from './exchange.js';
import { writeOwn, type Sink } from './respond.js';

/**
 * The largest request body read here: larger ones go to node:http, which streams them to the handler
 * as they arrive (and answers 413 past the limit).
 */
export const DIRECT_BODY_MAX = 64 * 1024;

export interface ConnectionOptions {
  host: NginxHost;
  /** The secret check (worker.ts): nothing in a request is trusted before it. */
  fromNginx(secret: string | undefined): boolean;
  /** The largest head node:http reads; a longer one is handed to it (431). */
  maxHead: number;
  /** The largest request body (--max-body). */
  maxBody: number;
  /** Gives the socket to node:http, with what was read of it and not yet served. */
  handOff(socket: Socket, read: Buffer): void;
}

const HEAD_END = Buffer.from('\r\n\r\n');
const EMPTY = Buffer.alloc(0);
const FORBIDDEN_HEAD = ['content-type', PLAIN_TEXT_TYPE, 'content-length', String(FORBIDDEN_TEXT.length)];

/** A method of upper-case letters only; any other goes to node:http (decision 8: lower-case letters get 400). */
function isMethod(m: string): boolean {
  if (m.length === 0) return false;
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (c < 65 || c > 90) return false;
  }
  return true;
}

/** The value of one header line, optional whitespace around it dropped (no new string in the usual case). */
function fieldValue(s: string, from: number, to: number): string {
  while (from < to && (s.charCodeAt(from) === 32 || s.charCodeAt(from) === 9)) from++;
  while (to > from && (s.charCodeAt(to - 1) === 32 || s.charCodeAt(to - 1) === 9)) to--;
  return s.slice(from, to);
}

/** `name` lower-cased is `lower` (a name of its length); no new string when nginx spells it so. */
const lowerIs = (name: string, lower: string): boolean => name === lower || name.toLowerCase() === lower;

/**
 * The request target as the client sent it, from the request line nginx passes in X-Tsgi-Request
 * (nginx forwards every request in origin-form, as `path`). Only a target that is not origin-form
 * (absolute-form) is taken from the line; the usual one is `path` itself.
 */
export function clientTarget(line: string | string[] | undefined, path: string): string {
  if (typeof line !== 'string') return path;
  const sp = line.indexOf(' ');
  if (sp < 0 || line.charCodeAt(sp + 1) === 47 /* / */) return path;
  const end = line.lastIndexOf(' ');
  return line.slice(sp + 1, end > sp ? end : line.length);
}

/** One connection from nginx: requests answered in order; a later one waits in `buf`. */
export class NginxConnection implements Sink {
  readonly host: NginxHost;
  private buf: Buffer | undefined = undefined;
  /** A request is in flight; the next one waits. */
  private busy = false;
  private pumping = false;
  /** Close after the response in flight. */
  closing = false;
  /** The socket is closed (nginx went, or it was cut). */
  gone = false;
  /** Given to node:http: nothing here reads it any more. */
  private handed = false;
  /** What runs when the connection goes (onGone); one or two entries at most. */
  private goneHooks: { key: object; fn: () => void }[] | undefined = undefined;
  private readonly onData = (d: Buffer): void => {
    this.buf = this.buf === undefined ? d : Buffer.concat([this.buf, d]);
    if (!this.busy) this.pump();
    // More than one request's worth sent ahead while one is in flight: read no more until it is answered.
    else if (this.buf.length > this.o.maxHead + DIRECT_BODY_MAX) this.socket.pause();
  };

  constructor(
    readonly socket: Socket,
    private readonly o: ConnectionOptions,
  ) {
    this.host = o.host;
    socket.on('data', this.onData);
    socket.on('error', () => socket.destroy());
    socket.once('close', () => this.lost());
  }

  onGone(key: object, fn: () => void): void {
    if (this.gone) return fn();
    (this.goneHooks ??= []).push({ key, fn });
  }

  offGone(key: object): void {
    const hooks = this.goneHooks;
    if (!hooks) return;
    for (let i = 0; i < hooks.length; i++) {
      if (hooks[i]!.key === key) {
        hooks.splice(i, 1);
        return;
      }
    }
  }

  private lost(): void {
    this.gone = true;
    const hooks = this.goneHooks;
    this.goneHooks = undefined;
    if (hooks) for (const h of hooks) h.fn();
  }

  /** The response in flight is the last on this connection. */
  closeAfter(): void {
    this.closing = true;
  }

  /**
   * `fn` once what was written has left for the kernel, or the connection is gone. An empty write queues
   * behind the rest and calls back when they have gone (as node:http's end does): 'drain' would not
   * come for bytes still pending below the socket's high-water mark.
   */
  whenFlushed(fn: () => void): void {
    const socket = this.socket;
    if (this.gone || socket.writableLength === 0) return fn();
    socket.write(EMPTY, () => fn());
  }

  /** The request in flight has its answer written: the next one may start (or the connection ends). */
  finished(): void {
    this.busy = false;
    if (this.gone) return;
    if (this.closing) {
      this.socket.end();
      return;
    }
    if (this.socket.isPaused()) this.socket.resume();
    if (!this.pumping && this.buf !== undefined) this.pump();
  }

  private pump(): void {
    this.pumping = true;
    try {
      while (!this.busy && !this.closing && !this.handed && this.buf !== undefined) {
        if (!this.next(this.buf)) break;
      }
    } catch (err) {
      // A reader bug must cost one connection, not the worker and every request it holds.
      this.host.log('worker: a request from nginx could not be read; its connection is closed', err);
      this.socket.destroy();
    } finally {
      this.pumping = false;
    }
  }

  /** Gives the connection to node:http, from the first byte not yet served. */
  private handOff(buf: Buffer): false {
    this.handed = true;
    this.buf = undefined;
    const socket = this.socket;
    socket.off('data', this.onData);
    socket.pause();
    this.o.handOff(socket, buf);
    return false;
  }

  /** Takes one request off `buf` and starts it; false when it is not complete yet (or was handed on). */
  private next(buf: Buffer): boolean {
    const o = this.o;
    const headEnd = buf.indexOf(HEAD_END);
    if (headEnd < 0) return buf.length > o.maxHead ? this.handOff(buf) : false;
    if (headEnd > o.maxHead) return this.handOff(buf);
    const s = buf.toString('latin1', 0, headEnd + 2);
    // The request line.
    const eol = s.indexOf('\r\n');
    const sp1 = s.indexOf(' ');
    const sp2 = sp1 < 0 ? -1 : s.indexOf(' ', sp1 + 1);
    if (sp1 <= 0 || sp2 < 0 || sp2 > eol || s.charCodeAt(sp1 + 1) !== 47 /* / */) return this.handOff(buf);
    const method = s.slice(0, sp1);
    if (eol - sp2 !== 9 || !s.startsWith('HTTP/1.1', sp2 + 1) || !isMethod(method)) return this.handOff(buf);
    const path = s.slice(sp1 + 1, sp2);
    // The header lines: the handler's list, and what the worker reads itself.
    const headers: string[] = [];
    let host: string | undefined;
    let hosts = 0;
    let length: string | undefined;
    let lengths = 0;
    let secret: string | undefined;
    let line: string | undefined;
    let ip = '';
    let scheme: 'http' | 'https' = 'http';
    let basePath = '';
    let access = false;
    let close = false;
    let pos = eol + 2;
    while (pos < s.length) {
      const e = s.indexOf('\r\n', pos);
      const colon = s.indexOf(':', pos);
      // No colon, an empty name, or a folded line (obs-fold): node:http's to judge.
      if (colon <= pos || colon > e || s.charCodeAt(pos) === 32 || s.charCodeAt(pos) === 9) return this.handOff(buf);
      const name = s.slice(pos, colon);
      const value = fieldValue(s, colon + 1, e);
      pos = e + 2;
      const n = name.length;
      if (n > 7 && (name.charCodeAt(0) | 32) === 120 /* x */ && (name.charCodeAt(1) === 45 /* - */)) {
        if ((name.charCodeAt(2) | 32) === 116 /* t */ && n >= 12 && name.slice(0, 7).toLowerCase() === 'x-tsgi-') {
          // nginx's own lines (config.ts proxyCommon, worker.ts PROXY_HEADERS): read here, never shown to the handler.
          let lower = name.toLowerCase();
          if (lower === 'x-tsgi-secret') secret = value;
          else if (lower === 'x-tsgi-request') line = value;
          else if (lower === 'x-tsgi-base-path') basePath = value;
          else if (lower === 'x-tsgi-phase') access = value === 'access';
          else lower = ''; // another X-Tsgi- name: the handler's, as on node:http
          if (lower !== '') continue;
        }
        if (n === 9 && lowerIs(name, 'x-real-ip')) ip = value;
        else if (n === 17 && lowerIs(name, 'x-forwarded-proto') && (value === 'https' || value === 'http')) scheme = value;
      } else {
        switch (n) {
          case 4:
            if (lowerIs(name, 'host')) {
              host = value;
              hosts++;
            }
            break;
          case 14:
            if (lowerIs(name, 'content-length')) {
              length = value;
              lengths++;
            }
            break;
          case 17:
            if (lowerIs(name, 'transfer-encoding')) return this.handOff(buf);
            break;
          case 7:
            if (lowerIs(name, 'upgrade')) return this.handOff(buf);
            break;
          case 6:
            if (lowerIs(name, 'expect')) return this.handOff(buf);
            break;
          case 10:
            if (lowerIs(name, 'connection')) {
              const v = value.toLowerCase();
              if (v.includes('upgrade')) return this.handOff(buf);
              if (v.includes('close')) close = true;
            }
            break;
        }
      }
      headers.push(name, value);
    }
    if (hosts !== 1 || clientTarget(line, path) !== path) return this.handOff(buf);
    // The body: by one Content-Length, small enough to wait for here.
    let size = 0;
    if (lengths > 0) {
      if (lengths > 1 || !/^\d{1,6}$/.test(length!)) return this.handOff(buf);
      size = Number(length);
      if (size > DIRECT_BODY_MAX || size > o.maxBody) return this.handOff(buf);
    }
    const start = headEnd + 4;
    if (buf.length < start + size) return false; // the rest of the body is on its way
    const authority = hostAuthority(host!);
    if (typeof authority !== 'string') return this.handOff(buf); // node:http's 400
    const body = size > 0 ? buf.subarray(start, start + size) : undefined;
    this.buf = buf.length > start + size ? buf.subarray(start + size) : undefined;
    if (close) this.closing = true;
    this.busy = true;
    // Only nginx may talk to the worker: nothing in the request is used before the secret.
    if (!o.fromNginx(secret)) {
      writeOwn(this.socket, 403, FORBIDDEN_HEAD, FORBIDDEN_TEXT);
      this.finished();
      return !this.closing;
    }
    new NginxExchange(this, method, path, authority, scheme, headers, body, ip, basePath, access).run();
    return true;
  }
}
