/**
 * tsgi-conformance <baseURL> [--server node|apache|nginx] [--mode embedded|workers] [--only id-prefix,...]
 * Prints pass/fail per case; exits 1 when a case fails.
 */
import { runConformance } from './runner.js';
import type { ServerKind, ServerMode } from './client.js';

const USAGE =
  'usage: tsgi-conformance <baseURL> [--server node|apache|nginx] [--mode embedded|workers] [--only prefix,...]';

export async function main(argv: string[]): Promise<number> {
  let baseURL: string | undefined;
  let server: ServerKind = 'node';
  let mode: ServerMode | undefined;
  let only: string[] | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const value = () => {
      const v = argv[++i];
      if (v === undefined) throw new Error(`${a} needs a value`);
      return v;
    };
    if (a === '--server') {
      const v = value();
      if (v !== 'node' && v !== 'apache' && v !== 'nginx') throw new Error(`--server must be node, apache or nginx`);
      server = v;
    } else if (a === '--mode') {
      const v = value();
      if (v !== 'embedded' && v !== 'workers') throw new Error(`--mode must be embedded or workers`);
      mode = v;
    } else if (a === '--only') {
      only = value().split(',').filter(Boolean);
    } else if (a === '-h' || a === '--help') {
      console.log(USAGE);
      return 0;
    } else if (a.startsWith('-') || baseURL) {
      throw new Error(`unexpected argument ${a}\n${USAGE}`);
    } else {
      baseURL = a;
    }
  }
  if (!baseURL) throw new Error(USAGE);
  try {
    new URL(baseURL);
  } catch {
    throw new Error(`not a URL: ${baseURL}`);
  }
  let failed = 0;
  const results = await runConformance(baseURL, {
    server,
    mode,
    only,
    onResult(r) {
      if (r.outcome === 'pass') console.log(`ok      ${r.id}`);
      else if (r.outcome === 'opt-out') console.log(`opt-out ${r.id} (${r.detail})`);
      else {
        failed++;
        console.log(`FAIL    ${r.id}: ${r.title}\n        ${(r.detail ?? '').split('\n').join('\n        ')}`);
      }
    },
  });
  const passed = results.filter((r) => r.outcome === 'pass').length;
  const opted = results.filter((r) => r.outcome === 'opt-out').length;
  console.log(`\n${passed} passed, ${failed} failed, ${opted} opted out (${results.length} cases) against ${baseURL}`);
  return failed ? 1 : 0;
}
