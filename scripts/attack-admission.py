#!/usr/bin/env python3
"""Admission attacks of issue 11 (docs/security.md "Admission"), against a running server.

  idle  --addr HOST:PORT [-n 1100] [--source 127.0.0.2 | --spread] [--hold 6] [--pid PID]
      Opens N TCP connections from --source that never send a byte, holds them, and meanwhile
      probes a WebSocket upgrade from 127.0.0.1 every 0.5 s (time to 101, or the failure).
      With --pid, samples the server's open file descriptors.
  slots --addr HOST:PORT [--duration 25] [--source 127.0.0.2]
      One address opens WebSockets as fast as the server lets it (waiting Retry-After on 429)
      and keeps them; then a client from 127.0.0.1 tries to connect.

Prints one summary line per phase. Standard library only.
"""
import argparse
import asyncio
import os
import time

REQ = (
    "GET /ws?user={user} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
    "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    "Sec-WebSocket-Version: 13\r\n\r\n"
)


async def upgrade(host, port, user, source=None, limit=5.0):
    """Returns (status or error string, seconds, headers, writer-or-None)."""
    start = time.monotonic()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, local_addr=(source, 0) if source else None),
            limit,
        )
        writer.write(REQ.format(user=user, host=f"{host}:{port}").encode())
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), limit)
        status = int(head.split(b" ", 2)[1])
        headers = {}
        for line in head.decode(errors="replace").split("\r\n")[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        if status != 101:
            writer.close()
            writer = None
        return status, time.monotonic() - start, headers, writer
    except (asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        return f"timeout/eof ({type(e).__name__})", time.monotonic() - start, {}, None
    except OSError as e:
        return f"error {e.strerror}", time.monotonic() - start, {}, None


def fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


async def idle(args):
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    print(f"server fds before: {fds(args.pid) if args.pid else 'n/a'}")
    socks = []
    failed = 0
    for i in range(args.n):
        # --spread: one address per socket (127.3.x.y), so per-address caps do not apply.
        source = f"127.3.{i // 250}.{i % 250 + 1}" if args.spread else args.source
        try:
            _, w = await asyncio.wait_for(
                asyncio.open_connection(host, port, local_addr=(source, 0)), 3
            )
            socks.append(w)
        except (OSError, asyncio.TimeoutError):
            failed += 1
    print(f"idle sockets open: {len(socks)} (failed to open: {failed})")
    probes = []
    end = time.monotonic() + args.hold
    peak = 0
    while time.monotonic() < end:
        status, secs, _, w = await upgrade(host, port, f"probe{len(probes)}", limit=3)
        probes.append((status, secs))
        if w:
            w.close()
        if args.pid:
            peak = max(peak, fds(args.pid))
        await asyncio.sleep(0.5)
    ok = [s for st, s in probes if st == 101]
    print(
        f"probes from 127.0.0.1 during the attack: {len(ok)}/{len(probes)} upgraded"
        + (f", slowest {max(ok)*1000:.0f} ms" if ok else "")
        + f"; outcomes: {sorted(set(str(st) for st, _ in probes))}"
    )
    if args.pid:
        print(f"server fds peak during the attack: {peak}")
    for w in socks:
        w.close()


async def slots(args):
    host, port = args.addr.rsplit(":", 1)
    port = int(port)
    held = []
    refused = {}
    end = time.monotonic() + args.duration
    while time.monotonic() < end:
        status, _, headers, w = await upgrade(host, port, f"hog{len(held)}", source=args.source)
        if status == 101:
            held.append(w)
            continue
        refused[status] = refused.get(status, 0) + 1
        wait = float(headers.get("retry-after", "1"))
        await asyncio.sleep(min(wait, max(0.0, end - time.monotonic())))
    print(f"one address ({args.source}) holds {len(held)} WebSockets after {args.duration} s; refusals: {refused}")
    status, secs, _, w = await upgrade(host, port, "legit")
    print(f"a client from 127.0.0.1 then gets: {status} in {secs*1000:.0f} ms")
    if w:
        w.close()
    for w in held:
        w.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("attack", choices=["idle", "slots"])
    p.add_argument("--addr", required=True)
    p.add_argument("-n", type=int, default=1100)
    p.add_argument("--source", default="127.0.0.2")
    p.add_argument("--hold", type=float, default=6)
    p.add_argument("--duration", type=float, default=25)
    p.add_argument("--pid", type=int)
    p.add_argument("--spread", action="store_true", help="idle: each socket from its own address")
    args = p.parse_args()
    asyncio.run(idle(args) if args.attack == "idle" else slots(args))


if __name__ == "__main__":
    main()
