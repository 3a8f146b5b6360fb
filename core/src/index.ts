export * from './contract.js';
export { Response, FastResponse, toRawResponse, statusHasNoBody, type RawResponse } from './response.js';
export {
  runPipeline,
  runFetch,
  runAuthenticate,
  runAuthorize,
  runAccess,
  runLog,
  assertHandler,
  plainResponse,
  internalError,
  forbidden,
  defaultErrorLogger,
  type ErrorLogger,
} from './pipeline.js';
