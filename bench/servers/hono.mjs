// Anchor: a Hono app on @hono/node-server (its defaults, which replace the global Response).
import { serve } from '@hono/node-server';
import { Hono } from 'hono';

const app = new Hono();
app.get('/', (c) => c.text('Hello, world!\n'));
app.post('/', async (c) => c.json(await c.req.json()));
serve({ fetch: app.fetch, port: Number(process.env.PORT), hostname: '127.0.0.1' });
