/**
 * The runtime tests' nginx: a private nginx + njs serving njs modules built
 * with the product build's compiler (src/build.ts compileForNjs).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, chmodSync, existsSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '@tsgi/conformance/testing';
import { compileForNjs, defaultRuntimeDir } from '../src/build.js';

export const RUNTIME_DIR = defaultRuntimeDir;
export const NJS_MODULE = '/usr/lib/nginx/modules/ngx_http_js_module.so';

/** Bundles `entrySource` (ESM text; may import from RUNTIME_DIR) into one njs 0.7.9 module. */
export function buildNjs(entrySource: string, resolveDir: string): Promise<string> {
  return compileForNjs(entrySource, resolveDir);
}

export { freePort };

export interface Nginx {
  url: string;
  port: number;
  dir: string;
  errorLog(): string;
  accessLog(): string;
  stop(): Promise<void>;
}

/**
 * Starts `nginx -c <dir>/nginx.conf` (foreground, one worker) serving `moduleJs`
 * as njs module `m`. `server` is the server-block body (locations).
 * `http` adds http-level directives.
 */
export async function startNginx(modules: string | Record<string, string>, server: string, http = ''): Promise<Nginx> {
  if (!existsSync(NJS_MODULE)) throw new Error(`njs module missing: ${NJS_MODULE} (apt-get install nginx libnginx-mod-http-js)`);
  const dir = mkdtempSync(join(tmpdir(), 'tsgi-njs-'));
  chmodSync(dir, 0o755);
  const mods = typeof modules === 'string' ? { m: modules } : modules;
  let imports = '';
  for (const name of Object.keys(mods)) {
    writeFileSync(join(dir, name + '.js'), mods[name]!, { mode: 0o644 });
    imports += `js_import ${name} from ${name}.js;\n  `;
  }
  const port = await freePort();
  const asRoot = process.getuid?.() === 0;
  const conf = `load_module ${NJS_MODULE};
${asRoot ? 'user www-data;' : ''}
daemon off; master_process on; worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 256; }
http {
  client_body_temp_path ${dir}/body; proxy_temp_path ${dir}/proxy; fastcgi_temp_path ${dir}/fcgi;
  uwsgi_temp_path ${dir}/uwsgi; scgi_temp_path ${dir}/scgi;
  default_type "";
  js_path ${dir};
  ${imports}
  js_var $tsgi_user;
  client_max_body_size 8m; client_body_buffer_size 8m;
  postpone_output 0;
  ${http}
  ${http.includes('$tsgi_log') ? `log_format tsgi '$remote_addr "$request" $status $body_bytes_sent$tsgi_log';` : ''}
  access_log ${dir}/access.log ${http.includes('$tsgi_log') ? 'tsgi' : 'combined'};
  server {
    listen 127.0.0.1:${port};
    ${server}
  }
}
`;
  writeFileSync(join(dir, 'nginx.conf'), conf, { mode: 0o644 });
  const proc: ChildProcess = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  proc.stderr!.on('data', (d) => (stderr += d));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    let failure: string | undefined;
    if (proc.exitCode !== null) failure = `nginx exited: ${stderr}${readIf(join(dir, 'error.log'))}`;
    else {
      try {
        await fetch(url + '/__ping');
        break;
      } catch {
        if (Date.now() > deadline) failure = `nginx did not start: ${stderr}`;
        else await new Promise((r) => setTimeout(r, 50));
      }
    }
    if (failure !== undefined) {
      // Nothing is left behind when nginx never came up (a bundle it rejected, say).
      if (proc.exitCode === null) proc.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
      throw new Error(failure);
    }
  }
  return {
    url,
    port,
    dir,
    errorLog: () => readIf(join(dir, 'error.log')),
    accessLog: () => readIf(join(dir, 'access.log')),
    stop: async () => {
      await new Promise<void>((res) => {
        if (proc.exitCode !== null) return res();
        proc.once('exit', () => res());
        proc.kill('SIGQUIT');
        setTimeout(() => proc.kill('SIGKILL'), 5000).unref();
      });
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function readIf(p: string): string {
  try {
    return readFileSync(p, 'utf8');
  } catch {
    return '';
  }
}
