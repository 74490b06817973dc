#!/usr/bin/env bash
# Property-based tests of the HTTP API from its own OpenAPI document (Schemathesis, from PyPI,
# installed into target/api-fuzz-venv on first use) against a running server: no answer may be
# a 5xx, and every answer must match the schema (status documented, body valid).
#
#   scripts/api-fuzz.sh [BINARY] [--examples N] [--max-time SECS]
#     BINARY      default target/debug/switchboard (built by the caller)
#     --examples  test cases per operation and phase  [API_FUZZ_EXAMPLES]  default 40
#     --max-time  time budget of the whole run, s    [API_FUZZ_MAX_TIME]  default 90
#   API_FUZZ_VENV (default target/api-fuzz-venv) picks the venv.
# Report (JUnit, and a pytest file reproducing failures): out/api-fuzz/
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="$ROOT/out/api-fuzz"
BIN="$ROOT/target/debug/switchboard"
EXAMPLES="${API_FUZZ_EXAMPLES:-40}"
MAX_TIME="${API_FUZZ_MAX_TIME:-90}"
SCHEMATHESIS_VERSION=4.32.5
while [ $# -gt 0 ]; do
    case "$1" in
        --examples) EXAMPLES="$2"; shift 2 ;;
        --max-time) MAX_TIME="$2"; shift 2 ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        -*) echo "api-fuzz: unknown option $1 (see --help)" >&2; exit 1 ;;
        *) BIN="$1"; shift ;;
    esac
done
VENV="${API_FUZZ_VENV:-$ROOT/target/api-fuzz-venv}"
[ -x "$BIN" ] || { echo "api-fuzz: no binary at $BIN (build it first: cargo build)" >&2; exit 1; }

if [ ! -x "$VENV/bin/st" ] || ! "$VENV/bin/st" --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi

mkdir -p "$OUT"
KEY="api-fuzz-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')"
# Rates high enough that the fuzzer itself is never refused (429 is tested in crates/server/tests/it/api.rs).
SWITCHBOARD_API_KEY="$KEY" "$BIN" serve --listen 127.0.0.1:0 --log warn \
    --api-requests-per-second 1000000 --api-burst 1000000 >"$OUT/server.out" 2>"$OUT/server.log" &
PID=$!
trap 'kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true' EXIT

ADDR=""
for _ in $(seq 1 200); do
    ADDR="$(sed -n 's/^listening on //p' "$OUT/server.out")"
    [ -n "$ADDR" ] && break
    kill -0 "$PID" 2>/dev/null || { echo "api-fuzz: server exited; log:" >&2; cat "$OUT/server.log" >&2; exit 1; }
    sleep 0.05
done
[ -n "$ADDR" ] || { echo "api-fuzz: server did not report its address" >&2; exit 1; }

# A member in a room, so that presence and history have something to show.
"$BIN" publish lobby '{"text":"seed"}' --api "http://$ADDR" --key "$KEY" >/dev/null

"$VENV/bin/st" run "http://$ADDR/api/v1/openapi.json" \
    --header "Authorization: Bearer $KEY" \
    --checks not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance \
    --max-examples "$EXAMPLES" --max-time "$MAX_TIME" --seed 1 --no-color \
    --report junit,pytest --report-dir "$OUT" --generation-database none
if grep -qiE "panicked|internal error" "$OUT/server.log"; then
    echo "api-fuzz: the server log shows a panic:" >&2
    grep -iE "panicked|internal error" "$OUT/server.log" >&2
    exit 1
fi
kill -0 "$PID" 2>/dev/null || { echo "api-fuzz: the server died; log:" >&2; cat "$OUT/server.log" >&2; exit 1; }
echo "api-fuzz: no 5xx, every answer matches the schema"
