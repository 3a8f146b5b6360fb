/**
 * The access log line of `tsgi serve`: the format the private nginx of `tsgi nginx run` prints
 * (config.ts `log_format tsgi`): the Combined Log Format plus the request time in seconds,
 *
 *   127.0.0.1 - alice [01/Dec/2026:11:32:27 +0000] "GET /x?q=1 HTTP/1.1" 200 5 "-" "curl/8.0" 0.003
 */

export interface AccessEntry {
  ip: string;
  /** ctx.user, when the handler's authenticate (or the server) set one. */
  user?: string;
  method: string;
  /** The request target as sent. */
  target: string;
  /** '1.1', '1.0'. */
  httpVersion: string;
  status: number;
  /** Response body bytes sent. */
  bytes: number;
  referer?: string;
  userAgent?: string;
  durationMs: number;
  /** When the request started (default: now minus durationMs). */
  at?: Date;
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
const two = (n: number): string => (n < 10 ? `0${n}` : String(n));

/** nginx's $time_local: `01/Dec/2026:11:32:27 +0100`, local time. */
export function timeLocal(d: Date): string {
  const off = -d.getTimezoneOffset();
  const a = Math.abs(off);
  const zone = `${off < 0 ? '-' : '+'}${two(Math.floor(a / 60))}${two(a % 60)}`;
  return `${two(d.getDate())}/${MONTHS[d.getMonth()]}/${d.getFullYear()}:${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())} ${zone}`;
}

/** As nginx escapes a logged variable: `"`, backslash, controls and bytes above 0x7e as \xHH (Node's heads are latin1: one byte per character). */
function esc(s: string): string {
  return s.replace(/["\\\x00-\x1f\x7f-\uffff]/g, (c) => `\\x${(c.charCodeAt(0) & 0xff).toString(16).toUpperCase().padStart(2, '0')}`);
}

const orDash = (s: string | undefined): string => (s === undefined || s === '' ? '-' : esc(s));

export function accessLogLine(e: AccessEntry): string {
  const at = e.at ?? new Date(Date.now() - e.durationMs);
  return (
    `${e.ip || '-'} - ${orDash(e.user)} [${timeLocal(at)}] "${esc(`${e.method} ${e.target} HTTP/${e.httpVersion}`)}" ` +
    `${e.status} ${e.bytes} "${orDash(e.referer)}" "${orDash(e.userAgent)}" ${(e.durationMs / 1000).toFixed(3)}`
  );
}
