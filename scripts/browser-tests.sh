#!/usr/bin/env bash
# Browser end-to-end tests of the demo chat page (web/tests/*.test.mjs) against the real server.
#
# Assumes the server binary is already built (the caller runs `cargo build`); it is looked up at
# $SWITCHBOARD_BIN, default <repo>/target/debug/switchboard. Installs Chromium (Debian package)
# and the npm test dependencies when missing. Works from any working directory.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
web_dir="$repo_root/web"

export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$repo_root/target/debug/switchboard}"
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [[ ! -x "$SWITCHBOARD_BIN" ]]; then
  echo "browser-tests: server binary not found or not executable: $SWITCHBOARD_BIN" >&2
  echo "browser-tests: build it first (cargo build), or set SWITCHBOARD_BIN" >&2
  exit 1
fi

if [[ ! -x "$CHROMIUM_PATH" ]]; then
  if [[ "$CHROMIUM_PATH" != /usr/bin/chromium ]]; then
    echo "browser-tests: CHROMIUM_PATH=$CHROMIUM_PATH does not exist" >&2
    exit 1
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "browser-tests: $CHROMIUM_PATH is missing and apt-get is not available to install it" >&2
    exit 1
  fi
  sudo_cmd=()
  if [[ "$(id -u)" -ne 0 ]]; then
    sudo_cmd=(sudo)
  fi
  echo "browser-tests: $CHROMIUM_PATH not found; installing Debian package 'chromium'"
  echo "+ apt-get update"
  "${sudo_cmd[@]}" apt-get update
  echo "+ DEBIAN_FRONTEND=noninteractive apt-get install -y chromium"
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
fi
echo "browser-tests: using $("$CHROMIUM_PATH" --version 2>/dev/null || echo "$CHROMIUM_PATH")"

for tool in node npm; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "browser-tests: '$tool' is required (Node.js >= 20) but was not found" >&2
    exit 1
  fi
done

cd "$web_dir"
if [[ ! -d node_modules || package-lock.json -nt node_modules ]]; then
  echo "+ (cd web && npm ci --no-audit --no-fund)"
  npm ci --no-audit --no-fund
fi

echo "+ (cd web && npm test)  # server: $SWITCHBOARD_BIN"
npm test
