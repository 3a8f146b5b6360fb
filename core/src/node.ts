// Node-only helpers (process, fs, esbuild); kept out of the main entry so the njs bundle never sees them.
export { Lifecycle, RequestContext, type ClientAddress } from './node/lifecycle.js';
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
export { LazyRequest, absoluteUrl, hostAuthority, originUrl } from './node/lazy-request.js';
export { bindListenHandle, bindUnixHandle, checkBoundPort, listenError, type ListenHandle } from './node/listen-handle.js';
export { EXIT_STARTUP, Backoff, BACKOFF_FIRST_MS, BACKOFF_MAX_MS, BACKOFF_RESET_MS, startupReason } from './node/policy.js';
export { writeFileBeside } from './node/files.js';
export { drainPeriod, shutdown, type DrainPeriod, type ShutdownSteps } from './node/shutdown.js';
export { UsageError, VALUE_FORMS, commonOptions, didYouMean, dispatch, envAllowList, existingFile, failureLines, groupHelp, helpText, optionsTable, parseCommand, pickCommand, usageLine, DEFAULT_GRACEFUL_MS, DEFAULT_MAX_BODY, DEFAULT_QUEUE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, DEFAULT_PORT, DEFAULT_WORKER_USERS, type ArgSpec, type CommandSpec, type OptionSpec, type Options, type Parsed, type Values } from './node/args.js';
export { claimPort, hostPort, lookupGroup, lookupUser, runPrivateServer, serverOptions, workerAccount, type Account, type Launch, type PrivateServer, type Site } from './node/host.js';
export { WorkerPool, stopProcess, reportReady, reportStartupFailure, type PoolWorker, type WorkerPoolOptions, type WorkerReport, type ReadyReport } from './node/pool.js';
// Operations (issue 12): timeouts, admission, metrics, health, Server-Timing, recycling.
export { Admission, type Admit, type AdmissionOptions } from './node/ops/admission.js';
export { DURATION_BUCKETS, Metrics, PROMETHEUS_TYPE, RESTART_REASONS, WORKER_STATES, emptySnapshot, mergeSnapshots, parsePrometheus, renderPrometheus, type MetricsSnapshot, type PoolFigures, type RestartReason, type Sample, type WorkerState } from './node/ops/metrics.js';
export { DEFAULT_OPS, needsSupervisor, opsOptions, opsSettings, type OpsSettings } from './node/ops/options.js';
export { Deadlines, type Timed, type Watched } from './node/ops/deadlines.js';
export { Operations, RECYCLE_JITTER, answerHeaders, isLoopback, serverTimingValue, timeoutError, type Probe, type ProbeAnswer } from './node/ops/operations.js';
export { HEARTBEAT_MS, STALL_GRACE_MS, linkWorker, type LinkMessage, type WorkerLink } from './node/ops/worker-link.js';
export { authMs, timedHandler, withServerTiming } from './node/ops/timing.js';
export { accessLogLine, timeLocal, type AccessEntry } from './node/access-log.js';
export { watchHandler, WATCH_DEBOUNCE_MS, type WatchOptions, type Watching } from './node/watch.js';
// WebSocket (issue 13): the ws-based kit every Node host's upgrade path uses.
export { DEFAULT_WS_MAX_BUFFERED, WS_CLOSE_WAIT_MS, WS_GOING_AWAY, WebSocketKit, handshakeRefusal, type HandshakeRefusal, type SocketSession, type WebSocketKitOptions } from './node/websocket.js';
export { runAccess } from './node/access-run.js';
