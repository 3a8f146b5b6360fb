// Node-only helpers (process, fs, esbuild); kept out of the main entry so the njs bundle never sees them.
export { Lifecycle, RequestContext } from './node/lifecycle.js';
export {
  loadHandler,
  loadFailure,
  initHandler,
  compileHandler,
  compileTypeScript,
  handlerInputs,
  cacheDir,
  bundleWorker,
  StartupError,
  type Compiled,
  type LoadOptions,
  type Preload,
  type WorkerBundleOptions,
} from './node/load.js';
export { LazyRequest, absoluteUrl, originUrl } from './node/lazy-request.js';
export { bindListenHandle, bindUnixHandle, checkBoundPort, listenError, type ListenHandle } from './node/listen-handle.js';
export { EXIT_STARTUP, Backoff, BACKOFF_FIRST_MS, BACKOFF_MAX_MS, BACKOFF_RESET_MS, startupReason } from './node/policy.js';
export { shutdown, type ShutdownSteps } from './node/shutdown.js';
export { UsageError, VALUE_FORMS, commonOptions, didYouMean, dispatch, envAllowList, existingFile, failureLines, groupHelp, helpText, optionsTable, parseCommand, pickCommand, usageLine, DEFAULT_GRACEFUL_MS, DEFAULT_MAX_BODY, DEFAULT_PORT, DEFAULT_WORKER_USERS, type ArgSpec, type CommandSpec, type OptionSpec, type Options, type Parsed, type Values } from './node/args.js';
export { claimPort, hostPort, lookupGroup, lookupUser, runPrivateServer, serverOptions, workerAccount, type Account, type Launch, type PrivateServer, type Site } from './node/host.js';
export { WorkerPool, stopProcess, reportReady, reportStartupFailure, type PoolWorker, type WorkerPoolOptions, type WorkerReport, type ReadyReport } from './node/pool.js';
export { accessLogLine, timeLocal, type AccessEntry } from './node/access-log.js';
export { watchHandler, WATCH_DEBOUNCE_MS, type WatchOptions, type Watching } from './node/watch.js';
