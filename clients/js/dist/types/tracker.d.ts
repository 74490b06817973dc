/** A position in a room's stream: the last seq seen under an epoch. */
export interface Position {
    seq: number;
    epoch: string;
}
/** What a `joined` reply means for the application. */
export type JoinOutcome = {
    kind: 'continued';
} | {
    kind: 'recovered';
} | {
    kind: 'resync';
    seq: number;
    epoch: string | undefined;
    previous: Position | undefined;
};
export declare class Tracker {
    private readonly rooms;
    has(room: string): boolean;
    /** The `since` for re-joining `room`, when its epoch is known. */
    since(room: string): Position | undefined;
    /** Seeds a position (kept from an earlier page load), so the next join asks to recover from it. */
    seed(room: string, pos: Position): void;
    /**
     * Applies a `joined` reply. `rejoin` is true for a join that continues an earlier position (after a
     * reconnect, or from a seeded position), false for a join the application asked for.
     */
    joined(room: string, seq: number, epoch: string | undefined, recovered: boolean | undefined, rejoin: boolean): JoinOutcome;
    /** A room message with `seq` arrived: true to deliver it (and advance), false if seen or not tracked. */
    deliver(room: string, seq: number): boolean;
    /** Our own unechoed publish was acked with `seq`. */
    own(room: string, seq: number): void;
    /** The room's position, if tracked and its epoch is known. */
    position(room: string): Position | undefined;
    /** Forgets the room (it was left). */
    forget(room: string): void;
}
