// The WebSocket benchmark's handler: every message back as it came (bench/ws.mjs).
import { defineHandler } from '@tsgi/core';

export default defineHandler({
  fetch: () => new Response('ws echo\n'),
  websocket: {
    message(peer, message) {
      peer.send(message);
    },
  },
});
