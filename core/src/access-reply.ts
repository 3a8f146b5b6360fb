/**
 * The answer to an access-only pipeline run for nginx's auth_request, the
 * same in both nginx modes. Portable like wire.ts (a function declaration
 * only): the njs runtime bundles it, so embedded mode and workers mode share
 * this one mapping.
 */

/**
 * auth_request understands 2xx (allow), 401 and 403, and turns anything else
 * into a 500; so: allowed → 204 with `x-tsgi-user` when authenticate named
 * one; refused with 401 → 401 with the handler's WWW-Authenticate; refused
 * otherwise → 403 with the handler's status in `x-tsgi-status`; the bare 500
 * stays 500. Returns status and headers only: auth_request discards bodies.
 */
export function accessReply(
  refused: { status: number; headers: { get(name: string): string | null } } | undefined,
  user: string | undefined,
): { status: number; headers: string[] } {
  if (!refused) return { status: 204, headers: user === undefined ? [] : ['x-tsgi-user', user] };
  if (refused.status === 500) return { status: 500, headers: [] };
  if (refused.status === 401) {
    const challenge = refused.headers.get('www-authenticate');
    return { status: 401, headers: challenge === null ? [] : ['www-authenticate', challenge] };
  }
  return { status: 403, headers: ['x-tsgi-status', String(refused.status)] };
}
