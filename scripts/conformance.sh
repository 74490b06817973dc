#!/usr/bin/env bash
# Runs the Autobahn|Testsuite (../shared/conformance) against Switchboard's /echo endpoint and
# fails unless every case passes (no FAILED, no UNIMPLEMENTED): all 517, permessage-deflate
# (12.*, 13.*) included.
#
#   scripts/conformance.sh [BINARY]     (default: target/debug/switchboard, built by the caller)
# Report: out/conformance/index.html
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN="${1:-$ROOT/target/debug/switchboard}"
SUITE="${CONFORMANCE_DIR:-$ROOT/../shared/conformance}"
OUT="$ROOT/out/conformance"
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$HOME/.cache/autobahn-testsuite-py3}"

[ -x "$BIN" ] || { echo "conformance: no binary at $BIN (build it first: cargo build)" >&2; exit 1; }
[ -x "$SUITE/run.sh" ] || { echo "conformance: no suite at $SUITE (shared/conformance beside the repo)" >&2; exit 1; }

"$SUITE/setup.sh" "$AUTOBAHN_VENV" >/dev/null

mkdir -p "$OUT"
LOG="$OUT/server.log"
"$BIN" serve --listen 127.0.0.1:0 --echo-endpoint --log warn >"$OUT/server.out" 2>"$LOG" &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT

ADDR=""
for _ in $(seq 1 200); do
    ADDR="$(sed -n 's/^listening on //p' "$OUT/server.out")"
    [ -n "$ADDR" ] && break
    kill -0 "$PID" 2>/dev/null || { echo "conformance: server exited; log:" >&2; cat "$LOG" >&2; exit 1; }
    sleep 0.05
done
[ -n "$ADDR" ] || { echo "conformance: server did not report its address" >&2; exit 1; }

"$SUITE/run.sh" "ws://$ADDR/echo" "$OUT" --agent switchboard --timeout 1800
SUMMARY="$("$AUTOBAHN_VENV/bin/python" "$SUITE/summarize.py" "$OUT")"
echo "$SUMMARY" | tail -n 16
LAST="$(echo "$SUMMARY" | tail -n 1)"
case "$LAST" in
    *" passed, 0 failed"*) echo "conformance: ok ($LAST)" ;;
    *) echo "conformance: FAILED ($LAST); report: $OUT/index.html" >&2; exit 1 ;;
esac
