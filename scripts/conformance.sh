#!/usr/bin/env bash
# Runs Autobahn|Testsuite (the repository's own copy in conformance/, installed from PyPI into
# target/conformance-venv and ported to Python 3 on first use) against Switchboard's /echo
# endpoint and fails unless every selected case passes (no FAILED, no UNIMPLEMENTED). By default
# that is all 517 cases, permessage-deflate (12.*, 13.*) included.
#
#   scripts/conformance.sh [BINARY] [--cases "P ..."] [--exclude "P ..."]
#     BINARY    default target/debug/switchboard (built by the caller)
#     --cases   Autobahn case patterns to run   [CONFORMANCE_CASES]    default: all (517 cases)
#     --exclude patterns to skip                [CONFORMANCE_EXCLUDE]  default: none
#   AUTOBAHN_VENV (default target/conformance-venv) picks the venv.
#
# The default selection is every case, the permessage-deflate groups (12.*, 13.*) included.
# Report: out/conformance/index.html
set -euo pipefail

# The one place that says which cases the test command runs. (There is no group 8.)
DEFAULT_CASES="*"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SUITE="$ROOT/conformance"
OUT="$ROOT/out/conformance"
BIN="$ROOT/target/debug/switchboard"
CASES="${CONFORMANCE_CASES:-$DEFAULT_CASES}"
EXCLUDE="${CONFORMANCE_EXCLUDE:-}"
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES="$2"; shift 2 ;;
        --exclude) EXCLUDE="$EXCLUDE $2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "conformance: unknown option $1 (see --help)" >&2; exit 1 ;;
        *) BIN="$1"; shift ;;
    esac
done
export AUTOBAHN_VENV="${AUTOBAHN_VENV:-$ROOT/target/conformance-venv}"

[ -x "$BIN" ] || { echo "conformance: no binary at $BIN (build it first: cargo build)" >&2; exit 1; }

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

CASES="$CASES" EXCLUDE="$EXCLUDE" "$SUITE/run.sh" "ws://$ADDR/echo" "$OUT" --agent switchboard --timeout 1800
SUMMARY="$("$AUTOBAHN_VENV/bin/python" "$SUITE/summarize.py" "$OUT")"
echo "$SUMMARY" | tail -n 16
LAST="$(echo "$SUMMARY" | tail -n 1)"
case "$LAST" in
    *" passed, 0 failed"*) echo "conformance: ok ($LAST; cases: $CASES${EXCLUDE:+; excluded: $EXCLUDE})" ;;
    *) echo "conformance: FAILED ($LAST); report: $OUT/index.html" >&2; exit 1 ;;
esac
