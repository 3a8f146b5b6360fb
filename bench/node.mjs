// npm run bench [-- node] [--record]: tsgi on node:http against raw node:http, Hono and Fastify.
import { fileURLToPath } from 'node:url';
import { checkAnchor, figuresTable, freePort, interleave, machineLine, postScript, recordSection, rssMiB, startPinned } from './lib.mjs';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const tsgi = here('../cli/bin/tsgi.js');

const SERVERS = [
  // The anchor; its x-anchor header proves raw-node.mjs answers.
  { name: 'raw node:http', args: [here('servers/raw-node.mjs')], check: (r) => (r.headers.get('x-anchor') === 'raw-node' ? '' : 'no x-anchor: raw-node header') },
  { name: 'tsgi (global Response)', args: [tsgi, 'serve', here('handlers/hello.ts'), '--no-access-log'], port: true },
  { name: 'tsgi (@tsgi/core Response)', args: [tsgi, 'serve', here('handlers/hello-fast.ts'), '--no-access-log'], port: true },
  { name: '@hono/node-server', args: [here('servers/hono.mjs')] },
  { name: 'Fastify', args: [here('servers/fastify.mjs')] },
];

/** The POST body (compact JSON: its echo is the same text). */
export const json1k = JSON.stringify({
  id: 1,
  items: Array.from({ length: 14 }, (_, i) => ({ name: `item-${i}`, value: i * 3.5, ok: i % 2 === 0 })),
  pad: 'x'.repeat(120),
});

export async function run(argv) {
  const record = argv.includes('--record');
  const duration = Number(process.env.BENCH_SECONDS ?? 5);
  const rounds = Number(process.env.BENCH_ROUNDS ?? 3);
  const post = postScript(json1k);
  const running = [];
  try {
    for (const s of SERVERS) {
      const port = await freePort();
      const args = s.port ? [...s.args, '--port', String(port)] : s.args;
      const proc = await startPinned(process.execPath, args, { url: `http://127.0.0.1:${port}/`, env: { PORT: String(port) } });
      running.push({ ...s, url: `http://127.0.0.1:${port}/`, proc, rss: 0 });
    }
    const scenarios = (kind) =>
      running.map((s) => ({
        name: s.name,
        url: s.url,
        wrk: kind === 'post' ? { script: post } : {},
        afterRun: () => (s.rss = Math.max(s.rss, rssMiB(s.proc.pid))),
      }));
    for (const s of running) if (s.check) await checkAnchor(s.name, s.url, s.check);
    console.log(`GET hello and POST 1 KB JSON echo (${json1k.length} bytes); ${rounds} rounds × ${duration} s, wrk -t1 -c50`);
    const get = await interleave(scenarios('get'), { rounds, duration });
    const postR = await interleave(scenarios('post'), { rounds, duration });
    const rows = running.map((s) => ({ key: s.name, label: s.name }));
    const base = running[0].name;
    const rss = running.map((s) => `${s.name} ${s.rss.toFixed(0)} MiB (${(s.rss / running[0].rss).toFixed(2)}x)`).join('; ');
    const table = [
      '**GET hello**',
      '',
      figuresTable(rows, get, base),
      '',
      `**POST 1 KB JSON echo** (${json1k.length} bytes)`,
      '',
      figuresTable(rows, postR, base),
      '',
      `RSS under load: ${rss}.`,
    ].join('\n');
    console.log(table);
    if (record) {
      recordSection(
        'Node (node:http)',
        `${machineLine()}. Server pinned to core 0, wrk -t1 -c50 on core 1; ${rounds} interleaved rounds of ${duration} s, median.\n` +
          `Each server is its own process; the tsgi rows run \`tsgi serve\` on a handler in bench/handlers/.\n\n${table}`,
      );
      console.log('recorded in bench/README.md');
    }
  } finally {
    await Promise.all(running.map((s) => s.proc.stop()));
  }
}
