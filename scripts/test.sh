#!/usr/bin/env bash
# Every test of the project, in one command (the README's test command; .ci/run calls it):
# formatting, lints, the architecture's dependency rules, unit and integration tests over real
# sockets (multi-node tests against real Redis and nginx), the Autobahn conformance suite
# against /echo, Schemathesis against the HTTP API, the pages in headless Chromium, and a smoke run of every `switchboard
# bench` scenario.
# It installs what it needs that is missing (cargo-nextest, Redis, nginx, Chromium, npm
# packages, the conformance venv). Tests start their own Redis and nginx on free ports.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$(date +%s)
step() { printf '\n==> %s (%ss)\n' "$1" "$(( $(date +%s) - START ))"; }

step "cargo fmt --check"
cargo fmt --all --check

step "cargo clippy --all-targets -D warnings"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "architecture"
scripts/check-architecture.sh

step "vendored codec: vendor/tokio-websockets = crates.io 0.13.3 + its patch, and its own tests"
scripts/check-vendor.sh
scripts/check-vendor.sh --test

step "build"
cargo build --workspace --locked

step "programs for the multi-node tests (redis-server, nginx: installed; tests start their own)"
scripts/services.sh

step "unit and integration tests"
if ! cargo nextest --version >/dev/null 2>&1; then
    echo "cargo-nextest missing: installing it"
    cargo install --locked cargo-nextest
fi
cargo nextest run --workspace --locked --no-fail-fast

step "doc tests"
cargo test --workspace --locked --doc

step "conformance (Autobahn|Testsuite, set up by conformance/ from PyPI; cases chosen in scripts/conformance.sh; against /echo)"
scripts/conformance.sh "$ROOT/target/debug/switchboard"

step "HTTP API fuzzing (Schemathesis from PyPI, from the OpenAPI document, against a running server: no 5xx, answers match the schema)"
scripts/api-fuzz.sh "$ROOT/target/debug/switchboard"

step "browser tests (headless Chromium)"
scripts/browser-tests.sh

step "JavaScript SDK (clients/js: dist fresh, tsc, lint, unit, Node and Chromium tests)"
scripts/js-tests.sh

step "bench smoke (every switchboard bench scenario, tiny and short)"
SWITCHBOARD_BIN="$ROOT/target/debug/switchboard" bench/compare.sh --smoke
SWITCHBOARD_BIN="$ROOT/target/debug/switchboard" bench/cluster.sh --smoke

step "all tests passed in $(( $(date +%s) - START ))s"
