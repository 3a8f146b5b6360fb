import assert from 'node:assert/strict';
import type { ConformanceCase } from './shared.js';
import { get } from './shared.js';

/** What the fixture's /mount route (any path ending in /mount, or the mount point itself) answers. */
interface MountReply {
  basePath: string;
  url: string;
}

export const mountCases: ConformanceCase[] = [
  {
    id: 'mount.base-path',
    title: "ctx.basePath is the mount prefix ('' at the root), not a client's header; request.url keeps the prefix the client sent",
    mount: 'also',
    async run(t) {
      const path = `${t.basePath}/mount?q=1`;
      // A client's own X-Tsgi-Base-Path (nginx workers mode's header) changes nothing.
      const r = await t.fetch(path, { headers: { 'x-tsgi-base-path': '/spoofed' } });
      assert.equal(r.status, 200);
      const body = (await r.json()) as MountReply;
      assert.equal(body.basePath, t.basePath);
      assert.equal(body.url, t.url(path));
    },
  },
  {
    id: 'mount.prefix-itself',
    title: 'the mount point itself (/app, no trailing slash) and below it (/app/) reach the handler',
    mount: 'prefix',
    async run(t) {
      for (const path of [t.basePath, `${t.basePath}?q=1`, `${t.basePath}/`]) {
        const r = await t.exchange(get(t, path, 'Connection: close\r\n'));
        assert.equal(r.status, 200, `${path}: ${r.status}`);
        const body = JSON.parse(r.body.toString()) as MountReply;
        assert.equal(body.basePath, t.basePath, path);
        assert.equal(body.url, t.url(path), path);
      }
    },
  },
  {
    id: 'mount.dot-segments',
    title: 'the mount is matched on the normalized path: /x/../app/mount is inside, /app/../mount outside (404)',
    mount: 'prefix',
    async run(t) {
      const inside = await t.exchange(get(t, `/x/..${t.basePath}/mount`, 'Connection: close\r\n'));
      assert.equal(inside.status, 200, `/x/..${t.basePath}/mount: ${inside.status}`);
      assert.equal((JSON.parse(inside.body.toString()) as MountReply).basePath, t.basePath);
      const outside = await t.exchange(get(t, `${t.basePath}/../mount`, 'Connection: close\r\n'));
      assert.equal(outside.status, 404, `${t.basePath}/../mount: ${outside.status}`);
    },
  },
  {
    id: 'mount.outside',
    title: 'a request outside the prefix (/mount, /appx/mount) is the server\'s 404, not the handler\'s',
    mount: 'prefix',
    async run(t) {
      for (const path of ['/mount', `${t.basePath}x/mount`, `${t.basePath}.json`]) {
        const r = await t.exchange(get(t, path, 'Connection: close\r\n'));
        assert.equal(r.status, 404, `${path}: ${r.status}`);
        assert.ok(!r.body.toString().includes('basePath'), `${path} reached the handler`);
      }
    },
  },
];
