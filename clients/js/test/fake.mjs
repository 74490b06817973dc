// A fake transport for unit tests of the client's state machine: records what the client sends
// and lets the test play the server, frame by frame, with time under mock.timers.

export class FakeNet {
  constructor() {
    /** Every connection the client opened, oldest first. */
    this.conns = [];
    this.factory = (url, handlers) => {
      const conn = new FakeConn(url, handlers);
      this.conns.push(conn);
      return conn;
    };
  }

  get last() {
    return this.conns[this.conns.length - 1];
  }
}

export class FakeConn {
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.sent = [];
    this.closed = null;
  }

  send(frame) {
    this.sent.push(frame);
  }

  close(code, reason, abort) {
    this.closed = { code, reason, abort };
  }

  /** The JSON frames sent so far, parsed. */
  json() {
    return this.sent.filter((f) => typeof f === 'string').map((f) => JSON.parse(f));
  }

  /** The last sent JSON frame of `type`. */
  lastOf(type) {
    return this.json().filter((m) => m.type === type).pop();
  }

  open() {
    this.h.open();
  }

  recv(obj) {
    this.h.message(typeof obj === 'string' || obj instanceof Uint8Array ? obj : JSON.stringify(obj));
  }

  /** The connection ends (1006: no close frame, as when a proxy drops it). */
  drop(code = 1006, reason = '', opened = true, status) {
    const info = { code, reason, opened };
    if (status !== undefined) info.status = status;
    this.h.close(info);
  }
}

/** Lets pending promise callbacks run. */
export function settle() {
  return new Promise((r) => setImmediate(r));
}
