/**
 * nginx configuration for both modes. `mainConf` is the whole nginx.conf that
 * `tsgi nginx run` starts; `snippet` is what `tsgi nginx conf` prints for an
 * existing nginx.
 */
import { existsSync } from 'node:fs';
import { mountPrefix } from '@tsgi/core';

export type Mode = 'embedded' | 'workers';

/** Internal location that auth_request points at; authenticate/authorize run there. */
export const AUTH_LOCATION = '/_tsgi_auth';
/** workers mode: internal location an upgrade request (WebSocket) is proxied from, with its own timeouts. */
export const UPGRADE_LOCATION = '/_tsgi_upgrade';
/**
 * How long an upgraded connection (a WebSocket) may stay silent in both directions before nginx
 * closes it: an hour (a client or handler that keeps one longer pings); 300 s for other requests.
 */
export const UPGRADE_IDLE_TIMEOUT = '3600s';
export const UPSTREAM = 'tsgi_workers';
/** njs module name in js_import. */
export const NJS_MODULE = 'tsgi';

export interface SiteOptions {
  mode: Mode;
  /** Location served by the handler (default '/'). */
  location?: string;
  /** Largest request body, bytes (413 above). */
  maxBody: number;
  /** embedded: path of the njs bundle. */
  bundle?: string;
  /** workers: unix socket paths of the Node workers. */
  sockets?: string[];
  /** workers: the per-start secret nginx sends and the workers check (X-Tsgi-Secret). */
  secret?: string;
  /** workers: instead of `secret`, the include file `tsgi nginx workers` writes with the header line in it. */
  secretFile?: string;
  /** An access_log of the tsgi location itself (a system nginx logs elsewhere at http level: not twice). */
  locationAccessLog?: string;
  /** Files included at http level. */
  include?: string[];
  /** Files included inside the generated server block (guarded locations, static files). */
  includeServer?: string[];
  /** Read-only JSON objects: embedded -> js_preload_object (shared, not cloned per request). */
  preload?: { name: string; file: string }[];
  /** workers: nginx's proxy_read_timeout, seconds (default 300): longer than the workers' own request-timeout and stall limit. */
  readTimeout?: number;
}

export interface MainOptions extends SiteOptions {
  /** Temp dir holding everything: pid, temp paths, bundle, sockets. */
  dir: string;
  host: string;
  port: number;
  /** Unprivileged user (and its group) for nginx workers when started as root. */
  user?: string;
  group?: string;
  workerProcesses?: number;
  jsModule?: string;
  /** Access log destination (default /dev/stdout); 'off' turns it off. */
  accessLog?: string;
  errorLogLevel?: string;
  /** Extra server-level lines (the bench adds its comparison locations). */
  extraServer?: string;
  /** Extra http-level lines. */
  extraHttp?: string;
}

const q = (s: string): string => (/^[\w./:@-]+$/.test(s) ? s : JSON.stringify(s));

/** The log format: combined, plus $tsgi_log (embedded: evaluating it runs the handler's log hook). */
function logFormat(mode: Mode): string {
  const hook = mode === 'embedded' ? '$tsgi_log' : '';
  return `log_format tsgi '$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time${hook}';`;
}

/**
 * "1" when the request line is origin-form and Host is plain host[:port] characters within
 * wire.ts isAuthority (a subset: letters, digits, . _ ~ -, a port up to 65535, 255 bytes at most).
 * Such a request goes to the bridge's `plain` entry, which takes Host as the authority without
 * running wire.ts requestAuthority (its per-character loop is slow in njs 0.7.9); anything else
 * goes to `content` and gets the full check there. The regex is a subset of the rule, never a copy
 * of it: whatever it does not accept, requestAuthority decides.
 */
export const PLAIN_HOST_VAR = 'tsgi_plain_host';
export function plainHostMap(): string[] {
  const port = '(?::(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?';
  return [
    `# wire.ts: Host is the request's authority when the target is origin-form (the bridge checks the rest)`,
    `map "$http_host $request" $${PLAIN_HOST_VAR} { default ""; "~*^[a-z0-9._~-]{1,250}${port} [^ ]+ /" 1; }`,
  ];
}

