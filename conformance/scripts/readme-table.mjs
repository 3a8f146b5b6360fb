#!/usr/bin/env node
// Rewrites the case table at the end of conformance/README.md from the cases themselves
// (id, title, opt-outs), so the README cannot drift from the code. `--check` only compares.
import { readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const readme = fileURLToPath(new URL('../README.md', import.meta.url));
const { cases } = await import('../dist/cases.js');

export function caseTable(list) {
  const rows = list.map((c) => `| \`${c.id}\` | ${c.title.replace(/\|/g, '\\|')} | ${Object.keys(c.optOut ?? {}).join(', ')} |`);
  return [`${list.length} cases. Ids are stable; the group is the prefix before the dot.`, '', '| id | checks | opt-out |', '|---|---|---|', ...rows, ''].join('\n');
}

const text = readFileSync(readme, 'utf8');
const at = text.indexOf('\n## The cases\n');
if (at < 0) throw new Error('conformance/README.md has no "## The cases" section');
const next = text.indexOf('\n## ', at + 1);
const updated = `${text.slice(0, at)}\n## The cases\n\n${caseTable(cases)}${next < 0 ? '' : text.slice(next)}`;
if (process.argv.includes('--check')) {
  if (updated !== text) {
    console.error('conformance/README.md: the case table is out of date; run node conformance/scripts/readme-table.mjs');
    process.exit(1);
  }
} else writeFileSync(readme, updated);
