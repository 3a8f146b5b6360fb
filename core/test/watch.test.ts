// core's --watch (watch.ts): what wakes a reload and what does not.
import { mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { watchHandler } from '@tsgi/core/node';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const dir = mkdtempSync(join(tmpdir(), 'tsgi-watch-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await sleep(25);
}

describe('watchHandler', () => {
  it('reloads on a change to the handler or its own imports, never for a touch, a same-bytes save, a neighbour or a package', async () => {
    mkdirSync(join(dir, 'lib'));
    mkdirSync(join(dir, 'node_modules', 'pkg'), { recursive: true });
    writeFileSync(join(dir, 'node_modules', 'pkg', 'package.json'), '{"name":"pkg","type":"module","main":"index.js"}');
    writeFileSync(join(dir, 'node_modules', 'pkg', 'index.js'), 'export const p = 1;\n');
    writeFileSync(join(dir, 'lib', 'dep.ts'), "export const v = 'v1';\n");
    writeFileSync(join(dir, 'neighbour.ts'), 'export {};\n');
    const handler = join(dir, 'handler.ts');
    writeFileSync(handler, "import { v } from './lib/dep.ts';\nimport { p } from 'pkg';\nexport default { fetch: () => new Response(v + p) };\n");
    let reloads = 0;
    const lines: string[] = [];
    const w = await watchHandler({ handler, reload: async () => void reloads++, say: (l) => lines.push(l), debounceMs: 50 });
    try {
      expect([...w.files].sort()).toEqual([handler, join(dir, 'lib', 'dep.ts')].sort());
      expect(lines).toEqual(['watching 2 files for changes']);

      writeFileSync(join(dir, 'lib', 'dep.ts'), "export const v = 'v2';\n");
      await until(() => reloads === 1);
      expect(reloads).toBe(1);

      // Not a change: the same bytes again, a touch, another file in the folder, a package's file.
      writeFileSync(join(dir, 'lib', 'dep.ts'), "export const v = 'v2';\n");
      utimesSync(handler, new Date(), new Date());
      writeFileSync(join(dir, 'neighbour.ts'), 'export const n = 2;\n');
      writeFileSync(join(dir, 'node_modules', 'pkg', 'index.js'), 'export const p = 2;\n');
      await sleep(500);
      expect(reloads).toBe(1);

      // A new import is watched after the reload that brought it.
      writeFileSync(join(dir, 'lib', 'more.ts'), 'export const m = 1;\n');
      writeFileSync(handler, "import { v } from './lib/dep.ts';\nimport { m } from './lib/more.ts';\nexport default { fetch: () => new Response(v + m) };\n");
      await until(() => reloads === 2 && w.files.length === 3);
      expect(w.files).toContain(join(dir, 'lib', 'more.ts'));
      writeFileSync(join(dir, 'lib', 'more.ts'), 'export const m = 2;\n');
      await until(() => reloads === 3);
      expect(reloads).toBe(3);

      // A syntax error still reloads (the command reports it) and keeps the list it had.
      writeFileSync(join(dir, 'lib', 'dep.ts'), 'export const v = ;\n');
      await until(() => reloads === 4);
      await sleep(200);
      expect(w.files.length).toBe(3);
    } finally {
      w.close();
    }
    writeFileSync(join(dir, 'lib', 'dep.ts'), "export const v = 'v5';\n");
    await sleep(300);
    expect(reloads).toBe(4);
  });

  it("a handler that does not compile: the build's one line", async () => {
    const bad = join(dir, 'bad.ts');
    writeFileSync(bad, 'export default {;\n');
    await expect(watchHandler({ handler: bad, reload: async () => {}, say: () => {} })).rejects.toThrow(/^cannot compile handler .*bad\.ts: .*\(.*bad\.ts:1\)$/);
  });
});