/** http-level directives of the tsgi site (without the server block). */
export function httpPart(o: SiteOptions): string {
  const lines: string[] = [];
  lines.push(
    `large_client_header_buffers 4 32k;`,
    logFormat(o.mode),
  );
  if (o.mode === 'embedded') {
    lines.push(
      `js_import ${NJS_MODULE} from ${q(o.bundle!)};`,
      `# the user authenticate set (content phase or auth_request), read by the log hook`,
      `js_var $tsgi_user;`,
      `# ctx.basePath: empty unless a mounted location sets it`,
      `js_var $${BASE_PATH_VAR};`,
      `# used only in the log_format, so the handler's log hook runs in the log phase`,
      `js_set $tsgi_log ${NJS_MODULE}.log;`,
      `# the WWW-Authenticate of a 401 from authenticate, for auth_request-guarded locations`,
      `# (auth_request does not pass it on from a js_content subrequest by itself)`,
      `map $host $tsgi_auth_challenge { default $sent_http_www_authenticate; }`,
      ...plainHostMap(),
      ...(o.preload ?? []).map((p) => `js_preload_object ${p.name} from ${q(p.file)};`),
    );
  } else {
    lines.push(
      `# empty: auth_request passes a proxied 401's WWW-Authenticate on by itself (embedded mode needs the variable)`,
      `map $host $tsgi_auth_challenge { default ""; }`,
      `upstream ${UPSTREAM} {`,
      ...o.sockets!.map((s) => `  server unix:${s} max_fails=0;`),
      `  keepalive 64;`,
      // nginx, not the worker, closes idle connections (the worker waits 75 s), so it never reuses one the
      // worker is closing; short, because a draining worker waits for nginx to close its idle connections.
      `  keepalive_timeout 4s;`,
      `}`,
    );
  }
  for (const f of o.include ?? []) lines.push(`include ${q(f)};`);
  return lines.join('\n');
}

/**
 * What every location that proxies to the workers sends. The workers trust Host, X-Tsgi-Request,
 * X-Real-IP, X-Forwarded-Proto and X-Tsgi-Phase only on a request that carries the per-start secret
 * (403 otherwise), and hide the X-Tsgi-* headers from the handler. Each line here is work on every
 * request, for nginx and for the worker: nothing the worker can derive is sent.
 */
export function proxyCommon(o: { secret?: string; secretFile?: string; readTimeout?: number; basePath?: string; upgrade?: boolean } = {}): string[] {
  return [
    `proxy_http_version 1.1;`,
    // An upgrade (WebSocket) passes Upgrade and Connection on, so the worker can answer 101 and nginx
    // tunnels the connection; any other request keeps the upstream connection alive (Connection "").
    ...(o.upgrade ? [`proxy_set_header Upgrade $http_upgrade;`, `proxy_set_header Connection upgrade;`] : [`proxy_set_header Connection "";`]),
    ...(o.secret ? [`proxy_set_header X-Tsgi-Secret ${o.secret};`] : []),
    // Its own file, readable by nginx's master only: the config that includes it holds no secret.
    ...(o.secretFile ? [`include ${q(o.secretFile)};`] : []),
    // ctx.basePath: the location's prefix; "" (not sent) replaces a client's own at the root.
    `proxy_set_header ${BASE_PATH_HEADER} ${o.basePath ? q(o.basePath) : '""'};`,
    `proxy_set_header Host $http_host;`,
    // The request line as the client sent it (nginx forwards origin-form): the worker applies core's
    // requestAuthority to its target, so an absolute-form target's authority wins (RFC 9112 3.2.2).
    // A copy costs nginx less than a regex map on $request (about 400 instructions against 2,000).
    `proxy_set_header X-Tsgi-Request $request;`,
    `proxy_set_header X-Real-IP $remote_addr;`,
    `proxy_set_header X-Forwarded-Proto $scheme;`,
    `proxy_set_header X-Forwarded-For "";`,
    // Streams reach the client as the worker writes them, as in embedded mode.
    `proxy_buffering off;`,
    // The response head must fit this buffer (one page by default: a 502 "upstream sent too big header"
    // above ~4 KB): core allows 64 KiB of handler headers (wire.ts MAX_RESPONSE_HEADER_BYTES), plus
    // the status line and Node's own lines. With proxy_buffering off only this buffer is used; the
    // other two lines satisfy nginx's checks.
    `proxy_buffer_size 72k;`,
    `proxy_buffers 4 72k;`,
    `proxy_busy_buffers_size 144k;`,
    // Uploads reach the worker as they arrive, as on the other hosts.
    `proxy_request_buffering off;`,
    // The workers answer a request without progress 504 at their request-timeout (a stalled worker is
    // replaced a little later): nginx waits longer, so the answer is theirs. A tunnel (WebSocket) idles longer.
    ...(o.upgrade ? [`proxy_read_timeout ${UPGRADE_IDLE_TIMEOUT};`, `proxy_send_timeout ${UPGRADE_IDLE_TIMEOUT};`] : [`proxy_read_timeout ${o.readTimeout ?? 300}s;`]),
    // Never re-run a request on another worker: what a dead worker was handed fails with 502 (a request
    // that kills workers must not take them all down in turn). nginx cannot tell a connect error from
    // a failure after sending (both are "error" in ngx_http_upstream_next); none is left to retry: the
    // supervisor keeps each socket listening while its worker respawns, a draining worker serves
    // its open connections until nginx closes them, and a reload retires a worker only once the
    // nginx workers that knew its socket are gone.
    `proxy_next_upstream off;`,
  ];
}

