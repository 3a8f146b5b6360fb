/**
 * Runs the cases against a base URL without vitest (used by the
 * tsgi-conformance bin and by anyone scripting a third-party server).
 */
import { cases, optOutFor, type ConformanceCase } from './cases.js';
import { makeContext, type ServerKind, type ServerMode } from './client.js';

export interface RunOptions {
  server: ServerKind;
  mode?: ServerMode;
  /** Only the cases whose id starts with one of these. */
  only?: string[];
  /** Called after each case. */
  onResult?: (r: CaseResult) => void;
}

export interface CaseResult {
  id: string;
  title: string;
  outcome: 'pass' | 'fail' | 'opt-out';
  /** The opt-out reason, or the failure message. */
  detail?: string;
  error?: unknown;
}

export async function runConformance(baseURL: string, opts: RunOptions): Promise<CaseResult[]> {
  const target = { server: opts.server, mode: opts.mode };
  // At the root: the cases for a server mounted under a prefix do not apply.
  const rooted = cases.filter((c) => c.mount !== 'prefix');
  const selected: ConformanceCase[] = opts.only?.length ? rooted.filter((c) => opts.only!.some((p) => c.id.startsWith(p))) : rooted;
  const results: CaseResult[] = [];
  for (const c of selected) {
    let r: CaseResult;
    const out = optOutFor(c, target);
    if (out) {
      r = { id: c.id, title: c.title, outcome: 'opt-out', detail: `${out[0]}: ${out[1]}` };
    } else {
      try {
        await c.run(makeContext(baseURL, target));
        r = { id: c.id, title: c.title, outcome: 'pass' };
      } catch (err) {
        r = { id: c.id, title: c.title, outcome: 'fail', detail: err instanceof Error ? err.message : String(err), error: err };
      }
    }
    results.push(r);
    opts.onResult?.(r);
  }
  return results;
}
