#!/usr/bin/env bash
# The dependency arrows of DEVELOPERS.md, checked: `protocol` depends on no workspace crate and
# no async runtime; `hub` knows nothing of sockets or HTTP.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

fail=0
deps() { cargo tree -p "$1" --edges normal --prefix none --format '{p}' | awk '{print $1}' | sort -u; }

protocol="$(deps switchboard-protocol)"
for banned in tokio switchboard-hub switchboard-server hyper axum tokio-websockets; do
    if grep -qx "$banned" <<<"$protocol"; then echo "architecture: switchboard-protocol depends on $banned" >&2; fail=1; fi
done
hub="$(deps switchboard-hub)"
for banned in switchboard-server switchboard-broker-redis hyper axum tokio-websockets http redis; do
    if grep -qx "$banned" <<<"$hub"; then echo "architecture: switchboard-hub depends on $banned" >&2; fail=1; fi
done
# The Redis broker plugs into the hub's seam; it knows nothing of the transports.
broker="$(deps switchboard-broker-redis)"
for banned in switchboard-server hyper axum tokio-websockets http; do
    if grep -qx "$banned" <<<"$broker"; then echo "architecture: switchboard-broker-redis depends on $banned" >&2; fail=1; fi
done
[ "$fail" = 0 ] && echo "architecture: ok (protocol and hub free of IO crates; the Redis broker free of transports)"
exit "$fail"
