#!/usr/bin/env bash
# What permessage-deflate costs, same run (docs/benchmarks.md, "Compression"):
# one room of N subscribers, one publisher, SIZE-byte JSON payloads at RATE messages/s
# (every delivery is one subscriber getting one message):
#   - bytes the server wrote per delivery (/proc/PID/io wchar: frames and headers),
#   - server CPU per delivery (utime + stime of the server process),
#   - deliveries/s,
# for Switchboard with --compression off, Switchboard with compression on and clients that
# offer deflate (as browsers do), and Bun with perMessageDeflate (DEFLATE=1, its shared
# compressor) if bench/peers has Bun installed; then idle RSS per connection with and without
# deflate negotiated.
#
#   bench/deflate.sh            (env: N=1000 SIZE=1024 RATE=200 SECS=10 IDLE=5000
#                                 SWITCHBOARD_BIN=target/release/switchboard)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SWITCHBOARD_BIN:-$ROOT/target/release/switchboard}
N=${N:-1000} SIZE=${SIZE:-1024} RATE=${RATE:-200} SECS=${SECS:-10} IDLE=${IDLE:-5000}
BUN=""
for candidate in "$ROOT"/bench/peers/node_modules/.bin/bun "$ROOT"/bench/peers/node_modules/bun/bin/bun.exe \
  "$ROOT"/bench/peers/node_modules/@oven/bun-linux-*/bin/bun; do
  if [ -x "$candidate" ] && "$candidate" --version >/dev/null 2>&1; then BUN=$candidate; break; fi
done
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-deflate.XXXXXX")
PID=""
trap '[ -n "$PID" ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"' EXIT

[ -x "$BIN" ] || { echo "deflate.sh: no binary at $BIN (cargo build --release)" >&2; exit 1; }
TCK=$(getconf CLK_TCK)

start() { # NAME CMD... : starts a server, sets PID and ADDR
  local name=$1; shift
  "$@" >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PID=$!
  ADDR=""
  for _ in $(seq 1 400); do
    ADDR=$(sed -n 's/^listening on //p; s/^.*listening on \(127[0-9.:]*\).*$/\1/p' "$WORK/$name.out" | head -n 1)
    [ -n "$ADDR" ] && return
    sleep 0.05
  done
  echo "deflate.sh: $name did not start" >&2; cat "$WORK/$name.err" >&2; exit 1
}
stop() { kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; PID=""; }
cpu_ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
wchar() { awk '/^wchar/ {print $2}' "/proc/$PID/io"; }

SB_ARGS=(serve --listen 127.0.0.1:0 --log warn --rate-limit 1000000 --rate-burst 1000000
  --ip-connect-rate 1000000 --ip-connect-burst 1000000 --max-connections 1000000)

fanout() { # LABEL [--deflate]
  local label=$1; shift
  local w0 c0 w1 c1
  w0=$(wchar) c0=$(cpu_ticks)
  "$BIN" bench fanout --url "ws://$ADDR/ws?user=u{conn}" -n "$N" --rooms 1 -p 1 --rate "$RATE" \
    -s "$SIZE" -d "$SECS" --quiet --json "$@" >"$WORK/$label.json" 2>"$WORK/$label.err" ||
    { cat "$WORK/$label.err" >&2; return 1; }
  w1=$(wchar) c1=$(cpu_ticks)
  python3 - "$WORK/$label.json" "$label" $((w1 - w0)) $((c1 - c0)) "$TCK" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
def find(d, k):
    if isinstance(d, dict):
        if k in d: return d[k]
        for v in d.values():
            x = find(v, k)
            if x is not None: return x
    return None
delivered = find(r, "delivered") or 0
rate = find(r, "deliveries_per_s") or 0
lost = find(r, "lost") or 0
wbytes, ticks, tck = int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
cpu_us = ticks / tck * 1e6 / max(delivered, 1)
print(f"| {sys.argv[2]} | {delivered} | {lost} | {rate:,.0f} | {wbytes / max(delivered, 1):,.0f} | {cpu_us:.2f} |")
EOF
}

idle() { # LABEL [--deflate]
  local label=$1; shift
  "$BIN" bench idle --url "ws://$ADDR/ws?user=u{conn}" -c "$IDLE" --rooms 100 --hold 3 \
    --server-pid "$PID" --quiet --json "$@" >"$WORK/$label.json" 2>"$WORK/$label.err" ||
    { cat "$WORK/$label.err" >&2; return 1; }
  python3 - "$WORK/$label.json" "$label" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
def find(d, k):
    if isinstance(d, dict):
        if k in d: return d[k]
        for v in d.values():
            x = find(v, k)
            if x is not None: return x
    return None
per = find(r, "server_rss_per_conn")
print(f"| {sys.argv[2]} | {per if per is not None else '?'} |")
EOF
}

echo "one room, $N subscribers, 1 publisher, $SIZE-byte payloads at $RATE msg/s for ${SECS}s"
echo "| server | delivered | lost | deliveries/s | bytes written per delivery | server CPU µs per delivery |"
echo "| --- | ---: | ---: | ---: | ---: | ---: |"
start sb-off "$BIN" "${SB_ARGS[@]}" --compression off
fanout "switchboard, compression off" --deflate
stop
start sb-on "$BIN" "${SB_ARGS[@]}" --compression on
fanout "switchboard, compression on, clients without deflate"
fanout "switchboard, compression on (level 1, the default), clients offer deflate" --deflate
stop
start sb-on6 "$BIN" "${SB_ARGS[@]}" --compression on --compression-level 6
fanout "switchboard, compression on (level 6), clients offer deflate" --deflate
stop
if [ -n "$BUN" ]; then
  start bun-off env PORT=0 "$BUN" "$ROOT/bench/peers/bun-server.ts"
  fanout "bun, perMessageDeflate off" --deflate
  stop
  start bun-on env PORT=0 DEFLATE=1 "$BUN" "$ROOT/bench/peers/bun-server.ts"
  fanout "bun, perMessageDeflate on (shared compressor)" --deflate
  stop
else
  echo "(Bun is not installed in bench/peers: npm ci there to compare)"
fi

echo
echo "idle, $IDLE connections in 100 rooms"
echo "| server | RSS per connection (bytes) |"
echo "| --- | ---: |"
start sb-idle "$BIN" "${SB_ARGS[@]}"
idle "switchboard, no deflate"
stop
start sb-idle2 "$BIN" "${SB_ARGS[@]}"
idle "switchboard, deflate negotiated" --deflate
stop
