/**
 * The conformance cases: each one an HTTP exchange with a server that serves
 * fixture/handler.ts at the root of its base URL (one process, request body
 * limit CONFORMANCE_MAX_BODY). One file per group under cases/.
 *
 * Opt-outs: a case that cannot apply to a server says so, keyed by
 * 'server' or 'server:mode', with the reason. Nothing is ever skipped
 * silently; node and apache need no opt-out.
 */
import type { ConformanceCase } from './cases/shared.js';
import { bodyCases } from './cases/body.js';
import { urlCases } from './cases/url.js';
import { requestCases } from './cases/request.js';
import { responseCases } from './cases/response.js';
import { streamCases } from './cases/stream.js';
import { errorsCases } from './cases/errors.js';
import { hooksCases } from './cases/hooks.js';
import { contextCases } from './cases/context.js';
import { signalCases } from './cases/signal.js';
import { connectionCases } from './cases/connection.js';
import { websocketCases } from './cases/websocket.js';
import { mountCases } from './cases/mount.js';

export { adler32, noise, CONFORMANCE_MAX_BODY, SECRET, type ConformanceCase } from './cases/shared.js';

export const cases: ConformanceCase[] = [
  ...bodyCases,
  ...urlCases,
  ...requestCases,
  ...responseCases,
  ...streamCases,
  ...errorsCases,
  ...hooksCases,
  ...contextCases,
  ...signalCases,
  ...connectionCases,
  ...websocketCases,
  ...mountCases,
];

/** 'server:mode' first, then 'server'. */
export function optOutFor(c: ConformanceCase, target: { server: string; mode?: string }): [string, string] | undefined {
  if (!c.optOut) return undefined;
  if (target.mode) {
    const k = `${target.server}:${target.mode}`;
    if (c.optOut[k]) return [k, c.optOut[k]];
  }
  if (c.optOut[target.server]) return [target.server, c.optOut[target.server]];
  return undefined;
}
