/**
 * The operations settings (issue 12) as every Node host takes them: the
 * command-line options (args.ts commonOptions, spread into each command with
 * `opsOptions`) turned into one plain object (`opsSettings`) that also
 * crosses to workers as JSON.
 */
import { DEFAULT_QUEUE_TIMEOUT_MS, DEFAULT_REQUEST_TIMEOUT_MS, commonOptions } from '../args.js';

export interface OpsSettings {
  /** 0: no deadline. */
  requestTimeoutMs: number;
  /** 0: no limit. */
  maxInflight: number;
  queueTimeoutMs: number;
  /** 0: never recycle. */
  maxRequests: number;
  /** Bytes of V8 heap used; 0: never recycle. */
  maxHeapBytes: number;
  healthPath?: string;
  metricsPath?: string;
  /** Serve metricsPath to non-loopback clients too. */
  metricsPublic: boolean;
  serverTiming: boolean;
  /** --drain-delay: how long a stop keeps serving with the health path at 503 first (0: none). */
  drainDelayMs: number;
}

export const DEFAULT_OPS: OpsSettings = {
  requestTimeoutMs: DEFAULT_REQUEST_TIMEOUT_MS,
  maxInflight: 0,
  queueTimeoutMs: DEFAULT_QUEUE_TIMEOUT_MS,
  maxRequests: 0,
  maxHeapBytes: 0,
  metricsPublic: false,
  serverTiming: false,
  drainDelayMs: 0,
};

/** The operations options, to spread into a command's options. */
export const opsOptions = {
  'request-timeout': commonOptions['request-timeout'],
  'max-inflight': commonOptions['max-inflight'],
  'queue-timeout': commonOptions['queue-timeout'],
  'max-requests': commonOptions['max-requests'],
  'max-heap': commonOptions['max-heap'],
  health: commonOptions.health,
  metrics: commonOptions.metrics,
  'metrics-public': commonOptions['metrics-public'],
  'server-timing': commonOptions['server-timing'],
  'drain-delay': commonOptions['drain-delay'],
} as const;

/** The parsed values of `opsOptions` as settings. Throws StartupError-free: the parser checked every value. */
export function opsSettings(v: {
  'request-timeout': number;
  'max-inflight': number;
  'queue-timeout': number;
  'max-requests': number;
  'max-heap': number;
  health?: string;
  metrics?: string;
  'metrics-public': boolean;
  'server-timing': boolean;
  'drain-delay': number;
}): OpsSettings {
  return {
    requestTimeoutMs: v['request-timeout'],
    maxInflight: v['max-inflight'],
    queueTimeoutMs: v['queue-timeout'],
    maxRequests: v['max-requests'],
    maxHeapBytes: v['max-heap'],
    healthPath: v.health,
    metricsPath: v.metrics,
    metricsPublic: v['metrics-public'],
    serverTiming: v['server-timing'],
    drainDelayMs: v['drain-delay'],
  };
}

/** Whether these settings need a supervisor to replace the process (recycling). */
export const needsSupervisor = (s: Partial<OpsSettings>): boolean => (s.maxRequests ?? 0) > 0 || (s.maxHeapBytes ?? 0) > 0;
