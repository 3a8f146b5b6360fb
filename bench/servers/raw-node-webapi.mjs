// The raw node:http anchor in a process that has loaded the web API (undici: globalThis.Response),
// as every process that uses Request/Response has (tsgi included); bench/node-instructions.mjs RAW=.
void (await new Response('x', { headers: { a: 'b' } }).text());
await import('./raw-node.mjs');
