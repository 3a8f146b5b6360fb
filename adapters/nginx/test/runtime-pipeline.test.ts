/**
 * The pipeline differential test: the njs runtime's port of core's pipeline
 * (runtime/pipeline.ts), run inside real nginx + njs 0.7.9, against core's
 * pipeline.ts in Node, on the same handlers (pipeline-cases.ts): sync and
 * async fetch, every authenticate and authorize outcome, throws, invalid
 * results, non-Responses, the log hook. Compared: status, headers, body,
 * whether the result came synchronously, ctx.user, the auth_request reply
 * (core accessReply), and what was logged. The bridge's own fast path
 * (fetchThen) and the port's runFetch are both checked against core runFetch.
 */
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { accessReply, runFetch, runLog, runPhase } from '@tsgi/core';
import { buildNjs, RUNTIME_DIR, startNginx, type Nginx } from './runtime-helpers.js';
import { caseNames, runCase, type PipelineImpl } from './pipeline-cases.js';

const here = dirname(fileURLToPath(import.meta.url));
const core: PipelineImpl = { runPhase: runPhase as PipelineImpl['runPhase'], runFetch, accessReply, runLog };

let ngx: Nginx;

beforeAll(async () => {
  const entry = `
import { runCase } from ${JSON.stringify(join(here, 'pipeline-cases.ts'))};
import { pipeline, fetchThen } from ${JSON.stringify(join(RUNTIME_DIR, 'pipeline.ts'))};
// fetchThen hands its outcome to a callback: as a value when that ran at once, else a promise.
function viaFetchThen(h, req, ctx, log) {
  let done = false, value, resolve = null;
  fetchThen(h, req, ctx, log, function (res) {
    if (resolve !== null) resolve(res);
    else { done = true; value = res; }
  });
  return done ? value : new Promise(function (res) { resolve = res; });
}
function content(r) {
  const p = pipeline();
  const impl = { runPhase: p.runPhase, runFetch: r.args.impl === 'then' ? viaFetchThen : p.runFetch, accessReply: p.accessReply, runLog: p.runLog };
  runCase(impl, decodeURIComponent(r.args.name)).then(
    function (out) { r.return(200, JSON.stringify(out)); },
    function (e) { r.return(500, String(e && e.stack || e)); });
}
export default { content };
`;
  ngx = await startNginx(await buildNjs(entry, RUNTIME_DIR), 'location = /case { js_content m.content; }');
}, 120_000);

afterAll(async () => {
  await ngx?.stop();
});

async function inNjs(name: string, impl: string): Promise<unknown> {
  const r = await fetch(`${ngx.url}/case?impl=${impl}&name=${encodeURIComponent(name)}`);
  const text = await r.text();
  expect(r.status, text).toBe(200);
  return JSON.parse(text);
}

describe('the njs pipeline port gives core pipeline.ts outcomes', () => {
  it.each(caseNames)('%s', async (name) => {
    const expected = JSON.parse(JSON.stringify(await runCase(core, name)));
    expect(await inNjs(name, 'port')).toEqual(expected);
    // The bridge's hot path (fetchThen) for fetch alone.
    if (name.startsWith('fetch') || name.startsWith('log') || name === 'no log hook') expect(await inNjs(name, 'then')).toEqual(expected);
  });
});
