// The floor of a Node upstream behind nginx: the least any Node worker can do per request over HTTP.
// It parses nothing (it counts the ends of request heads; nginx's GETs carry no body) and writes a
// canned hello per request, with an x-anchor header so the bench can tell it answered.
// usage: node bench/servers/floor-node.mjs <unix socket path>
import net from 'node:net';

const ONE = Buffer.from('HTTP/1.1 200 OK\r\ncontent-type: text/plain;charset=UTF-8\r\ncontent-length: 14\r\nx-anchor: floor\r\n\r\nHello, world!\n');
net
  .createServer((s) => {
    let tail = '';
    s.on('data', (d) => {
      const t = tail + d.toString('latin1');
      let n = 0;
      for (let i = t.indexOf('\r\n\r\n'); i >= 0; i = t.indexOf('\r\n\r\n', i + 4)) n++;
      tail = t.slice(-3);
      if (n === 1) s.write(ONE);
      else if (n > 1) s.write(Buffer.concat(Array(n).fill(ONE)));
    });
    s.on('error', () => s.destroy());
  })
  .listen(process.argv[2]);
