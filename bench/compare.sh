#!/usr/bin/env bash
# Same-run comparison of Switchboard against Bun (Bun.serve, uWebSockets pub/sub) and Node `ws`,
# driven by `switchboard bench` on loopback.
#
#   bench/compare.sh          build, install the peers, run every scenario against every
#                             server, write the table into docs/benchmarks.md (≤ ~15 min)
#   bench/compare.sh --smoke  Switchboard only, tiny and short, checks the results; no peers,
#                             no docs (for CI)
#
# Environment: SWITCHBOARD_BIN=path (skip the cargo build), PIN=0 (do not pin the server to
# CPU 0 and the load generator to CPU 1), KEEP=1 (keep the results directory).
# Scenario sizes are the variables just below.
set -euo pipefail

MODE=full
case "${1:-}" in
  --smoke) MODE=smoke ;;
  "") ;;
  -h | --help) sed -n '2,13p' "$0"; exit 0 ;;
  *) echo "usage: $0 [--smoke]" >&2; exit 2 ;;
esac

# ---------------------------------------------------------------- scenario sizes
if [[ $MODE == full ]]; then
  ECHO_CONNECTIONS=100 ECHO_SIZE=32 ECHO_SECS=10
  FAN1_SUBSCRIBERS=5000 FAN1_SIZE=64 FAN1_RATE_LOW=20 FAN1_RATE_HIGH=60 FAN1_SECS=10
  FAN2_ROOMS=100 FAN2_PER_ROOM=50 FAN2_PUBLISHERS=10 FAN2_RATE=2000 FAN2_SIZE=64 FAN2_SECS=10
  FAN_DRAIN_MAX=30   # a server that is behind gets this long after publishing to catch up
  IDLE_CONNECTIONS=10000 IDLE_BIG_CONNECTIONS=50000 IDLE_ROOMS=100 IDLE_HOLD=5
  CONNECT_PARALLEL=50 CONNECT_SECS=5
  JITTER_CLIENTS=100 JITTER_RATE=20 JITTER_SECS=20 JITTER_CUT_EVERY=6 JITTER_CUT_JITTER=2 JITTER_AWAY=2
  API_SUBSCRIBERS=1000 API_CONNECTIONS=50 API_SECS=10 API_RATE=5000
  SERVERS="switchboard bun node"
else
  ECHO_CONNECTIONS=10 ECHO_SIZE=32 ECHO_SECS=1
  FAN1_SUBSCRIBERS=50 FAN1_SIZE=64 FAN1_RATE_LOW=50 FAN1_RATE_HIGH=200 FAN1_SECS=1
  FAN2_ROOMS=5 FAN2_PER_ROOM=4 FAN2_PUBLISHERS=2 FAN2_RATE=200 FAN2_SIZE=64 FAN2_SECS=1
  FAN_DRAIN_MAX=10
  IDLE_CONNECTIONS=200 IDLE_BIG_CONNECTIONS=0 IDLE_ROOMS=10 IDLE_HOLD=1
  CONNECT_PARALLEL=5 CONNECT_SECS=1
  JITTER_CLIENTS=10 JITTER_RATE=20 JITTER_SECS=3 JITTER_CUT_EVERY=1 JITTER_CUT_JITTER=0.3 JITTER_AWAY=0.3
  API_SUBSCRIBERS=10 API_CONNECTIONS=2 API_SECS=1 API_RATE=200
  SERVERS="switchboard"
fi
BUDGET_SECS=900     # whole run, build included: runs are cut at it, later ones skipped
RUN_TIMEOUT=180     # one `switchboard bench` invocation
START_TIMEOUT=20    # a server printing its "listening on" line
QUIET_BUSY_PCT=40   # before each run, wait (at most QUIET_MAX_WAIT s) while other processes
QUIET_MAX_WAIT=5    #   keep the machine busier than this (% of all cores)
# The HTTP API scenario's key (Switchboard only: the peers have no HTTP API).
API_KEY=compare-key-0123456789abcdef

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PEERS="$ROOT/bench/peers"
DOCS="$ROOT/docs/benchmarks.md"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/switchboard-compare.XXXXXX")
RESULTS="$WORK/results"
mkdir -p "$RESULTS"
STARTED_AT=$SECONDS
SERVER_PID=""
FAILURES=0

log() { printf '%s\n' "$*" >&2; }
die() { log "compare.sh: $*"; exit 1; }

