// The same handler using @tsgi/core's opt-in Response (instanceof Response, written directly).
import { Response } from '@tsgi/core';

export default {
  fetch(request: Request): Response | Promise<Response> {
    if (request.method === 'POST') return request.json().then((data) => Response.json(data));
    return new Response('Hello, world!\n', { headers: { 'content-type': 'text/plain;charset=UTF-8' } });
  },
};
