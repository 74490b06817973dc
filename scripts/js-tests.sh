#!/usr/bin/env bash
# The JavaScript SDK (clients/js): `npm ci`, the committed build output checked fresh (the server
# embeds clients/js/dist in its binary), type-check (tsc, strict), lint (biome), unit tests of the
# state machine (fake socket), Node integration tests and headless-Chromium tests against the real
# server.
#
# Assumes the server binary is built (the caller runs `cargo build`): $SWITCHBOARD_BIN, default
# <repo>/target/debug/switchboard. Chromium: $CHROMIUM_PATH, default /usr/bin/chromium (installed by
# scripts/browser-tests.sh when missing; run that first, as scripts/test.sh does).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export SWITCHBOARD_BIN="${SWITCHBOARD_BIN:-$repo_root/target/debug/switchboard}"
export CHROMIUM_PATH="${CHROMIUM_PATH:-/usr/bin/chromium}"

if [[ ! -x "$SWITCHBOARD_BIN" ]]; then
  echo "js-tests: server binary not found: $SWITCHBOARD_BIN (run cargo build, or set SWITCHBOARD_BIN)" >&2
  exit 1
fi
if [[ ! -x "$CHROMIUM_PATH" ]]; then
  echo "js-tests: Chromium not found at $CHROMIUM_PATH (scripts/browser-tests.sh installs it)" >&2
  exit 1
fi

cd "$repo_root/clients/js"
echo "+ (cd clients/js && npm ci)"
npm ci --no-audit --no-fund
echo "+ node build.mjs --check   # dist/ is what the server embeds"
node build.mjs --check
echo "+ npm test   # typecheck, lint, unit, node, browser"
npm test
