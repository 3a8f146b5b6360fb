// Benchmark handler written against the web-standard globals only.
export default {
  async fetch(request: Request): Promise<Response> {
    if (request.method === 'POST') return Response.json(await request.json());
    return new Response('Hello, world!\n', { headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  },
};
