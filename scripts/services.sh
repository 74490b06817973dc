#!/usr/bin/env bash
# The external programs the multi-node tests need, on a fresh Debian machine: redis-server and
# nginx, installed. Nothing is started here: every test starts its own Redis and nginx on free
# ports through the test kit (crates/testkit, `service`), and bench/cluster.sh its own Redis, so
# no test depends on (or disturbs) a Redis on the machine's 6379.
# Idempotent, and quick when everything is already there: one line per program says what it
# found or did.
set -euo pipefail

# apt-get as root, or through sudo when there is one.
apt_install() {
    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "services: need root or sudo to install $*" >&2
            exit 1
        fi
    fi
    if [ -z "${APT_UPDATED:-}" ]; then
        "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
        APT_UPDATED=1
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# The path of nginx, or nothing: Debian puts it in /usr/sbin, which is not always on PATH.
nginx_bin() {
    if command -v nginx 2>/dev/null; then
        return 0
    fi
    if [ -x /usr/sbin/nginx ]; then
        echo /usr/sbin/nginx
    fi
}

# --- Redis: installed -------------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    redis_installed="found $(redis-server --version | awk '{print $3}')"
else
    apt_install redis-server
    # The package may start a system service on 6379; no test uses it.
    redis_installed="installed $(redis-server --version | awk '{print $3}')"
fi

echo "redis: $redis_installed (not started: tests start their own)"

# --- nginx: installed (not running: tests start their own) ------------------------------------
NGINX="$(nginx_bin)"
if [ -n "$NGINX" ]; then
    echo "nginx: found $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') at $NGINX"
else
    apt_install nginx
    NGINX="$(nginx_bin)"
    if [ -z "$NGINX" ]; then
        echo "nginx: installed package nginx but no nginx binary on PATH or at /usr/sbin/nginx" >&2
        exit 1
    fi
    # The package may have started a system nginx on port 80; nothing needs it.
    if command -v service >/dev/null 2>&1; then
        service nginx stop >/dev/null 2>&1 || true
    fi
    "$NGINX" -s stop >/dev/null 2>&1 || true
    echo "nginx: installed $("$NGINX" -v 2>&1 | sed 's/^nginx version: //') at $NGINX (system service stopped)"
fi
