export { startWorker, optionsFromEnv, Worker, type WorkerOptions } from './worker.js';
export { ApacheRequest, requestTarget, requestUrl, targetUrl } from './request.js';
export { serverConf, snippet, daemonDirective, mpmLines, DEFAULT_MPM, type DaemonOptions, type ServerOptions } from './config.js';
export { main as cliMain, bundleHandler, modulePath } from './cli.js';
export * as protocol from './protocol.js';
export { buildModule, buildCodecLib, buildFuzzer, packageDir, moduleSourceDir, type BuildOptions } from './build.js';