/** The header that carries ctx.basePath to the workers (trusted, like the others, only with the secret). */
export const BASE_PATH_HEADER = 'X-Tsgi-Base-Path';
/** The variable that carries ctx.basePath to the njs bridge (set per mounted location). */
export const BASE_PATH_VAR = 'tsgi_base_path';

/**
 * The location blocks that serve a mount: `/` as is; a prefix /app as `location = /app` and
 * `location /app/` (a bare `location /app` would also take /apps), each with the same `body`.
 */
function mountLocations(location: string, body: (base: string) => string[]): string[] {
  const base = mountPrefix(location);
  const heads = base === '' ? [`location ${location}`] : [`location = ${q(base)}`, `location ${q(`${base}/`)}`];
  return heads.flatMap((h) => [`${h} {`, ...body(base), `}`]);
}

/** server-level locations of the tsgi site. */
export function serverPart(o: SiteOptions): string {
  const loc = o.location ?? '/';
  const lines: string[] = [];
  const max = o.maxBody;
  // In the location, not at http level: the other sites of a system nginx keep their own limits.
  const body =
    o.mode === 'embedded'
      ? [
          `  # request bodies stay in memory: njs 0.7.9 throws "request body is in a file" when one spills`,
          `  client_max_body_size ${max};`,
          `  client_body_buffer_size ${max};`,
          `  # streamed chunks (r.send) leave at once`,
          `  postpone_output 0;`,
        ]
      : [
          `  # uploads stream on to the workers as they arrive (proxy_request_buffering off), through this buffer`,
          `  client_max_body_size ${max};`,
          `  client_body_buffer_size 64k;`,
        ];
  const log = o.locationAccessLog ? [`  # the handler's log hook runs from this log's format ($tsgi_log); it replaces the inherited log here`, `  access_log ${q(o.locationAccessLog)} tsgi;`] : [];
  if (o.mode === 'embedded') {
    lines.push(
      `# auth_request target: runs authenticate + authorize for other locations`,
      `location = ${AUTH_LOCATION} {`,
      `  internal;`,
      `  js_content ${NJS_MODULE}.auth;`,
      `}`,
      ...mountLocations(loc, (base) => [
        ...body,
        ...log,
        `  # a response without Content-Type keeps none (as on Node), instead of nginx's default_type`,
        `  default_type "";`,
        ...(base ? [`  # ctx.basePath`, `  set $${BASE_PATH_VAR} ${q(base)};`] : []),
        `  js_content ${NJS_MODULE}.content;`,
        `  # the usual request (origin-form target, plain Host), vetted in C: the bridge need not check it again`,
        `  if ($${PLAIN_HOST_VAR}) { js_content ${NJS_MODULE}.plain; }`,
      ]),
    );
  } else {
    lines.push(
      `# auth_request target: the worker runs only authenticate + authorize (x-tsgi-phase: access)`,
      `location = ${AUTH_LOCATION} {`,
      `  internal;`,
      `  proxy_pass http://${UPSTREAM}$request_uri;`,
      `  proxy_pass_request_body off;`,
      `  proxy_set_header Content-Length "";`,
      `  proxy_set_header X-Tsgi-Phase access;`,
      ...proxyCommon(o).map((l) => `  ${l}`),
      `}`,
      `# an upgrade request (WebSocket): the worker runs authenticate, authorize and upgrade, then the`,
      `# socket; nginx relays it with the upgrade location's timeouts (request.url comes from X-Tsgi-Request)`,
      `location = ${UPGRADE_LOCATION} {`,
      `  internal;`,
      ...body,
      ...log,
      `  proxy_pass http://${UPSTREAM}$request_uri;`,
      `  proxy_set_header X-Tsgi-Phase "";`,
      ...proxyCommon({ ...o, basePath: mountPrefix(loc), upgrade: true }).map((l) => `  ${l}`),
      `}`,
      ...mountLocations(loc, (base) => [
        `  if ($http_upgrade) { rewrite ^ ${UPGRADE_LOCATION} last; }`,
        ...body,
        ...log,
        `  proxy_pass http://${UPSTREAM};`,
        `  # clients cannot ask for the access-only phase`,
        `  proxy_set_header X-Tsgi-Phase "";`,
        ...proxyCommon({ ...o, basePath: base }).map((l) => `  ${l}`),
      ]),
    );
  }
  for (const f of o.includeServer ?? []) lines.push(`include ${q(f)};`);
  return lines.join('\n');
}

