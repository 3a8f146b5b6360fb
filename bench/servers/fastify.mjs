// Anchor: Fastify with its own JSON parsing and serialization.
import Fastify from 'fastify';

const app = Fastify({ logger: false });
app.get('/', async (_req, reply) => reply.type('text/plain;charset=UTF-8').send('Hello, world!\n'));
app.post('/', async (req) => req.body);
await app.listen({ port: Number(process.env.PORT), host: '127.0.0.1' });
