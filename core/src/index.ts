export * from './contract.js';
export { Response, FastResponse, toRawResponse, withHeaders, type RawResponse } from './response.js';
export * from './wire.js';
export * from './server-timing.js';
export { handlerProblem } from './handler-shape.js';
export {
  runPipeline,
  runPipelineThen,
  runFetch,
  runAuthenticate,
  runAuthorize,
  runAccess,
  runPhase,
  accessReply,
  type Phase,
  type PhaseDone,
  runLog,
  runUpgrade,
  runSocketHook,
  isWebSocketUpgrade,
  assertHandler,
  plainResponse,
  internalError,
  forbidden,
  defaultErrorLogger,
  type ErrorLogger,
} from './pipeline.js';