const indent = (s: string, n: number): string =>
  s
    .split('\n')
    .map((l) => (l ? ' '.repeat(n) + l : l))
    .join('\n');

/** How a location elsewhere is guarded by the handler's authenticate/authorize. */
export function guardExample(location = '/files/', root = '/var/www'): string {
  return [
    `location ${location} {`,
    `  auth_request ${AUTH_LOCATION};`,
    `  # the user authenticate returned, for $tsgi_user in logs or headers`,
    `  auth_request_set $tsgi_user $sent_http_x_tsgi_user;`,
    `  # a rejecting 401's challenge reaches the client (same in both modes)`,
    `  auth_request_set $tsgi_challenge $tsgi_auth_challenge;`,
    `  add_header WWW-Authenticate $tsgi_challenge always;`,
    `  root ${root};`,
    `}`,
  ].join('\n');
}

export function findMimeTypes(): string | undefined {
  return ['/etc/nginx/mime.types', '/usr/local/nginx/conf/mime.types'].find((f) => existsSync(f));
}

/** The whole nginx.conf of a private instance. */
export function mainConf(o: MainOptions): string {
  const tmp = `${o.dir}/tmp`;
  const mime = findMimeTypes();
  const out = [
    `# generated by tsgi nginx run (${o.mode} mode)`,
    o.user ? `user ${o.user}${o.group ? ` ${o.group}` : ''};` : `# not root: nginx workers run as the current user`,
    `worker_processes ${o.workerProcesses ?? 1};`,
    `daemon off;`,
    `master_process on;`,
    `pid ${o.dir}/nginx.pid;`,
    `error_log stderr ${o.errorLogLevel ?? 'warn'};`,
    o.mode === 'embedded' ? `load_module ${o.jsModule};` : '',
    // the $tsgi_plain_host map's regex runs on every request
    o.mode === 'embedded' ? `pcre_jit on;` : '',
    `events { worker_connections 4096; }`,
    `http {`,
    mime ? `  include ${mime};` : '',
    `  default_type application/octet-stream;`,
    `  client_body_temp_path ${tmp}/body;`,
    `  proxy_temp_path ${tmp}/proxy;`,
    `  fastcgi_temp_path ${tmp}/fastcgi;`,
    `  uwsgi_temp_path ${tmp}/uwsgi;`,
    `  scgi_temp_path ${tmp}/scgi;`,
    `  server_tokens off;`,
    `  sendfile on;`,
    `  tcp_nodelay on;`,
    `  keepalive_timeout 65s;`,
    `  keepalive_requests 100000;`,
    indent(httpPart(o), 2),
    `  access_log ${o.accessLog === 'off' ? 'off' : `${o.accessLog ?? '/dev/stdout'} tsgi`};`,
    o.extraHttp ? indent(o.extraHttp, 2) : '',
    `  server {`,
    `    listen ${o.host.includes(':') ? `[${o.host}]` : o.host}:${o.port};`,
    `    server_name _;`,
    indent(serverPart(o), 4),
    o.extraServer ? indent(o.extraServer, 4) : '',
    `  }`,
    `}`,
    ``,
  ];
  return out.filter((l) => l !== '').join('\n') + '\n';
}

