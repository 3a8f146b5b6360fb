#!/usr/bin/env node
import('../dist/bin.js').then(
  async (m) => {
    try {
      process.exitCode = await m.main(process.argv.slice(2));
    } catch (err) {
      console.error(`tsgi-conformance: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 2;
    }
  },
);
