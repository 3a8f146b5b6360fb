// Anchor of the WebSocket benchmark: the `ws` package on node:http, echoing (as bench/handlers/ws-echo.ts does).
import { createServer } from 'node:http';
import { WebSocketServer } from 'ws';

const server = createServer((req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain;charset=UTF-8', 'x-anchor': 'raw-ws' });
  res.end('ws echo\n');
});
const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false, clientTracking: false });
server.on('upgrade', (req, socket, head) => {
  wss.handleUpgrade(req, socket, head, (ws) => {
    ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
  });
});
// SOCKET: a Unix socket (the proxies' floors in bench/ws.mjs); else PORT on loopback.
if (process.env.SOCKET) server.listen(process.env.SOCKET);
else server.listen(Number(process.env.PORT), '127.0.0.1');