cleanup() {
  local status=$?
  if [[ -n $SERVER_PID ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill -TERM "$SERVER_PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
  fi
  if [[ ${KEEP:-0} == 1 ]]; then log "results kept in $WORK"; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Flags must win over anything in the environment or a config file.
while read -r var; do unset "$var"; done < <(compgen -e | grep '^SWITCHBOARD_' | grep -v '^SWITCHBOARD_BIN$' || true)

# ---------------------------------------------------------------- pinning, limits
PIN_SERVER=() PIN_BENCH=()
if [[ ${PIN:-1} == 1 ]] && command -v taskset >/dev/null && (($(nproc) >= 2)); then
  PIN_SERVER=(taskset -c 0) PIN_BENCH=(taskset -c 1)
fi
# Root may raise the hard limit; everyone may raise the soft one to the hard one.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
FD_LIMIT=$(ulimit -n)

# ---------------------------------------------------------------- build and install
if [[ -n ${SWITCHBOARD_BIN:-} ]]; then
  BIN=$SWITCHBOARD_BIN
elif [[ $MODE == full ]]; then
  log "== building switchboard (release)"
  (cd "$ROOT" && timeout "$BUDGET_SECS" cargo build --release --locked -p switchboard-cli) >&2 ||
    die "cargo build failed (or took longer than ${BUDGET_SECS}s)"
  BIN="$ROOT/target/release/switchboard"
else
  # The smoke run checks that the scenarios work, not how fast: the debug build (which the
  # test command has built anyway) is enough.
  (cd "$ROOT" && cargo build --locked -p switchboard-cli) >&2 || die "cargo build failed"
  BIN="$ROOT/target/debug/switchboard"
fi
[[ -x $BIN ]] || die "no switchboard binary at $BIN"

BUN="" NODE=""
if [[ $MODE == full ]]; then
  command -v node >/dev/null || die "node is not installed (needed for the Node ws peer and npm)"
  command -v npm >/dev/null || die "npm is not installed (needed to install the peers)"
  log "== installing the peers (npm ci in bench/peers)"
  (cd "$PEERS" && npm ci --no-audit --no-fund --loglevel=error) >&2 ||
    die "cannot install the peers with npm (bench/peers/package-lock.json: ws, bun)"
  BUN="$PEERS/node_modules/.bin/bun"
  if ! "$BUN" --version >/dev/null 2>&1; then
    # Without bun's postinstall the .bin entry is a placeholder; use the platform package.
    BUN=$(ls "$PEERS"/node_modules/@oven/bun-linux-*/bin/bun 2>/dev/null | head -n 1 || true)
    [[ -n $BUN ]] && "$BUN" --version >/dev/null 2>&1 ||
      die "Bun did not install: neither node_modules/.bin/bun nor @oven/bun-linux-*/bin/bun runs"
  fi
  NODE=$(command -v node)
  [[ -f $PEERS/node_modules/ws/package.json ]] || die "the ws package did not install"
fi

# ---------------------------------------------------------------- servers
RUN_NUMBER=0
start_server() { # NAME
  RUN_NUMBER=$((RUN_NUMBER + 1))
  local name=$1
  SERVER_OUT="$WORK/$RUN_NUMBER-$name.out" SERVER_ERR="$WORK/$RUN_NUMBER-$name.err"
  local out=$SERVER_OUT err=$SERVER_ERR
  : >"$out"
  local cmd=()
  case $name in
    switchboard)
      cmd=(env "SWITCHBOARD_API_KEY=$API_KEY" "$BIN" serve --listen 127.0.0.1:0 --echo-endpoint --log warn
        --rate-limit 1000000 --rate-burst 1000000 --ip-connect-rate 1000000 --ip-connect-burst 1000000
        --max-rooms 100000 --max-connections 1000000 --outbox-bytes 67108864
        --api-requests-per-second 1000000 --api-burst 1000000) ;;
    bun) cmd=(env PORT=0 "$BUN" "$PEERS/bun-server.ts") ;;
    node) cmd=(env PORT=0 "$NODE" "$PEERS/ws-server.mjs") ;;
  esac
  # `taskset` and `env` exec the server, so $! is the server's own pid.
  "${PIN_SERVER[@]}" "${cmd[@]}" >"$out" 2>"$err" &
  SERVER_PID=$!
  local waited=0
  until grep -q '^listening on ' "$out" 2>/dev/null; do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      log "$name exited during start-up:"; tail -n 20 "$err" >&2; die "cannot start $name"
    fi
    ((waited++ < START_TIMEOUT * 10)) || die "$name printed no 'listening on' line within ${START_TIMEOUT}s"
    sleep 0.1
  done
  SERVER_ADDR=$(sed -n 's/^listening on \([^ ]*\).*/\1/p' "$out" | head -n 1)
}

