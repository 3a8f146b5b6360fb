/**
 * esbuild `inject` file of the njs build: free references to these names in
 * the handler's bundle become references to the runtime's implementations (no
 * global object is modified). TextEncoder/TextDecoder are njs's own.
 */
export { Headers } from './webapi/headers.js';
export { Request } from './webapi/request.js';
export { Response } from './webapi/response.js';
export { URL, URLSearchParams } from './webapi/url.js';
export { ReadableStream } from './webapi/stream.js';
export { AbortController, AbortSignal } from './webapi/abort.js';
export { Blob, File, FormData } from './webapi/formdata.js';
