/**
 * nginx auth_request on a Node worker: authenticate + authorize alone (core's runPhase 'access'),
 * answered as embedded nginx answers (accessReply), as a Response for the host's writer.
 */
import { accessReply } from '../access-reply.js';
import type { Context, Handler } from '../contract.js';
import { internalError, runPhase, type ErrorLogger } from '../pipeline.js';
import { FastResponse } from '../response.js';

/** Never rejects: a failing hook is the bare 500, logged by runPhase. */
export function runAccess(handler: Handler, request: Request, ctx: Context, log: ErrorLogger): Promise<Response> {
  return Promise.resolve(runPhase(handler, 'access', request, ctx, log)).then((refused) => {
    const a = accessReply(refused, ctx.user);
    if (a.status === 500) return internalError();
    const headers: [string, string][] = [];
    for (let i = 0; i < a.headers.length; i += 2) headers.push([a.headers[i]!, a.headers[i + 1]!]);
    return new FastResponse(null, { status: a.status, headers }) as unknown as Response;
  });
}