stop_server() {
  [[ -n $SERVER_PID ]] || return 0
  kill -TERM "$SERVER_PID" 2>/dev/null || true
  for _ in $(seq 150); do kill -0 "$SERVER_PID" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=""
}

# run SERVER NAME SCENARIO ARGS... — a fresh server per scenario (so that idle's RSS figures do
# not depend on what ran before), the result JSON in $RESULTS/SERVER/NAME.json.
run() {
  local server=$1 name=$2 scenario=$3
  shift 3
  local remaining=$((BUDGET_SECS - (SECONDS - STARTED_AT)))
  mkdir -p "$RESULTS/$server"
  if ((remaining < 15)); then
    log "-- $server $name: skipped (time budget of ${BUDGET_SECS}s used up)"
    echo "{\"skipped\":\"time budget\"}" >"$RESULTS/$server/$name.json"
    return 0
  fi
  wait_quiet
  start_server "$server"
  local url_path
  case $name in
    echo) url_path=/echo ;;
    *-users) url_path='/ws?user=u{conn}' ;; # one user per connection
    *) url_path='/ws?user=bench' ;;
  esac
  local limit=$((remaining < RUN_TIMEOUT ? remaining : RUN_TIMEOUT))
  [[ $scenario != api ]] || set -- "$@" --api "http://$SERVER_ADDR" --key "$API_KEY"
  log "-- $server $name: switchboard bench $scenario $*"
  local status=0
  timeout --kill-after=10 "$limit" "${PIN_BENCH[@]}" "$BIN" bench "$scenario" \
    --url "ws://$SERVER_ADDR$url_path" --server-pid "$SERVER_PID" --json --quiet "$@" \
    >"$RESULTS/$server/$name.json" 2>"$WORK/$server-$name.log" || status=$?
  sed 's/^/   /' "$WORK/$server-$name.log" >&2
  if ((status != 0)) || ! grep -q '"scenario"' "$RESULTS/$server/$name.json"; then
    local why="exit $status"
    ((status != 124)) || why="timed out after ${limit}s"
    log "   FAILED ($why)"
    echo "{\"failed\":\"exit $status\"}" >"$RESULTS/$server/$name.json"
    FAILURES=$((FAILURES + 1))
  fi
  if ! kill -0 "$SERVER_PID" 2>/dev/null; then
    log "   $server died during the run:"; tail -n 20 "$SERVER_ERR" >&2
    FAILURES=$((FAILURES + 1))
  elif grep -qiE 'error|panic' "$SERVER_ERR"; then
    log "   $server logged errors:"; grep -iE 'error|panic' "$SERVER_ERR" | head -n 5 | sed 's/^/     /' >&2
  fi
  stop_server
}

# Share of all cores busy over the last second, from /proc/stat.
busy_pct() {
  local a b
  read -r -a a < <(head -n 1 /proc/stat)
  sleep 1
  read -r -a b < <(head -n 1 /proc/stat)
  local total=0 idle=$(((b[4] + b[5]) - (a[4] + a[5]))) i
  for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
  ((total > 0)) || { echo 0; return; }
  echo $((100 * (total - idle) / total))
}

# Waits (briefly) for other processes' load to drop: the machine is shared.
wait_quiet() {
  [[ $MODE == full ]] || return 0
  local waited=0 busy
  busy=$(busy_pct)
  while ((busy > QUIET_BUSY_PCT && waited < QUIET_MAX_WAIT)); do
    busy=$(busy_pct)
    waited=$((waited + 1))
  done
  ((busy <= QUIET_BUSY_PCT)) || log "   (machine ${busy} % busy with other work when this run started)"
  BUSY_RUNS+=("$busy")
}
BUSY_RUNS=()

# each NAME SCENARIO ARGS... — one scenario against every server in turn (interleaved, so that
# other work on the machine disturbs all of them alike).
each() {
  local server
  for server in $SERVERS; do run "$server" "$@"; done
}

IDLE_BIG_WANTED=$IDLE_BIG_CONNECTIONS
if ((IDLE_BIG_CONNECTIONS > 0 && FD_LIMIT < IDLE_BIG_CONNECTIONS + 1000)); then
  # The server and the load generator each hold one descriptor per connection.
  IDLE_BIG_CONNECTIONS=$(((FD_LIMIT - 1000) / 1000 * 1000))
  ((IDLE_BIG_CONNECTIONS > IDLE_CONNECTIONS)) || IDLE_BIG_CONNECTIONS=0
  log "== RLIMIT_NOFILE is $FD_LIMIT (hard limit): the big idle run uses $IDLE_BIG_CONNECTIONS connections, not $IDLE_BIG_WANTED"
