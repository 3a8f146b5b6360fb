// Anchor: plain node:http doing the same work as the handlers.
import { createServer } from 'node:http';

const HELLO = 'Hello, world!\n';
createServer((req, res) => {
  if (req.method === 'POST') {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => {
      const data = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const body = JSON.stringify(data);
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'x-anchor': 'raw-node' });
      res.end(body);
    });
    return;
  }
  res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'content-length': HELLO.length, 'x-anchor': 'raw-node' });
  res.end(HELLO);
}).listen(Number(process.env.PORT), '127.0.0.1');
