#!/usr/bin/env bash
# setup.sh [VENV_DIR] -- create/refresh a Python 3 venv with a working
# Autobahn|Testsuite `wstest` (Python-3 port done at install time).
#
#   VENV_DIR defaults to $AUTOBAHN_VENV, else <repo>/target/conformance-venv
#   (inside the repository's build directory: `cargo clean` removes it too).
#
# Idempotent: re-running only installs what is missing and re-ports the
# testsuite only if it is not (or no longer) ported.  Needs network access to
# PyPI only (and apt-get for python3-venv when Python has no venv module).
# Tested with CPython 3.11 (Debian 12).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${1:-${AUTOBAHN_VENV:-$(cd "$HERE/.." && pwd)/target/conformance-venv}}"
PYTHON="${PYTHON:-python3}"
ATS_VERSION=25.10.1
AB_VERSION=0.10.9

log() { echo "setup.sh: $*"; }

command -v "$PYTHON" >/dev/null 2>&1 || { echo "setup.sh: $PYTHON not found (Python >= 3.11 is needed; set PYTHON=...)" >&2; exit 1; }
if [ ! -x "$VENV/bin/python" ]; then
    # Stock Debian ships python3 without ensurepip; the python3-venv package adds it.
    if ! "$PYTHON" -c "import ensurepip, venv" 2>/dev/null; then
        if ! command -v apt-get >/dev/null 2>&1; then
            echo "setup.sh: $PYTHON has no venv/ensurepip module; install your distribution's python3-venv" >&2
            exit 1
        fi
        sudo=()
        [ "$(id -u)" -eq 0 ] || sudo=(sudo)
        log "$PYTHON has no venv module: installing the Debian package python3-venv"
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
    fi
    log "creating venv $VENV (with $($PYTHON --version 2>&1))"
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)

# 1. pinned dependencies (no-op when already satisfied)
log "installing pinned dependencies"
"${PIP[@]}" install -q -r "$HERE/requirements.txt"

# lib2to3 is gone from Python >= 3.13: use its maintained fork there
if ! "$PY" -W ignore -c "import lib2to3.main" 2>/dev/null; then
    log "no lib2to3 in this Python: installing fissix"
    "${PIP[@]}" install -q "fissix==24.4.24"
fi

# 2. the testsuite (and autobahn, which py3port patches), ported in place
if "$PY" -W ignore "$HERE/py3port.py" --check >/dev/null 2>&1; then
    log "autobahntestsuite $ATS_VERSION already installed and ported"
else
    log "installing autobahntestsuite $ATS_VERSION (no deps) and re-installing autobahn $AB_VERSION"
    # --no-deps: the testsuite's metadata pins the Python 2.7 stack
    "${PIP[@]}" install -q --no-deps --force-reinstall \
        "autobahntestsuite==$ATS_VERSION" "autobahn==$AB_VERSION" 2>&1 \
        | grep -v -E "SyntaxError|^\s*$|File \"|^\s+\S" || true
    log "porting to Python 3 (py3port.py)"
    "$PY" -W ignore "$HERE/py3port.py"
fi

# 3. smoke test: the full case set imports and wstest starts
"$PY" -W ignore "$HERE/py3port.py" --check
"$VENV/bin/wstest" -a
"$PY" -W ignore -c "
from autobahntestsuite.case import Cases
from autobahntestsuite.caseset import CaseSet
print('setup.sh: %d test cases available' % len(Cases))
"
log "ok -- use: AUTOBAHN_VENV=$VENV $HERE/run.sh ws://127.0.0.1:9001 OUTDIR"
