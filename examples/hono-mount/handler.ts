import { Hono } from 'hono';
import { defineHandler } from '@tsgi/core';

// A Hono app that works at any mount point: `npx tsgi serve examples/hono-mount/handler.ts --location /app`
// (or Apache's <Location /app>, nginx's location /app/). Its routes are written from its own root;
// ctx.basePath (the mount prefix, '' at the root) says where that root is in the URL.
const routes = new Hono()
  .get('/', (c) => c.text('home\n'))
  .get('/hello/:name', (c) => c.text(`Hello, ${c.req.param('name')}!\n`))
  // request.url keeps the prefix: links built from it stay right under any mount.
  .get('/where', (c) => c.json({ url: c.req.url, path: c.req.path }));

// One app per mount point (a location's prefix never changes, so this is built once).
const mounted = new Map<string, Hono>();

export default defineHandler({
  fetch(request, ctx) {
    let app = mounted.get(ctx.basePath);
    if (!app) mounted.set(ctx.basePath, (app = new Hono().route(ctx.basePath || '/', routes)));
    return app.fetch(request);
  },
});
