#!/usr/bin/env bash
# Makes sure NATS (with JetStream) answers on 127.0.0.1:4222 and Redis on
# 127.0.0.1:6379: uses running ones, else starts them from PATH on loopback
# with their data under .local/, installing them with apt-get first (as root
# on Debian/Ubuntu) when they are missing. Idempotent.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.local"
nats_port=4222
redis_port=6379
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for() { # name port
    for _ in $(seq 1 100); do
        listening "$2" && return 0
        sleep 0.2
    done
    echo "error: $1 did not start on 127.0.0.1:$2; see $state/$1.log" >&2
    exit 1
}

install_missing() { # packages...
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing $* with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
    else
        echo "error: $* not found on PATH; install them (e.g. apt-get install -y $*) and rerun" >&2
        exit 1
    fi
}

# The binaries are needed even when servers already listen: the tests start
# clusters of their own (three nats-servers; Redis Cluster and Sentinel with
# redis-server and redis-cli).
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] || install_missing "${missing[@]}"
mkdir -p "$state"

if listening "$nats_port"; then
    echo "nats:  using the server on 127.0.0.1:$nats_port"
else
    mkdir -p "$state/nats"
    nohup nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats" >"$state/nats.log" 2>&1 &
    wait_for nats "$nats_port"
    echo "nats:  started on 127.0.0.1:$nats_port (data in .local/nats, log .local/nats.log)"
fi

if listening "$redis_port"; then
    echo "redis: using the server on 127.0.0.1:$redis_port"
else
    mkdir -p "$state/redis"
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$state/redis" \
        --appendonly yes --daemonize yes --logfile "$state/redis.log"
    wait_for redis "$redis_port"
    echo "redis: started on 127.0.0.1:$redis_port (data in .local/redis, log .local/redis.log)"
fi
