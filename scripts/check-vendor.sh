#!/usr/bin/env bash
# The vendored WebSocket codec (vendor/tokio-websockets) is upstream's crates.io package plus
# vendor/tokio-websockets.patch and nothing else: this re-applies the patch to pristine upstream
# and fails on any drift (a file changed by hand without the patch, or a patch that no longer
# applies). See vendor/tokio-websockets/PATCHED.md.
#
#   scripts/check-vendor.sh            check (the test command runs this)
#   scripts/check-vendor.sh --update   rewrite the patch from the vendored copy, after a
#                                      deliberate change to it (then commit both)
#   scripts/check-vendor.sh --test     run the vendored crate's own tests (upstream's and the
#                                      patch's: its unit tests and tests/*.rs), building only
#                                      what they need (the test command runs this too)
#
# Pristine upstream is the .crate cargo downloads from crates.io (its checksum checked against
# the index): taken from cargo's cache, or fetched through a throw-away manifest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NAME=tokio-websockets
VERSION=0.13.3
VENDOR=vendor/$NAME
PATCH=vendor/$NAME.patch
# Upstream files left out of the copy: CI configuration, the Autobahn harness, scripts, the lock
# file (vendor/.../Cargo.lock is written by standalone runs and ignored by git).
OMITTED=(.cargo .codespellrc .dockerignore .github Cargo.lock autobahn scripts)
# Ours, beside upstream's files.
OURS=(PATCHED.md)

# The crate's own tests need only these of its dev-dependencies; the others (rustls with
# aws-lc, for upstream's TLS examples) would cost minutes of C compilation for no test.
TEST_DEV_DEPS_DROPPED=(rustls rustls-pemfile rustls-pki-types tokio-rustls)
TEST_FEATURES=server,client,sha1_smol,fastrand

# The vendored crate's unit tests and tests/*.rs, on a copy of it in target/ whose manifest
# leaves out the dev-dependencies no test uses, with its own target dir (the workspace's
# lock file seeds the versions, so cargo's cache has them).
run_tests() {
    local out="$ROOT/target/vendor-codec"
    rm -rf "$out/crate"
    mkdir -p "$out/crate"
    git ls-files -z --cached --others --exclude-standard "$VENDOR" \
        | (cd "$VENDOR" && sed -z "s|^$VENDOR/||" | xargs -0 cp --parents -t "$out/crate")
    local drop
    drop="$(IFS='|'; echo "${TEST_DEV_DEPS_DROPPED[*]}")"
    awk -v drop="^\\\\[dev-dependencies\\\\.($drop)\\\\]$" '
        /^\[/ { skip = ($0 ~ drop) }
        !skip { print }
    ' "$VENDOR/Cargo.toml" >"$out/crate/Cargo.toml"
    # Its own workspace: not a member of ours.
    printf '\n[workspace]\n' >>"$out/crate/Cargo.toml"
    cp Cargo.lock "$out/crate/Cargo.lock"
    CARGO_TARGET_DIR="$out/target" cargo test --quiet --manifest-path "$out/crate/Cargo.toml" \
        --features "$TEST_FEATURES" --lib --tests
}

update=0
case "${1:-}" in
    --update) update=1 ;;
    --test) run_tests; exit 0 ;;
    "") ;;
    *) echo "usage: $0 [--update | --test]" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

cache="${CARGO_HOME:-$HOME/.cargo}/registry/cache"
find_crate() { find "$cache" -name "$NAME-$VERSION.crate" 2>/dev/null | head -n 1; }
crate="$(find_crate)"
if [ -z "$crate" ]; then
    mkdir -p "$work/fetch/src"
    printf '[package]\nname = "fetch-pristine"\nversion = "0.0.0"\nedition = "2021"\n\n[dependencies]\n%s = { version = "=%s", default-features = false }\n' \
        "$NAME" "$VERSION" >"$work/fetch/Cargo.toml"
    : >"$work/fetch/src/lib.rs"
    (cd "$work/fetch" && cargo fetch --quiet)
    crate="$(find_crate)"
fi
if [ -z "$crate" ]; then
    echo "vendor: cannot find or fetch $NAME $VERSION from crates.io" >&2
    exit 1
fi

# a/: pristine upstream as we copy it; b/: the vendored copy (files git tracks or would track)
# less ours.
tar xzf "$crate" -C "$work"
mv "$work/$NAME-$VERSION" "$work/a"
for omitted in "${OMITTED[@]}"; do rm -rf "${work:?}/a/$omitted"; done
mkdir "$work/b"
git ls-files -z --cached --others --exclude-standard "$VENDOR" | (cd "$VENDOR" && sed -z "s|^$VENDOR/||" | xargs -0 cp --parents -t "$work/b")
for ours in "${OURS[@]}"; do rm -f "$work/b/$ours"; done

if [ "$update" = 1 ]; then
    # diff exits 1 when the trees differ, which is the point.
    # No timestamps in the file headers: the patch changes only when the code does.
    (cd "$work" && diff -ruN a b) >"$work/patch" || [ $? = 1 ]
    sed -E 's/^(---|\+\+\+) ([^\t]+)\t.*$/\1 \2/' "$work/patch" >"$PATCH"
    echo "vendor: wrote $PATCH ($(grep -c '^+++ ' "$PATCH") files) from $VENDOR"
    exit 0
fi

cp -r "$work/a" "$work/applied"
if ! (cd "$work/applied" && patch -p1 --quiet --forward --no-backup-if-mismatch -r - <"$ROOT/$PATCH"); then
    echo "vendor: $PATCH does not apply to $NAME $VERSION from crates.io" >&2
    exit 1
fi
if ! diff -ruN "$work/applied" "$work/b" >"$work/drift"; then
    echo "vendor: $VENDOR differs from $NAME $VERSION + $PATCH (change the patch with --update, and say why in PATCHED.md):" >&2
    head -n 60 "$work/drift" >&2
    exit 1
fi
echo "vendor: ok ($VENDOR = $NAME $VERSION from crates.io + $PATCH, $(grep -c '^+++ ' "$PATCH") files)"
