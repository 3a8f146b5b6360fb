// ctx.basePath's two rules (wire.ts): the prefix of a location, and whether a path is inside it.
import { describe, expect, it } from 'vitest';
import { insideMount, mountPrefix } from '@tsgi/core';

describe('mountPrefix', () => {
  it("drops trailing slashes; the root is ''", () => {
    expect(mountPrefix('/')).toBe('');
    expect(mountPrefix('/app')).toBe('/app');
    expect(mountPrefix('/app/')).toBe('/app');
    expect(mountPrefix('/a/b//')).toBe('/a/b');
  });
});

describe('insideMount', () => {
  it('the prefix itself, below it, or its query; never a longer segment', () => {
    for (const p of ['/app', '/app/', '/app/x', '/app?q=1', '/app/x?y']) expect(insideMount(p, '/app'), p).toBe(true);
    for (const p of ['/', '/apps', '/app.json', '/ap', '/x/app', '*', 'http://h/app']) expect(insideMount(p, '/app'), p).toBe(false);
  });
  it("everything is inside the root ('')", () => {
    for (const p of ['/', '/x', '*']) expect(insideMount(p, '')).toBe(true);
  });
});
