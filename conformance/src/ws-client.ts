/**
 * A WebSocket client for the cases (the `ws` package): messages as a queue to
 * await one by one, the close as a promise, and the refusal of an upgrade
 * (status and headers of the HTTP answer) for the cases that expect one.
 */
import WebSocket from 'ws';
import type { IncomingMessage } from 'node:http';
import type { CaseContext } from './client.js';

export interface WsMessage {
  data: Buffer;
  binary: boolean;
}

export interface WsClient {
  ws: WebSocket;
  /** The next message (bounded wait; rejects when the socket closes first). */
  next(timeoutMs?: number): Promise<WsMessage>;
  /** The close code and reason the client saw. */
  closed: Promise<{ code: number; reason: string }>;
}

/** The answer to an upgrade the server did not accept. */
export interface WsRefusal {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

const OPEN_TIMEOUT_MS = 10_000;

function wsURL(t: CaseContext, path: string): string {
  return t.url(path).replace(/^http/, 'ws');
}

/** Opens a socket to `path`; rejects with the server's status when it refuses. */
export function openWs(t: CaseContext, path: string, headers?: Record<string, string>): Promise<WsClient> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsURL(t, path), { headers, perMessageDeflate: false, handshakeTimeout: OPEN_TIMEOUT_MS, maxPayload: 0 });
    const queue: WsMessage[] = [];
    const waiting: { ok: (m: WsMessage) => void; fail: (e: Error) => void }[] = [];
    let ended: Error | undefined;
    const closed = new Promise<{ code: number; reason: string }>((r) => {
      ws.on('close', (code, reason) => {
        ended = new Error(`the socket closed (${code} ${reason.toString()}) before the next message`);
        for (const w of waiting.splice(0)) w.fail(ended);
        r({ code, reason: reason.toString() });
      });
    });
    ws.on('message', (data, binary) => {
      const m = { data: Array.isArray(data) ? Buffer.concat(data) : Buffer.from(data as ArrayBuffer), binary };
      const w = waiting.shift();
      if (w) w.ok(m);
      else queue.push(m);
    });
    ws.on('error', (err) => reject(err));
    ws.on('unexpected-response', (_req, res) => {
      reject(new Error(`upgrade refused with ${res.statusCode}`));
      res.resume();
      ws.terminate();
    });
    ws.on('open', () =>
      resolve({
        ws,
        closed,
        next(timeoutMs = 20_000) {
          const m = queue.shift();
          if (m) return Promise.resolve(m);
          if (ended) return Promise.reject(ended);
          return new Promise((ok, fail) => {
            const w = {
              ok: (v: WsMessage) => {
                clearTimeout(timer);
                ok(v);
              },
              fail: (e: Error) => {
                clearTimeout(timer);
                fail(e);
              },
            };
            const timer = setTimeout(() => {
              waiting.splice(waiting.indexOf(w), 1);
              fail(new Error(`no message within ${timeoutMs} ms`));
            }, timeoutMs);
            waiting.push(w);
          });
        },
      }),
    );
  });
}

/** An upgrade the server is expected to refuse: its HTTP answer. Rejects when the socket opens. */
export function refusedWs(t: CaseContext, path: string, headers?: Record<string, string>): Promise<WsRefusal> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsURL(t, path), { headers, perMessageDeflate: false, handshakeTimeout: OPEN_TIMEOUT_MS });
    ws.on('open', () => {
      ws.terminate();
      reject(new Error(`${path}: the upgrade was accepted`));
    });
    ws.on('error', (err) => reject(err));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => {
        ws.terminate();
        resolve({ status: res.statusCode ?? 0, headers: res.headers, body });
      });
    });
  });
}
