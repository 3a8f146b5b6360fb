#!/usr/bin/env node
// npm run bench [-- node|apache|nginx|db|ws] [--record]
import { ensureTools } from './lib.mjs';

const [which = 'node', ...rest] = process.argv.slice(2).filter((a, i, all) => !(a === '--' && i === 0) || all.length === 1);
const targets = { node: './node.mjs', apache: './apache.mjs', nginx: './nginx.mjs', db: './db.mjs', ws: './ws.mjs' };
if (!targets[which]) {
  console.error(`usage: npm run bench -- [${Object.keys(targets).join('|')}] [--record]`);
  process.exit(2);
}
ensureTools();
const mod = await import(targets[which]);
await mod.run(rest);
