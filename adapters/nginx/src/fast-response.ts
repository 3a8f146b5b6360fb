/**
 * esbuild inject file for the Node worker bundle: free `Response` references
 * (the handler's, and the adapter's own) resolve to this constructor instead of
 * undici's, whose constructor alone costs about as much as the rest of a hello
 * request. `new Response(...)` gives @tsgi/core's fast Response; `instanceof
 * Response` holds for native and fast ones alike (the prototype is undici's).
 * No global is touched.
 */
import { Response as Fast } from '@tsgi/core';

const Native = globalThis.Response;

function ResponseShim(this: unknown, body?: BodyInit | null, init?: ResponseInit): globalThis.Response {
  return new Fast(body, init);
}
ResponseShim.prototype = Native.prototype;
Object.setPrototypeOf(ResponseShim, Native);
Object.defineProperties(ResponseShim, {
  json: { value: (data: unknown, init?: ResponseInit) => Fast.json(data, init), writable: true, configurable: true },
  redirect: { value: (url: string | URL, status?: number) => Native.redirect(url, status), writable: true, configurable: true },
  error: { value: () => Native.error(), writable: true, configurable: true },
});

export const Response = ResponseShim as unknown as typeof globalThis.Response;
