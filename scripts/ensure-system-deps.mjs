#!/usr/bin/env node
// Installs the Debian packages the test suite and benchmarks need, when missing.
// Tests for Apache and nginx must never skip, so a failed install fails the run.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

const need = [
  ['apache2', '/usr/sbin/apache2'],
  ['apache2-dev', '/usr/bin/apxs'],
  ['apache2-utils', '/usr/bin/htpasswd'],
  ['gcc', '/usr/bin/gcc'],
  ['make', '/usr/bin/make'],
  ['nginx', '/usr/sbin/nginx'],
  ['libnginx-mod-http-js', '/usr/lib/nginx/modules/ngx_http_js_module.so'],
  ['wrk', '/usr/bin/wrk'],
  ['clang', '/usr/bin/clang'],
  ['libclang-rt-14-dev', '/usr/lib/llvm-14/lib/clang/14.0.6/lib/linux/libclang_rt.fuzzer-x86_64.a'],
  ['libapache2-mod-passenger', '/usr/lib/apache2/modules/mod_passenger.so'],
  // examples/postgres runs against a private cluster (any version's initdb)
  ['postgresql', () => existsSync('/usr/lib/postgresql') && readdirSync('/usr/lib/postgresql').some((v) => existsSync(`/usr/lib/postgresql/${v}/bin/initdb`))],
];
const missing = need.filter(([, has]) => !(typeof has === 'function' ? has() : existsSync(has))).map(([pkg]) => pkg);
if (missing.length === 0) process.exit(0);
if (process.getuid?.() !== 0) {
  console.error(`tsgi tests need these Debian packages: ${missing.join(' ')}. Install them (apt-get install ${missing.join(' ')}) or run as root.`);
  process.exit(1);
}
console.log(`installing ${missing.join(' ')} ...`);
const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
execFileSync('apt-get', ['update', '-qq'], { stdio: 'inherit', env });
// policy-rc.d keeps the packaged apache2/nginx services from starting: tests start their own.
const r = spawnSync('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { stdio: 'inherit', env });
if (r.status !== 0) process.exit(r.status ?? 1);
for (const svc of ['apache2', 'nginx', 'postgresql']) spawnSync('service', [svc, 'stop'], { stdio: 'ignore' });