/** Which part `tsgi nginx conf --part` prints: the http-level lines, the server-level ones, or both (split by a marker line). */
export type Part = 'http' | 'server' | 'both';

/** The file of `tsgi nginx workers` in its socket dir that holds the secret header line (config.ts proxyCommon includes it). */
export const SECRET_FILE = 'secret.conf';

/** Where a Debian nginx log lives: the tsgi location logs there itself (embedded mode's log hook). */
export const DEBIAN_ACCESS_LOG = '/var/log/nginx/access.log';

/** The marker lines between the parts when both are printed. */
export const PART_MARK = { http: '# ---- http part: in the http {} block (Debian: /etc/nginx/conf.d/tsgi.conf) ----', server: '# ---- server part: inside a server {} block (Debian: /etc/nginx/snippets/tsgi.conf, included from your site) ----' };

/**
 * What `tsgi nginx conf` prints for an existing nginx: parts that pass `nginx -t` on Debian's layout as
 * they are (the js module is loaded there already; the http part goes in conf.d/, the server part in a
 * site's server {}; no second access log).
 */
export function snippet(o: SiteOptions & { buildDir?: string; handler: string; part?: Part; workersCommand?: string; buildCommand?: string }): string {
  const part = o.part ?? 'both';
  const guide =
    o.mode === 'embedded'
      ? [
          `# tsgi embedded (njs) for ${o.handler}`,
          `# 1. ${o.buildCommand ?? `tsgi nginx build ${o.handler} -o ${o.buildDir}`}`,
          `# 2. the js module: Debian's libnginx-mod-http-js loads it (modules-enabled/50-mod-http-js.conf); elsewhere, in`,
          `#    the main context: load_module modules/ngx_http_js_module.so;  (optional there: pcre_jit on;)`,
        ]
      : [
          `# tsgi workers mode for ${o.handler}: nginx in front of ${o.sockets!.length} Node worker(s)`,
          `# 1. start the workers first (they make the sockets and ${o.secretFile ?? SECRET_FILE}):`,
          `#      ${o.workersCommand ?? `tsgi nginx workers ${o.handler} --processes ${o.sockets!.length}`}`,
          `#    (tsgi systemd nginx-workers prints a unit for it, ordered before nginx)`,
        ];
  const steps = [
    `# ${o.mode === 'embedded' ? 3 : 2}. the http part in the http {} block (Debian: tsgi nginx conf ... --part http > /etc/nginx/conf.d/tsgi.conf),`,
    `#    the server part inside a server {} (Debian: --part server > /etc/nginx/snippets/tsgi.conf, and`,
    `#    include snippets/tsgi.conf; in that server {}); then nginx -t && systemctl reload nginx`,
  ];
  const guard = [`# optional: guard another location with the handler's authenticate/authorize`, ...guardExample().split('\n').map((l) => `#   ${l}`)];
  if (part === 'http') return [`# tsgi (${o.mode}) for ${o.handler}: the http part (in http {})`, httpPart(o), ''].join('\n');
  if (part === 'server') return [`# tsgi (${o.mode}) for ${o.handler}: the server part (inside a server {})`, serverPart(o), ...guard, ''].join('\n');
  return [...guide, ...steps, PART_MARK.http, httpPart(o), PART_MARK.server, serverPart(o), ...guard, ''].join('\n');
}
