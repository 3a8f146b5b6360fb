/**
 * What the loader injects into a handler's own files (load.ts `injected`):
 * their free `Response` is @tsgi/core's fast Response. The loader keeps the
 * import below external, so the handler shares the server's one class.
 */
export { FastResponse as Response } from '../response.js';
