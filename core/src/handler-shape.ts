/**
 * The shape a handler module's default export must have. Portable like
 * wire.ts (function declarations only at the top level): the njs runtime
 * bundles it for its load check, pipeline.ts's assertHandler uses it on Node.
 */

/** What is wrong with a handler object, or null when it has the shape. */
export function handlerProblem(h: unknown): string | null {
  const o = h as Record<string, unknown> | null | undefined;
  if (!o || (typeof o !== 'object' && typeof o !== 'function') || typeof o.fetch !== 'function') {
    return 'the default export must be an object with a fetch(request, ctx) method';
  }
  const hooks = ['authenticate', 'authorize', 'log', 'init', 'close', 'upgrade'];
  for (let i = 0; i < hooks.length; i++) {
    const v = o[hooks[i]!];
    if (v !== undefined && typeof v !== 'function') return `${hooks[i]} must be a function`;
  }
  const ws = o.websocket as Record<string, unknown> | null | undefined;
  if (ws === undefined) return null;
  if (!ws || typeof ws !== 'object') return 'websocket must be an object of hooks (open, message, close, error)';
  const wsHooks = ['open', 'message', 'close', 'error'];
  for (let i = 0; i < wsHooks.length; i++) {
    const v = ws[wsHooks[i]!];
    if (v !== undefined && typeof v !== 'function') return `websocket.${wsHooks[i]} must be a function`;
  }
  return null;
}
