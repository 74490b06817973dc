#!/usr/bin/env bash
# run.sh URL OUTDIR [options] -- run the Autobahn|Testsuite fuzzingclient
# against the WebSocket echo server at URL and write the report into OUTDIR
# (OUTDIR/index.json, OUTDIR/index.html, one .json/.html per case, plus
# fuzzingclient.json = the spec used, wstest.log, cases.json, status.json).
#
# options (each also settable by the environment variable in brackets):
#   --cases "P ..."     case patterns to run            [CASES]    default "*"
#   --exclude "P ..."   case patterns to skip           [EXCLUDE]  default ""
#   --no-compression    same as --exclude "12.* 13.*" (permessage-deflate)
#   --quick             same as --exclude "9.* 12.* 13.*"
#   --agent NAME        server name in the report       [AGENT]    default "server"
#   --timeout SECONDS   wall-clock limit of the run     [TIMEOUT]  default 3600
#   --venv DIR          venv made by setup.sh           [AUTOBAHN_VENV]
#                       default <repo>/target/conformance-venv
#   --summary           print summarize.py's output at the end
# Patterns are Autobahn's: "*" wildcards, e.g. "1.*" "6.4.*" "9.1.1".
#
# Exit status: 0 when every case ran (whatever the results), 2 when the time
# limit stopped the run (a partial report is still written), 3 when some cases
# could not run (connection to the server failed), 1 on other errors.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 1; }

[ $# -ge 2 ] || usage
URL="$1"; OUTDIR="$2"; shift 2
CASES="${CASES:-*}"
EXCLUDE="${EXCLUDE:-}"
AGENT="${AGENT:-server}"
TIMEOUT="${TIMEOUT:-3600}"
VENV="${AUTOBAHN_VENV:-$(cd "$HERE/.." && pwd)/target/conformance-venv}"
SUMMARY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --cases) CASES="$2"; shift 2 ;;
        --exclude) EXCLUDE="$EXCLUDE $2"; shift 2 ;;
        --no-compression) EXCLUDE="$EXCLUDE 12.* 13.*"; shift ;;
        --quick) EXCLUDE="$EXCLUDE 9.* 12.* 13.*"; shift ;;
        --agent) AGENT="$2"; shift 2 ;;
        --timeout) TIMEOUT="$2"; shift 2 ;;
        --venv) VENV="$2"; shift 2 ;;
        --summary) SUMMARY=1; shift ;;
        -h|--help) usage ;;
        *) echo "run.sh: unknown option $1" >&2; usage ;;
    esac
done

case "$URL" in ws://*|wss://*) ;; *) echo "run.sh: URL must start with ws:// or wss://" >&2; exit 1 ;; esac
PY="$VENV/bin/python"
if ! "$PY" -W ignore "$HERE/py3port.py" --check >/dev/null 2>&1; then
    echo "run.sh: no ported testsuite in $VENV -- run: $HERE/setup.sh $VENV" >&2
    exit 1
fi

mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
# old results must not leak into this report
rm -f "$OUTDIR"/index.json "$OUTDIR"/index.html "$OUTDIR"/*_case_*.json "$OUTDIR"/*_case_*.html \
      "$OUTDIR"/cases.json "$OUTDIR"/status.json

SPEC="$OUTDIR/fuzzingclient.json"
URL="$URL" OUTDIR="$OUTDIR" AGENT="$AGENT" CASES="$CASES" EXCLUDE="$EXCLUDE" "$PY" - "$SPEC" <<'EOF'
import json, os, sys
spec = {
    "outdir": os.environ["OUTDIR"],
    "servers": [{"agent": os.environ["AGENT"], "url": os.environ["URL"]}],
    "cases": os.environ["CASES"].split(),
    "exclude-cases": os.environ["EXCLUDE"].split(),
    "exclude-agent-cases": {},
}
with open(sys.argv[1], "w") as f:
    json.dump(spec, f, indent=3)
EOF

echo "run.sh: $URL -> $OUTDIR (cases: $CASES; exclude: ${EXCLUDE:- none}; limit ${TIMEOUT}s)"
START=$(date +%s)
set +e
( cd "$OUTDIR" && exec timeout -s TERM -k 30 "$TIMEOUT" "$PY" -W ignore "$HERE/fuzzingclient.py" "$SPEC" ) \
    > "$OUTDIR/wstest.log" 2>&1
RC=$?
set -e
END=$(date +%s)
echo "run.sh: wstest exit $RC after $((END - START)) s (log: $OUTDIR/wstest.log)"

if [ ! -f "$OUTDIR/index.json" ]; then
    echo "run.sh: no report written; last log lines:" >&2
    tail -20 "$OUTDIR/wstest.log" >&2
    exit 1
fi
if [ "$SUMMARY" = 1 ]; then
    "$PY" "$HERE/summarize.py" "$OUTDIR" || true
fi
if [ $RC -eq 124 ] || [ $RC -eq 137 ] || grep -q '"complete": false' "$OUTDIR/status.json" 2>/dev/null; then
    echo "run.sh: time limit reached -- partial report" >&2
    exit 2
fi
if ! "$PY" -c 'import json,sys; s=json.load(open(sys.argv[1])); sys.exit(s["cases_reported"] < s["cases_scheduled"])' \
        "$OUTDIR/status.json" 2>/dev/null; then
    echo "run.sh: not all cases ran -- connection to the server failed? ($(grep -m1 'failed (' "$OUTDIR/wstest.log" || true))" >&2
    exit 3
fi
[ $RC -eq 0 ] || exit 1
exit 0
