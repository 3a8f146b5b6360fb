// Where the system nginx and its njs module live (Debian paths first).
import { existsSync } from 'node:fs';
import { StartupError } from '@tsgi/core/node';

const BINARIES = ['/usr/sbin/nginx', '/usr/local/sbin/nginx', '/usr/local/nginx/sbin/nginx', '/usr/bin/nginx'];
const JS_MODULES = [
  '/usr/lib/nginx/modules/ngx_http_js_module.so',
  '/usr/lib64/nginx/modules/ngx_http_js_module.so',
  '/usr/local/nginx/modules/ngx_http_js_module.so',
  '/etc/nginx/modules/ngx_http_js_module.so',
];

export function nginxBinary(required: false): string | undefined;
export function nginxBinary(required?: true): string;
export function nginxBinary(required = true): string | undefined {
  const env = process.env.TSGI_NGINX;
  const found = env && existsSync(env) ? env : BINARIES.find((b) => existsSync(b));
  if (!found && required) throw new StartupError('nginx not found (install nginx and libnginx-mod-http-js, or set TSGI_NGINX)');
  return found;
}

export function findJsModule(): string {
  const env = process.env.TSGI_NGINX_JS_MODULE;
  const found = env && existsSync(env) ? env : JS_MODULES.find((m) => existsSync(m));
  if (!found) throw new StartupError('the njs module ngx_http_js_module.so was not found (install libnginx-mod-http-js)');
  return found;
}