fi

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
FAN=(--drain-max "$FAN_DRAIN_MAX")
each echo echo -c "$ECHO_CONNECTIONS" -s "$ECHO_SIZE" -d "$ECHO_SECS"
each fanout-1room-low fanout -n "$FAN1_SUBSCRIBERS" --rooms 1 -p 1 \
  --rate "$FAN1_RATE_LOW" -s "$FAN1_SIZE" -d "$FAN1_SECS" "${FAN[@]}"
each fanout-1room-high fanout -n "$FAN1_SUBSCRIBERS" --rooms 1 -p 1 \
  --rate "$FAN1_RATE_HIGH" -s "$FAN1_SIZE" -d "$FAN1_SECS" "${FAN[@]}"
each fanout-rooms fanout -n $((FAN2_ROOMS * FAN2_PER_ROOM)) --rooms "$FAN2_ROOMS" \
  -p "$FAN2_PUBLISHERS" --rate "$FAN2_RATE" -s "$FAN2_SIZE" -d "$FAN2_SECS" "${FAN[@]}"
each idle idle -c "$IDLE_CONNECTIONS" --rooms "$IDLE_ROOMS" --hold "$IDLE_HOLD"
each connect connect -c "$CONNECT_PARALLEL" -d "$CONNECT_SECS"
if ((IDLE_BIG_CONNECTIONS > 0)); then
  each idle-big idle -c "$IDLE_BIG_CONNECTIONS" --rooms "$IDLE_ROOMS" --hold "$IDLE_HOLD"
fi
# Switchboard only: idle with one user name per connection (presence events and member lists,
# which the peers do not have), and recovery after cut connections.
run switchboard idle-users idle -c "$IDLE_CONNECTIONS" --rooms "$IDLE_ROOMS" --hold 1
run switchboard jitter jitter -n "$JITTER_CLIENTS" --rate "$JITTER_RATE" -d "$JITTER_SECS" \
  --cut-every "$JITTER_CUT_EVERY" --cut-jitter "$JITTER_CUT_JITTER" --away "$JITTER_AWAY"
# Switchboard only: the HTTP API publishing into one room of WebSocket subscribers, as fast as
# the keep-alive connections go (into one subscriber: the API's own cost; into many: fan-out's),
# then at a steady rate for the latency.
run switchboard api-one api -n 1 -c "$API_CONNECTIONS" -d "$API_SECS"
run switchboard api-max api -n "$API_SUBSCRIBERS" -c "$API_CONNECTIONS" -d "$API_SECS"
run switchboard api-rate api -n "$API_SUBSCRIBERS" -c "$API_CONNECTIONS" -d "$API_SECS" --rate "$API_RATE"
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---------------------------------------------------------------- checks and report
if [[ $MODE == smoke ]]; then
  python3 "$ROOT/bench/report.py" check "$RESULTS" || FAILURES=$((FAILURES + 1))
  ((FAILURES == 0)) || die "smoke run: $FAILURES problem(s)"
  log "bench smoke: all scenarios ran against switchboard"
  exit 0
fi

cpu_model=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
mem_gib=$(awk '/^MemTotal/ {printf "%.0f", $2 / 1048576}' /proc/meminfo)
cat >"$WORK/meta.json" <<EOF
{
  "date": "$(date -u '+%Y-%m-%d %H:%M UTC')",
  "machine": "$(nproc) cores ($cpu_model), $mem_gib GiB, $(uname -sr)",
  "versions": "$("$BIN" --version), rustc $(rustc --version | cut -d' ' -f2), Bun $("$BUN" --version), Node $("$NODE" --version) with ws $(sed -n 's/.*"version": "\(.*\)".*/\1/p' "$PEERS/node_modules/ws/package.json")",
  "command": "bench/compare.sh",
  "pinned": $([[ ${#PIN_SERVER[@]} -gt 0 ]] && echo true || echo false),
  "load_before": "$LOAD_BEFORE",
  "load_after": "$LOAD_AFTER",
  "duration_s": $((SECONDS - STARTED_AT)),
  "fd_limit": $FD_LIMIT,
  "idle_big_wanted": $IDLE_BIG_WANTED,
  "idle_big_run": $IDLE_BIG_CONNECTIONS,
  "busy_runs": "$(IFS=,; echo "${BUSY_RUNS[*]}")",
  "quiet_busy_pct": $QUIET_BUSY_PCT
}
EOF
python3 "$ROOT/bench/report.py" docs "$RESULTS" "$WORK/meta.json" "$DOCS"
log "== wrote the comparison into docs/benchmarks.md ($((SECONDS - STARTED_AT)) s in all, $FAILURES failure(s))"
((FAILURES == 0))
