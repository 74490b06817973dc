#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/ for SECONDS_PER_TARGET seconds (default 60), one
# after the other. Exits non-zero if any target crashed, and says where the crash inputs are.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]
#
# Environment:
#   FUZZ_SANITIZER  none (default: fastest; our crates forbid unsafe code) or address (ASan and
#                   LeakSanitizer, about 6x slower)
#   FUZZ_TARGETS    space-separated targets to run (default: all of `cargo fuzz list`)
#   FUZZ_ARGS       extra libFuzzer flags, e.g. "-max_len=8192 -dict=..."
#
# cargo-fuzz needs nightly-only rustc flags (-Z...); on the stable toolchain RUSTC_BOOTSTRAP=1
# allows them. New corpus entries go to fuzz/target/corpus/<target> (seeded from the small,
# committed fuzz/corpus/<target>); crash inputs to fuzz/artifacts/<target>/.
set -euo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi
sanitizer="${FUZZ_SANITIZER:-none}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
fuzz_dir="$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

cd "$root"
# -a: debug assertions and overflow checks, on top of the release build.
build_flags=(--fuzz-dir "$fuzz_dir" -s "$sanitizer" -a)
echo "== building fuzz targets (sanitizer: $sanitizer)"
cargo fuzz build "${build_flags[@]}"

read -r -a targets <<<"${FUZZ_TARGETS:-$(cargo fuzz list --fuzz-dir "$fuzz_dir" | tr '\n' ' ')}"
read -r -a extra <<<"${FUZZ_ARGS:-}"
logs="$fuzz_dir/target/logs"
mkdir -p "$logs"

failed=()
for target in "${targets[@]}"; do
    corpus="$fuzz_dir/target/corpus/$target"
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    log="$logs/$target.log"
    echo "== $target: ${seconds}s (log: $log)"
    before="$(ls -A "$artifacts")"
    status=0
    cargo fuzz run "${build_flags[@]}" "$target" "$corpus" "$fuzz_dir/corpus/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 "${extra[@]}" \
        >"$log" 2>&1 || status=$?
    # libFuzzer's last status line: executions, coverage (cov: edges, ft: features), corpus.
    grep -E '^#[0-9]+' "$log" | tail -n 1 || true
    grep -E '^stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb)' "$log" || true
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        echo "!! $target FAILED (exit $status):"
        # The panic message (or sanitizer report) and the failing input, without backtraces.
        grep -E -A1 'panicked at|==ERROR|ERROR: libFuzzer' "$log" | head -n 8 || true
        grep -E '^Base64:' "$log" | head -n 1 || true
        after="$(ls -A "$artifacts")"
        if [ "$before" != "$after" ]; then
            echo "!! new crash inputs in $artifacts:"
            comm -13 <(echo "$before") <(echo "$after") | sed "s|^|   $artifacts/|"
        fi
        echo "   reproduce: RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz -s $sanitizer -a $target <crash-file>"
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "== FAILED: ${failed[*]}"
    exit 1
fi
echo "== all targets ran ${seconds}s without a crash"
