/**
 * @tsgi/conformance: URL-based cases every tsgi adapter (or any server that
 * runs the fixture handler) must pass.
 *
 *   describeConformance({ name: 'apache', server: 'apache', baseURL: () => url });
 *
 * The server under test serves fixtureHandlerPath at the root of baseURL, in
 * ONE process, with a request body limit of CONFORMANCE_MAX_BODY.
 */
import { fileURLToPath } from 'node:url';
import { describe, it } from 'vitest';
import { cases, optOutFor } from './cases.js';
import { makeContext, type ConformanceTarget } from './client.js';

export { cases, adler32, CONFORMANCE_MAX_BODY, SECRET, optOutFor, type ConformanceCase } from './cases.js';
export {
  makeContext,
  RawConnection,
  type CaseContext,
  type ConformanceTarget,
  type RawResponse,
  type ServerKind,
  type ServerMode,
} from './client.js';
export { runConformance, type CaseResult, type RunOptions } from './runner.js';

/** Absolute path of the fixture handler (a .ts file); the same from src/ and dist/. */
export const fixtureHandlerPath: string = fileURLToPath(new URL('../fixture/handler.ts', import.meta.url));

/** The fixture without its WebSocket members, for a host that cannot carry WebSocket (nginx embedded mode refuses them). */
export const httpOnlyFixturePath: string = fileURLToPath(new URL('../fixture/http-only.ts', import.meta.url));

/**
 * Registers one vitest `it` per case under a describe block. An opted-out case
 * is registered as a passing test whose name carries the reason (never .skip).
 */
export function describeConformance(target: ConformanceTarget): void {
  const key = target.mode ? `${target.server}:${target.mode}` : target.server;
  const mounted = target.basePath !== undefined;
  describe(`conformance: ${target.name} (${key})${mounted ? ` under ${target.basePath}` : ''}`, () => {
    for (const c of cases) {
      if (mounted ? !c.mount : c.mount === 'prefix') continue;
      const out = optOutFor(c, target);
      if (out) {
        it(`${c.id} — opt-out (${out[0]}): ${out[1]}`, () => {
          console.info(`[conformance] ${c.id} opted out for ${out[0]}: ${out[1]}`);
        });
        continue;
      }
      it(`${c.id}: ${c.title}`, async () => {
        await c.run(makeContext(target.baseURL(), { server: target.server, mode: target.mode, basePath: target.basePath }));
      });
    }
  });
}
