// Apache configuration text for `tsgi apache conf` (a snippet to include) and
// `tsgi apache run` (a whole private server, as mod_wsgi-express generates).

/** Where Debian's apache2 package keeps its loadable modules. */
export const DEBIAN_MODULES = '/usr/lib/apache2/modules';

/** One `TsgiDaemon` line's settings (see README.md for each option). */
export interface DaemonOptions {
  name: string;
  /** The handler module (TSGI_HANDLER for the worker). */
  handler: string;
  /** The script node runs: @tsgi/apache's dist/worker.js, or a bundle with the handler baked in. */
  worker?: string;
  processes?: number;
  node?: string;
  user?: string;
  group?: string;
  maxRequests?: number;
  maxInflight?: number;
  requestTimeout?: number;
  queueTimeout?: number;
  connectTimeout?: number;
  gracefulTimeout?: number;
  maxBody?: number;
  /** Operations (issue 12) the worker does itself: recycle beyond this V8 heap (bytes), the probes, Server-Timing. */
  maxHeap?: number;
  health?: string;
  metrics?: string;
  metricsPublic?: boolean;
  serverTiming?: boolean;
  /** Workers get only PATH, `env` and their identity from Apache's environment (`clear-env`). */
  clearEnv?: boolean;
  /** The names `clear-env` keeps (`env=NAME` each). */
  env?: string[];
}

