// Compiled (never run) by `npm run typecheck`: the published declarations type a typical use.
import { Client, type Message, type PresenceEvent, SwitchboardError, sessionPositions } from '../dist/types/index.js';

export async function example(): Promise<void> {
  const client = new Client('wss://chat.example.com/ws', {
    getToken: async () => 'jwt',
    backoff: { base: 500, factor: 2, cap: 30_000 },
    resume: sessionPositions('alice'),
  });
  client.on('message', (m: Message) => {
    const text: string = m.binary ? `${(m.data as Uint8Array).length} bytes` : JSON.stringify(m.data);
    void text;
  });
  client.on('presence', (p: PresenceEvent) => void p.memberCount);
  client.on('state', (state, detail) => void [state, detail.retryIn]);
  client.on('resync', (r) => void client.history(r.room, { limit: 20 }));
  client.on('error', (e) => void (e instanceof SwitchboardError && e.code));
  await client.connect();
  const { members, seq, epoch } = await client.join('lobby');
  void [members, seq, epoch];
  const { seq: s, duplicate } = await client.publish('lobby', { text: 'hi' }, { msgId: 'id-1' });
  void [s, duplicate];
  await client.publish('lobby', new Uint8Array([1, 2, 3]));
  client.typing('lobby');
  await client.leave('lobby');
  client.close();
}
