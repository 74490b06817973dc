// Per-room positions: the last seq delivered to the application and the epoch it belongs to, and
// the dedupe rule built on them. A port of the Rust SDK's crates/client/src/tracker.rs. Pure code.
//
// - joined(): when a `joined` reply arrives; decides whether the position carries over (first join,
//   recovery) or the application must re-sync.
// - deliver(): for every room message (JSON or binary); false means "already delivered, drop it".
// - own(): for the seq of an acked, unechoed publish: the server does not send it to us live, and a
//   recovery replay of it must be dropped.
// - since(): the `since` of a re-join after a reconnect.

/** Own seqs remembered ahead of the position, per room, at most (only a permanent gap fills it). */
const MAX_PENDING_OWN = 1024;

/** A position in a room's stream: the last seq seen under an epoch. */
export interface Position {
  seq: number;
  epoch: string;
}

/** What a `joined` reply means for the application. */
export type JoinOutcome =
  | { kind: 'continued' }
  | { kind: 'recovered' }
  | { kind: 'resync'; seq: number; epoch: string | undefined; previous: Position | undefined };

interface RoomPos {
  last: number;
  epoch: string | undefined;
  /** Acked own seqs above last + 1, absorbed once the messages before them arrive (sorted). */
  ownAhead: number[];
}

function advance(p: RoomPos, seq: number): void {
  p.last = Math.max(p.last, seq);
  while (p.ownAhead.length > 0 && (p.ownAhead[0] as number) <= p.last + 1) {
    p.last = Math.max(p.last, p.ownAhead.shift() as number);
  }
}

export class Tracker {
  private readonly rooms = new Map<string, RoomPos>();

  has(room: string): boolean {
    return this.rooms.has(room);
  }

  /** The `since` for re-joining `room`, when its epoch is known. */
  since(room: string): Position | undefined {
    const p = this.rooms.get(room);
    return p?.epoch === undefined ? undefined : { seq: p.last, epoch: p.epoch };
  }

  /** Seeds a position (kept from an earlier page load), so the next join asks to recover from it. */
  seed(room: string, pos: Position): void {
    if (!this.rooms.has(room)) this.rooms.set(room, { last: pos.seq, epoch: pos.epoch, ownAhead: [] });
  }

  /**
   * Applies a `joined` reply. `rejoin` is true for a join that continues an earlier position (after a
   * reconnect, or from a seeded position), false for a join the application asked for.
   */
  joined(room: string, seq: number, epoch: string | undefined, recovered: boolean | undefined, rejoin: boolean): JoinOutcome {
    const p = this.rooms.get(room);
    if (p === undefined) {
      this.rooms.set(room, { last: seq, epoch, ownAhead: [] });
      return { kind: 'continued' };
    }
    const sameEpoch = p.epoch === epoch;
    let out: JoinOutcome;
    if (recovered === false) {
      out = resync(p, seq, epoch);
    } else if (!rejoin && (sameEpoch || p.epoch === undefined)) {
      out = { kind: 'continued' };
    } else if (rejoin && recovered === true) {
      out = { kind: 'recovered' };
    } else if (rejoin && recovered === undefined && sameEpoch && seq === p.last) {
      out = { kind: 'continued' };
    } else {
      out = resync(p, seq, epoch);
    }
    if (out.kind === 'resync') {
      this.rooms.set(room, { last: seq, epoch, ownAhead: [] });
    } else if (p.epoch === undefined) {
      p.epoch = epoch;
    }
    return out;
  }

  /** A room message with `seq` arrived: true to deliver it (and advance), false if seen or not tracked. */
  deliver(room: string, seq: number): boolean {
    const p = this.rooms.get(room);
    if (p === undefined || seq <= p.last) return false;
    advance(p, seq);
    return true;
  }

  /** Our own unechoed publish was acked with `seq`. */
  own(room: string, seq: number): void {
    const p = this.rooms.get(room);
    if (p === undefined) return;
    if (seq === p.last + 1) {
      advance(p, seq);
    } else if (seq > p.last && !p.ownAhead.includes(seq)) {
      p.ownAhead.push(seq);
      p.ownAhead.sort((a, b) => a - b);
      if (p.ownAhead.length > MAX_PENDING_OWN) p.ownAhead.shift();
    }
  }

  /** The room's position, if tracked and its epoch is known. */
  position(room: string): Position | undefined {
    return this.since(room);
  }

  /** Forgets the room (it was left). */
  forget(room: string): void {
    this.rooms.delete(room);
  }
}

function resync(p: RoomPos, seq: number, epoch: string | undefined): JoinOutcome {
  const previous = p.epoch === undefined ? undefined : { seq: p.last, epoch: p.epoch };
  return { kind: 'resync', seq, epoch, previous };
}
