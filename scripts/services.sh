#!/usr/bin/env bash
# The external services the multi-node tests (crates/cli/tests/cluster.rs) need, on a fresh
# Debian machine: Redis (installed, and one answering on 127.0.0.1:6379) and nginx (installed;
# the tests run their own nginx processes, so no system nginx has to run).
# Idempotent, and quick when everything is already there: one line per service says what it
# found or did.
set -euo pipefail

REDIS_HOST=127.0.0.1
REDIS_PORT=6379

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

redis_answers() {
    local reply
    reply="$(timeout 2 redis-cli -h "$REDIS_HOST" -p "$REDIS_PORT" ping 2>/dev/null || true)"
    [ "$reply" = "PONG" ]
}

# --- Redis: installed -------------------------------------------------------------------------
if command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1; then
    redis_installed="found $(redis-server --version | awk '{print $3}')"
else
    apt_install redis-server
    # The package may start its own service on 6379: that is fine, it is what (b) wants.
    redis_installed="installed $(redis-server --version | awk '{print $3}')"
fi

# --- Redis: running on 127.0.0.1:6379 ---------------------------------------------------------
if redis_answers; then
    echo "redis: $redis_installed; already answering on $REDIS_HOST:$REDIS_PORT"
else
    redis-server --port "$REDIS_PORT" --bind "$REDIS_HOST" --save '' --appendonly no \
        --daemonize yes >/dev/null
    for _ in $(seq 1 100); do # 100 × 0.1 s
        if redis_answers; then
            break
        fi
        sleep 0.1
    done
    if ! redis_answers; then
        echo "redis: started redis-server on $REDIS_HOST:$REDIS_PORT but it does not answer PING after 10 s" >&2
        exit 1
    fi
    echo "redis: $redis_installed; started on $REDIS_HOST:$REDIS_PORT"
fi

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
