// Bun peer for bench/compare.sh: Bun.serve with its native (uWebSockets) pub/sub topics. The
// same JSON as Switchboard for what the benchmarks use (join → ws.subscribe(room) + joined,
// publish → ws.publish(room, message), which reaches every subscriber but the sender, like
// Switchboard's default echo:false; ack with an id; leave; ping), plus a plain echo at /echo.
// No history, presence, auth or limits: it does less work per message than Switchboard.
//
//   PORT=0 bun bun-server.ts   → prints "listening on 127.0.0.1:PORT" once ready.
import type { ServerWebSocket } from 'bun';

type Data = { echo: boolean; user: string };

const DEFLATE = process.env.DEFLATE === '1';
const seqs = new Map<string, number>();

function reply(ws: ServerWebSocket<Data>, obj: unknown) {
  ws.send(JSON.stringify(obj));
}

function error(ws: ServerWebSocket<Data>, id: unknown, code: string, message: string) {
  reply(ws, id === undefined ? { type: 'error', code, message } : { type: 'error', id, code, message });
}

const server = Bun.serve<Data, never>({
  hostname: process.env.HOST ?? '127.0.0.1',
  port: Number(process.env.PORT ?? 0),
  fetch(req, server) {
    const url = new URL(req.url);
    if (url.pathname === '/ws' || url.pathname === '/echo') {
      const data = { echo: url.pathname === '/echo', user: url.searchParams.get('user') ?? 'anon' };
      if (server.upgrade(req, { data })) return undefined;
      return new Response('upgrade failed', { status: 400 });
    }
    if (url.pathname === '/healthz') return new Response('ok');
    return new Response('not found', { status: 404 });
  },
  websocket: {
    // DEFLATE=1: permessage-deflate with Bun's default (shared) compressor, for the
    // compression comparison in docs/benchmarks.md; off otherwise (Bun's own default).
    perMessageDeflate: DEFLATE,
    maxPayloadLength: 64 * 1024 * 1024,
    backpressureLimit: 64 * 1024 * 1024,
    closeOnBackpressureLimit: false,
    idleTimeout: 960,
    message(ws, message) {
      if (ws.data.echo) {
        ws.send(message);
        return;
      }
      if (typeof message !== 'string') return;
      let msg: any;
      try {
        msg = JSON.parse(message);
      } catch {
        error(ws, undefined, 'bad_json', 'not valid JSON');
        return;
      }
      const id = msg.id;
      switch (msg.type) {
        case 'join':
          ws.subscribe(msg.room);
          reply(ws, { type: 'joined', room: msg.room, id, members: [ws.data.user], seq: seqs.get(msg.room) ?? 0 });
          break;
        case 'leave':
          if (!ws.isSubscribed(msg.room)) {
            error(ws, id, 'not_joined', 'not a member of the room');
            return;
          }
          ws.unsubscribe(msg.room);
          reply(ws, { type: 'left', room: msg.room, id });
          break;
        case 'publish': {
          if (!ws.isSubscribed(msg.room)) {
            error(ws, id, 'not_joined', 'not a member of the room');
            return;
          }
          const seq = (seqs.get(msg.room) ?? 0) + 1;
          seqs.set(msg.room, seq);
          const out = JSON.stringify({ type: 'message', room: msg.room, from: ws.data.user, data: msg.data, seq, ts: Date.now() });
          ws.publish(msg.room, out, DEFLATE);
          if (msg.echo === true) ws.send(out);
          if (id !== undefined) reply(ws, { type: 'ack', id, seq });
          break;
        }
        case 'ping':
          reply(ws, { type: 'pong', id });
          break;
        default:
          error(ws, id, 'unknown_type', 'unknown type');
      }
    },
  },
});

console.log(`listening on ${server.hostname}:${server.port}`);
for (const signal of ['SIGINT', 'SIGTERM'] as const) process.on(signal, () => process.exit(0));
