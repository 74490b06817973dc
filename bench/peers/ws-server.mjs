// Node `ws` peer for bench/compare.sh: the same JSON as Switchboard for what the benchmarks
// use (join → joined, publish → message to the room's other members, ack with an id,
// leave, ping), plus a plain echo at /echo. No history, presence, auth or limits: it does
// less work per message than Switchboard, which favours it.
//
//   PORT=0 node ws-server.mjs   → prints "listening on 127.0.0.1:PORT" once ready.
import http from 'node:http';
import { WebSocketServer } from 'ws';

const host = process.env.HOST ?? '127.0.0.1';
const port = Number(process.env.PORT ?? 0);

/** room name → { members: Set<WebSocket>, seq: number } */
const rooms = new Map();

const server = http.createServer((req, res) => {
  const ok = req.url === '/healthz';
  res.writeHead(ok ? 200 : 404, { 'content-type': 'text/plain' });
  res.end(ok ? 'ok' : 'not found');
});
const wss = new WebSocketServer({
  noServer: true,
  perMessageDeflate: false,
  maxPayload: 64 * 1024 * 1024,
  clientTracking: false,
});

server.on('upgrade', (req, socket, head) => {
  const url = new URL(req.url, 'http://localhost');
  if (url.pathname !== '/ws' && url.pathname !== '/echo') {
    socket.end('HTTP/1.1 404 Not Found\r\n\r\n');
    return;
  }
  wss.handleUpgrade(req, socket, head, (ws) => {
    if (url.pathname === '/echo') {
      ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
    } else {
      chat(ws, url.searchParams.get('user') ?? 'anon');
    }
  });
});

function reply(ws, obj) {
  ws.send(JSON.stringify(obj));
}

function error(ws, id, code, message) {
  reply(ws, id === undefined ? { type: 'error', code, message } : { type: 'error', id, code, message });
}

function chat(ws, user) {
  const joined = new Set();
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    let msg;
    try {
      msg = JSON.parse(data);
    } catch {
      error(ws, undefined, 'bad_json', 'not valid JSON');
      return;
    }
    const id = msg.id;
    switch (msg.type) {
      case 'join': {
        let room = rooms.get(msg.room);
        if (!room) {
          room = { members: new Set(), seq: 0 };
          rooms.set(msg.room, room);
        }
        room.members.add(ws);
        joined.add(msg.room);
        reply(ws, { type: 'joined', room: msg.room, id, members: [user], seq: room.seq });
        break;
      }
      case 'leave': {
        const room = rooms.get(msg.room);
        if (!room || !room.members.delete(ws)) {
          error(ws, id, 'not_joined', 'not a member of the room');
          return;
        }
        joined.delete(msg.room);
        if (room.members.size === 0) rooms.delete(msg.room);
        reply(ws, { type: 'left', room: msg.room, id });
        break;
      }
      case 'publish': {
        const room = rooms.get(msg.room);
        if (!room || !room.members.has(ws)) {
          error(ws, id, 'not_joined', 'not a member of the room');
          return;
        }
        room.seq += 1;
        // Encoded once; every member gets the same buffer.
        const out = Buffer.from(
          JSON.stringify({ type: 'message', room: msg.room, from: user, data: msg.data, seq: room.seq, ts: Date.now() }),
        );
        for (const member of room.members) {
          if (member !== ws || msg.echo === true) member.send(out, { binary: false });
        }
        if (id !== undefined) reply(ws, { type: 'ack', id, seq: room.seq });
        break;
      }
      case 'ping':
        reply(ws, { type: 'pong', id });
        break;
      default:
        error(ws, id, 'unknown_type', 'unknown type');
    }
  });
  ws.on('close', () => {
    for (const name of joined) {
      const room = rooms.get(name);
      if (!room) continue;
      room.members.delete(ws);
      if (room.members.size === 0) rooms.delete(name);
    }
  });
}

server.listen(port, host, () => {
  const addr = server.address();
  console.log(`listening on ${addr.address}:${addr.port}`);
});
for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
