// Node-only helpers (process, fs, esbuild); kept out of the main entry so the njs bundle never sees them.
export { Lifecycle, RequestContext } from './lifecycle.js';
export { loadHandler, loadFailure, initHandler, compileTypeScript, StartupError } from './load.js';
export { LazyRequest, absoluteUrl, originUrl } from './lazy-request.js';