/** Quote one config token the way ap_getword_conf reads it back. */
export function quote(token: string): string {
  if (token !== '' && /^[^\s"'\\#]+$/.test(token)) return token;
  return `"${token.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

const DAEMON_KEYS: [keyof DaemonOptions, string][] = [
  ['handler', 'handler'],
  ['worker', 'worker'],
  ['processes', 'processes'],
  ['node', 'node'],
  ['user', 'user'],
  ['group', 'group'],
  ['maxRequests', 'max-requests'],
  ['maxInflight', 'max-inflight'],
  ['requestTimeout', 'request-timeout'],
  ['queueTimeout', 'queue-timeout'],
  ['connectTimeout', 'connect-timeout'],
  ['gracefulTimeout', 'graceful-timeout'],
  ['maxBody', 'max-body'],
  ['maxHeap', 'max-heap'],
  ['health', 'health'],
  ['metrics', 'metrics'],
];

export function daemonDirective(d: DaemonOptions): string {
  const parts = ['TsgiDaemon', quote(d.name)];
  for (const [key, word] of DAEMON_KEYS) {
    const v = d[key];
    if (v !== undefined && v !== '') parts.push(quote(`${word}=${v}`));
  }
  if (d.metricsPublic) parts.push('metrics-public');
  if (d.serverTiming) parts.push('server-timing');
  if (d.clearEnv) parts.push('clear-env');
  for (const name of d.env ?? []) parts.push(quote(`env=${name}`));
  return parts.join(' ');
}

export interface SnippetOptions {
  /** The module to load when not loaded yet; absent: loaded elsewhere (`a2enmod tsgi`: mods-available/tsgi.load). */
  so?: string;
  daemon: DaemonOptions;
  location: string;
}

/** The part a user includes in an existing server: module, daemon, content location. */
export function snippet(o: SnippetOptions): string {
  return [
    `# tsgi: ${o.daemon.handler}`,
    ...(o.so
      ? [`<IfModule !tsgi_module>`, `  LoadModule tsgi_module ${quote(o.so)}`, `</IfModule>`]
      : [`# mod_tsgi is loaded by mods-available/tsgi.load (a2enmod tsgi)`]),
    `# Slow clients hold a thread each while they send their request head: keep mod_reqtimeout`,
    `# loaded (Debian enables it: a2enmod reqtimeout), e.g. RequestReadTimeout header=20-40,MinRate=500 body=20,MinRate=500`,
    `# More throughput when Apache and the workers share cores; applies to all of Apache's threads:`,
    `# TsgiSchedBatch On`,
    daemonDirective(o.daemon),
    `<Location ${quote(o.location)}>`,
    `  SetHandler tsgi`,
    `  TsgiDaemonName ${quote(o.daemon.name)}`,
    `</Location>`,
    '',
  ].join('\n');
}

/** Event MPM sizing; one set for the whole server. */
export interface MpmOptions {
  startServers: number;
  serverLimit: number;
  threadsPerChild: number;
  maxRequestWorkers: number;
  minSpareThreads: number;
  maxSpareThreads: number;
}

// MaxSpareThreads = MaxRequestWorkers: children started under load are never reaped when it
// drops, since a reaped child closes its keep-alive connections (read errors for clients).
// 64 threads per child: when a request arrives on a keep-alive connection and its child has no
// idle thread at that instant, the event MPM closes the connection (the client sees a read
// error). Every tsgi request holds its thread while the worker runs, so leave headroom.
export const DEFAULT_MPM: MpmOptions = {
  startServers: 2,
  serverLimit: 4,
  threadsPerChild: 64,
  maxRequestWorkers: 256,
  minSpareThreads: 64,
  maxSpareThreads: 256,
};

export interface ServerOptions {
  root: string;
  host: string;
  port: number;
  so: string;
  daemon: DaemonOptions;
  location: string;
  /** Apache's own User/Group (only when started as root). */
  user?: string;
  group?: string;
  /** Files included at server level, after everything else. */
  includes: string[];
  mpm?: MpmOptions;
  /** Access log to stdout (the terminal); off for benchmarks. */
  accessLog?: boolean;
  /** Extra modules to load from the Debian directory, by file stem ("proxy_http"). */
  modules?: string[];
  logLevel?: string;
  gracefulShutdownTimeout?: number;
  /** ErrorLog target (default /dev/stderr; `tsgi apache run` passes a FIFO it forwards to its stderr). */
  errorLog?: string;
  /** CustomLog target (default /dev/stdout; `tsgi apache run` passes a FIFO it forwards to its stdout). */
  accessLogFile?: string;
  /** TsgiSchedBatch (default on: the private server exists for the handler). */
  schedBatch?: boolean;
}

/** The modules a private server needs; a user's --include may add more. */
export const BASE_MODULES = [
  'mpm_event',
  'authz_core',
  'authn_core',
  'authz_host',
  'authz_user',
  'mime',
  'dir',
  'alias',
  'env',
  'headers',
  'setenvif',
  'unique_id',
  // Slow clients: the event MPM reads a request head on a worker thread, so without this
  // a few hundred connections that trickle their heads hold every thread.
  'reqtimeout',
];

export function moduleLines(names: string[]): string[] {
  return names.map((m) => `<IfModule !${m}_module>\n  LoadModule ${m}_module ${DEBIAN_MODULES}/mod_${m}.so\n</IfModule>`);
}

/** The event MPM's sizing directives. */
export function mpmLines(mpm: MpmOptions): string[] {
  return [
    `StartServers ${mpm.startServers}`,
    `ServerLimit ${mpm.serverLimit}`,
    `ThreadsPerChild ${mpm.threadsPerChild}`,
    `ThreadLimit ${mpm.threadsPerChild}`,
    `MaxRequestWorkers ${mpm.maxRequestWorkers}`,
    `MinSpareThreads ${mpm.minSpareThreads}`,
    `MaxSpareThreads ${mpm.maxSpareThreads}`,
  ];
}

/** A whole httpd.conf for a private server rooted in o.root, logging to the terminal. */
export function serverConf(o: ServerOptions): string {
  const mpm = o.mpm ?? DEFAULT_MPM;
  const modules = [...BASE_MODULES, ...(o.modules ?? []).filter((m) => !BASE_MODULES.includes(m))];
  const lines = [
    `# Generated by tsgi apache run; removed when the server stops.`,
    `ServerRoot ${quote(o.root)}`,
    `DefaultRuntimeDir ${quote(o.root + '/run')}`,
    `PidFile ${quote(o.root + '/run/httpd.pid')}`,
    `Mutex file:${quote(o.root + '/run')} default`,
    `Listen ${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`,
    `ServerName ${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port}`,
    ...moduleLines(modules),
    ...(o.user ? [`User ${quote(o.user)}`, `Group ${quote(o.group ?? o.user)}`] : []),
    `ServerTokens Prod`,
    `ServerSignature Off`,
    `TypesConfig /etc/mime.types`,
    // Handlers see %2F still encoded, as on the other servers (Apache's default answers 404).
    `AllowEncodedSlashes NoDecode`,
    `ErrorLog ${quote(o.errorLog ?? '/dev/stderr')}`,
    `LogLevel ${o.logLevel ?? 'warn'}`,
    ...(o.accessLog === false
      ? []
      : [`LogFormat "%a - %u %t \\"%r\\" %>s %B \\"%{Referer}i\\" \\"%{User-Agent}i\\" %D" tsgi`, `CustomLog ${quote(o.accessLogFile ?? '/dev/stdout')} tsgi`]),
    `Timeout 60`,
    // Apache's defaults for mod_reqtimeout, spelled out: a head must arrive within 20 s
    // (40 s at most while it comes at 500 bytes/s or more), a body at 500 bytes/s.
    `RequestReadTimeout handshake=5 header=20-40,MinRate=500 body=20,MinRate=500`,
    `KeepAlive On`,
    `MaxKeepAliveRequests 0`,
    `KeepAliveTimeout 5`,
    `GracefulShutdownTimeout ${o.gracefulShutdownTimeout ?? 20}`,
    ...mpmLines(mpm),
    `MaxConnectionsPerChild 0`,
    `DocumentRoot ${quote(o.root + '/htdocs')}`,
    `<Directory />`,
    `  AllowOverride None`,
    `  Require all denied`,
    `</Directory>`,
    `<Directory ${quote(o.root + '/htdocs')}>`,
    `  Require all granted`,
    `</Directory>`,
    `LoadModule tsgi_module ${quote(o.so)}`,
    `TsgiSchedBatch ${o.schedBatch === false ? 'Off' : 'On'}`,
    daemonDirective(o.daemon),
    `<Location ${quote(o.location)}>`,
    `  Require all granted`,
    `  SetHandler tsgi`,
    `  TsgiDaemonName ${quote(o.daemon.name)}`,
    `</Location>`,
    ...o.includes.map((f) => `Include ${quote(f)}`),
    '',
  ];
  return lines.join('\n');
}
