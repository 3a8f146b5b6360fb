// The WebSocket benchmark's load: C sockets, each sending a small message and waiting for its echo
// before the next, for D seconds. Prints {"messages": N, "errors": E} (bench/ws.mjs runs it pinned to the load core).
// Usage: node ws-load.mjs <ws-url> <connections> <seconds> <message-bytes>
import WebSocket from 'ws';

const [url, c = '50', s = '5', size = '32'] = process.argv.slice(2);
const payload = 'x'.repeat(Number(size));
let messages = 0;
let errors = 0;
let running = true;

function one() {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { perMessageDeflate: false });
    ws.on('open', () => ws.send(payload));
    ws.on('message', () => {
      if (!running) return ws.close();
      messages++;
      ws.send(payload);
    });
    ws.on('error', () => errors++);
    ws.on('close', () => resolve());
  });
}

const all = Array.from({ length: Number(c) }, one);
setTimeout(() => (running = false), Number(s) * 1000);
await Promise.all(all);
console.log(JSON.stringify({ messages, errors }));
