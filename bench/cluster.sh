#!/usr/bin/env bash
# Cross-node fan-out through Redis: subscribers on node A, publishers on node B, so every
# delivery goes publisher → B → Redis (Lua: seq, history, PUBLISH) → A → subscribers. The same
# scenario on one node with the in-memory broker, and on one node with Redis, for reference.
# Prints a markdown table (the figures of docs/scaling.md).
#
#   bench/cluster.sh            full run (~3 min): 1,000 subscribers, 1 publisher, rates below;
#                               then messages/s through Redis as fast as they go
#   bench/cluster.sh --smoke    tiny and short: checks that the tool works (used by tests)
#
# Environment: SWITCHBOARD_BIN=path (skip the release build), REDIS_URL (default: a
# redis-server of this run's own on a free port, stopped at the end; scripts/services.sh
# installs it).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
MODE=full
[[ ${1:-} == --smoke ]] && MODE=smoke
if [[ $MODE == full ]]; then
  SUBSCRIBERS=1000 RATES="100 500 1000 2000" SECS=10 SIZE=64
else
  SUBSCRIBERS=20 RATES="50" SECS=1 SIZE=64
fi
"$ROOT/scripts/services.sh" >&2

BIN=${SWITCHBOARD_BIN:-}
if [[ -z $BIN ]]; then
  (cd "$ROOT" && cargo build --release --locked -q)
  BIN="$ROOT/target/release/switchboard"
fi
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-cluster.XXXXXX")
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

if [[ -z ${REDIS_URL:-} ]]; then
  # A Redis of this run's own, never the machine's: a free port, no persistence.
  REDIS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
    >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 1 200); do # 200 × 0.05 s
    [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] && break
    sleep 0.05
  done
  [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]] || {
    echo "cluster.sh: redis-server did not start on port $REDIS_PORT: $(cat "$WORK/redis.log")" >&2
    exit 1
  }
  REDIS_URL=redis://127.0.0.1:$REDIS_PORT
fi

# start NAME ARGS… : starts a node, sets ADDR_<NAME> to its address.
start() {
  local name=$1; shift
  "$BIN" serve --listen 127.0.0.1:0 --rate-limit 1000000 --rate-burst 1000000 \
    --ip-connect-rate 1000000 --ip-connect-burst 1000000 --max-rooms 1000 --log warn "$@" \
    >"$WORK/$name.out" 2>"$WORK/$name.err" &
  PIDS+=($!)
  for _ in $(seq 1 200); do
    if grep -q '^listening on ' "$WORK/$name.out" 2>/dev/null; then
      printf -v "ADDR_$name" '%s' "$(sed -n 's/^listening on //p' "$WORK/$name.out" | head -1)"
      return
    fi
    sleep 0.05
  done
  echo "cluster.sh: node $name did not start: $(cat "$WORK/$name.err")" >&2
  exit 1
}

PREFIX="bench-$$-$(date +%s)"
start mem
start solo --broker "$REDIS_URL" --redis-prefix "$PREFIX-solo"
start a --broker "$REDIS_URL" --redis-prefix "$PREFIX"
start b --broker "$REDIS_URL" --redis-prefix "$PREFIX"

# run LABEL SUB_ADDR PUB_ADDR RATE [EXTRA BENCH FLAGS]
run() {
  local label=$1 sub=$2 pub=$3 rate=$4 json
  shift 4
  local extra=("$@")
  [[ ${#extra[@]} -gt 0 ]] || extra=(-n "$SUBSCRIBERS" -p 1)
  json=$("$BIN" bench fanout --quiet --json --url "ws://$sub/ws" --publisher-url "ws://$pub/ws" \
    "${extra[@]}" --rate "$rate" -s "$SIZE" -d "$SECS" --drain-max 30 \
    --room-prefix "$(tr -c "a-z0-9\n" - <<<"$label")-$rate" 2>"$WORK/bench.err") || {
    echo "cluster.sh: bench failed ($label, $rate/s): $(tail -3 "$WORK/bench.err")" >&2
    exit 1
  }
  python3 - "$label" "$rate" "$json" <<'EOF'
import json, sys
label, rate, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])["results"]
lat = r["latency"]
offered = rate if rate != "0" else f"max: {r['sent_per_s']:,.0f}"
print(f"| {label} | {offered} | {r['deliveries_per_s']:,.0f} | {lat['p50_us'] / 1000:.2f} | "
      f"{lat['p99_us'] / 1000:.2f} | {r['lost']} | {r['duplicated']} | {r['out_of_order']} |")
if r["lost"] or r["duplicated"] or r["out_of_order"]:
    sys.exit(f"{label} at {rate}/s: lost, duplicated or reordered messages")
EOF
}

echo "| setup | offered msg/s | deliveries/s | p50 ms | p99 ms | lost | duplicates | reordered |"
echo "|---|---|---|---|---|---|---|---|"
for rate in $RATES; do
  run "one node, memory" "$ADDR_mem" "$ADDR_mem" "$rate"
  run "one node, redis" "$ADDR_solo" "$ADDR_solo" "$rate"
  run "cross-node, redis" "$ADDR_a" "$ADDR_b" "$rate"
done
# Messages through Redis as fast as they go: 4 publishers into 4 rooms, 10 subscribers,
# each stream with at most 256 messages on their way (--rate 0).
MAX=(-n 10 -p 4 -r 4 -w 256)
echo
echo "| setup (4 publishers → 4 rooms → 10 subscribers) | published msg/s | deliveries/s | p50 ms | p99 ms | lost | duplicates | reordered |"
echo "|---|---|---|---|---|---|---|---|"
run "one node, memory" "$ADDR_mem" "$ADDR_mem" 0 "${MAX[@]}"
run "one node, redis" "$ADDR_solo" "$ADDR_solo" 0 "${MAX[@]}"
run "cross-node, redis" "$ADDR_a" "$ADDR_b" 0 "${MAX[@]}"
