#!/usr/bin/env bash
# The dependency arrows of DEVELOPERS.md, checked: `protocol` depends on no workspace crate and
# no async runtime; `hub` knows nothing of sockets or HTTP (not even tokio's `net`); the server
# knows no storage engine (the binary chooses it); the client SDK needs only the protocol.
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
# Features, not only crates: the hub may use tokio's sync primitives, never its sockets.
if cargo tree -p switchboard-hub --edges normal,features --prefix none | grep -q '^tokio feature "net"'; then
    echo "architecture: switchboard-hub enables tokio's net feature" >&2; fail=1
fi
# The binary chooses the engine: the server knows only the hub's seam.
server="$(deps switchboard-server)"
for banned in switchboard-broker-redis redis switchboard-cli; do
    if grep -qx "$banned" <<<"$server"; then echo "architecture: switchboard-server depends on $banned" >&2; fail=1; fi
done
# The client SDK speaks the protocol; of the workspace's crates it needs that one only.
client="$(deps switchboard-client)"
for crate in $(grep '^switchboard-' <<<"$client"); do
    case "$crate" in
        switchboard-client | switchboard-protocol) ;;
        *) echo "architecture: switchboard-client depends on $crate (only switchboard-protocol allowed)" >&2; fail=1 ;;
    esac
done
[ "$fail" = 0 ] && echo "architecture: ok (protocol and hub free of IO crates, hub without tokio/net; the Redis broker free of transports; the server free of Redis; the client on protocol only)"
exit "$fail"
