import { defineHandler } from '@tsgi/core';

// The smallest tsgi handler: `npx tsgi serve examples/hello/handler.ts`
export default defineHandler({
  fetch(request) {
    const url = new URL(request.url);
    const name = url.searchParams.get('name') ?? 'world';
    return new Response(`Hello, ${name}!\n`, { headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  },
});
