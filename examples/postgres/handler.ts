// The reason tsgi exists: the database connection is made once per process, in init,
// not once per request as a CGI script must. Every request borrows a pooled connection.
//
//   DATABASE_URL=postgres://user@127.0.0.1:5432/db npx tsgi serve examples/postgres/handler.ts
import pg from 'pg';
import { defineHandler, Response } from '@tsgi/core';

let pool: pg.Pool | undefined;

export default defineHandler({
  async init(ctx) {
    const url = ctx.env.DATABASE_URL;
    if (!url) throw new Error('DATABASE_URL is not set');
    pool = new pg.Pool({ connectionString: url, max: Number(ctx.env.PG_POOL_SIZE ?? 4) });
    // Fail start-up, not the first request, when the database is unreachable.
    await pool.query('select 1');
  },

  async fetch(request) {
    const url = new URL(request.url);
    if (url.pathname === '/pid') return new Response(`${process.pid}\n`);
    const n = Number(url.searchParams.get('n') ?? '1');
    if (!Number.isInteger(n)) return new Response('n must be an integer\n', { status: 400 });
    const { rows } = await pool!.query<{ n: number; backend: number }>('select $1::int + 1 as n, pg_backend_pid() as backend', [n]);
    return Response.json(rows[0]);
  },

  async close() {
    await pool?.end();
    pool = undefined;
  },
});
