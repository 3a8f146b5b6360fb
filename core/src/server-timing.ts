/**
 * The operations' wire text every host writes the same (issue 12): the
 * Server-Timing value and the 504's body. Like wire.ts, bundled into the njs
 * runtime too: only function declarations and primitives at the top level.
 */

/** The body of the 504 a request gets at its request-timeout (text/plain, wire.ts PLAIN_TEXT_TYPE). */
export const GATEWAY_TIMEOUT_TEXT = 'Gateway Timeout\n';

/** Server-Timing: `queue;dur=…, auth;dur=…, fetch;dur=…` (milliseconds, 3 decimals); auth only when the handler has access hooks. */
export function serverTimingValue(t: { queueMs: number; authMs?: number; fetchMs: number }): string {
  const d = function (ms: number): string {
    return String(Math.round(Math.max(0, ms) * 1000) / 1000);
  };
  let v = 'queue;dur=' + d(t.queueMs);
  if (t.authMs !== undefined) v += ', auth;dur=' + d(t.authMs);
  return v + ', fetch;dur=' + d(t.fetchMs);
}
