/**
 * esbuild `inject` file: free references to these globals in the handler's
 * bundle become references to the runtime's implementations (no global object
 * is modified). TextEncoder/TextDecoder are native in njs 0.7.9 and not listed.
 */
export { Headers, Request, Response, URL, URLSearchParams, ReadableStream, AbortController, AbortSignal, Blob, File, FormData } from './webapi.js';
