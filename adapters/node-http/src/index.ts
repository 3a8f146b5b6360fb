export { serve, isServeWorker, cleanEnvironment, type ServeOptions, type TsgiServer } from './serve.js';
export { toNodeListener, DEFAULT_MAX_BODY, type NodeAdapterOptions, type NodeListener } from './listener.js';
export { fastifyTsgi, type FastifyTsgiOptions } from './fastify.js';
export { NodeRequest, BodyTooLargeError } from './request.js';
export { StreamStartError, asciiHead, pumpStream, sendResponse, wireHead, type StreamWriter, type WireHead } from './send.js';
export { WebSocketHost, refuseOnSocket, DEFAULT_WS_MAX_BUFFERED, WS_CLOSE_WAIT_MS, type WebSocketOptions } from './websocket.js';
