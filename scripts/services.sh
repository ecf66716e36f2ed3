#!/usr/bin/env bash
# Makes sure NATS (with JetStream) answers on 127.0.0.1:4222 and Redis on
# 127.0.0.1:6379: uses running ones, else starts them from PATH on loopback
# with their data under .local/, installing them with apt-get first (as root
# on Debian/Ubuntu) when they are missing. Idempotent.
#
#   scripts/services.sh          start what is not running (the default)
#   scripts/services.sh stop     stop the servers this script started (their
#                                pids are in .local/nats.pid, .local/redis.pid);
#                                servers it found running are left alone
#   scripts/services.sh status   say which servers run and who started them
#
# NATS_PORT and REDIS_PORT choose other ports.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
state="$root/.local"
nats_port="${NATS_PORT:-4222}"
redis_port="${REDIS_PORT:-6379}"
export PATH="$PATH:/usr/sbin:/usr/local/sbin"

listening() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Whether the NATS server on port $1 answers JetStream API requests: a
# request to $JS.API.INFO over the plain protocol, which only a server with
# JetStream enabled answers (no curl, no monitoring port needed).
jetstream_enabled() {
    local line
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    printf 'CONNECT {"verbose":false,"pedantic":false}\r\nSUB _INBOX.services_sh 1\r\nPUB $JS.API.INFO _INBOX.services_sh 0\r\n\r\nPING\r\n' >&3
    while IFS= read -r -t 2 line <&3; do
        case "$line" in
            MSG\ _INBOX.services_sh*) exec 3>&-; return 0 ;;
            -ERR*) break ;;
        esac
    done
    exec 3>&-
    return 1
}

# The pid in pid file $1 if that process still runs as command $2 (on port
# $3, when given).
running_pid() { # pidfile command [port]
    [ -s "$1" ] || return 1
    local pid
    pid="$(cat "$1")"
    [ -d "/proc/$pid" ] && grep -q "$2" "/proc/$pid/cmdline" 2>/dev/null || return 1
    [ -z "${3:-}" ] || tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE "(:| )$3( |$)" || return 1
    echo "$pid"
}

wait_for() { # name port
    for _ in $(seq 1 100); do
        listening "$2" && return 0
        sleep 0.2
    done
    echo "error: $1 did not start on 127.0.0.1:$2; see $state/$1.log" >&2
    exit 1
}

stop() {
    local stopped=0 name command pid
    for name in nats redis; do
        command="$name-server"
        if pid="$(running_pid "$state/$name.pid" "$command")"; then
            kill "$pid"
            for _ in $(seq 1 50); do
                [ -d "/proc/$pid" ] || break
                sleep 0.1
            done
            echo "$name: stopped (pid $pid)"
            stopped=1
        fi
        rm -f "$state/$name.pid"
    done
    [ "$stopped" = 1 ] || echo "nothing to stop: services.sh started no server that still runs"
}

status() {
    local name port pid
    for name in nats redis; do
        port="$nats_port"
        [ "$name" = redis ] && port="$redis_port"
        if pid="$(running_pid "$state/$name.pid" "$name-server" "$port")"; then
            echo "$name: running on 127.0.0.1:$port, started by services.sh (pid $pid; scripts/services.sh stop stops it)"
        elif listening "$port"; then
            echo "$name: running on 127.0.0.1:$port, not started by services.sh (left alone by stop)"
        else
            echo "$name: not running"
        fi
    done
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

case "${1:-start}" in
    start) ;;
    stop) stop; exit 0 ;;
    status) status; exit 0 ;;
    *) echo "usage: $0 [start|stop|status]" >&2; exit 2 ;;
esac

# The binaries are needed even when servers already listen: the tests start
# clusters of their own (three nats-servers; Redis Cluster and Sentinel with
# redis-server and redis-cli).
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
[ ${#missing[@]} -eq 0 ] || install_missing "${missing[@]}"
mkdir -p "$state"

if listening "$nats_port"; then
    if ! jetstream_enabled "$nats_port"; then
        echo "error: the NATS server on 127.0.0.1:$nats_port does not have JetStream enabled, which hookrelay needs;" >&2
        echo "       restart it with -js (nats-server -js), or stop it and rerun this script to start one" >&2
        exit 1
    fi
    echo "nats:  using the server on 127.0.0.1:$nats_port (JetStream enabled)"
else
    mkdir -p "$state/nats"
    nohup nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$state/nats" >"$state/nats.log" 2>&1 &
    echo $! >"$state/nats.pid"
    wait_for nats "$nats_port"
    echo "nats:  started on 127.0.0.1:$nats_port (data in .local/nats, log .local/nats.log; scripts/services.sh stop stops it)"
fi

if listening "$redis_port"; then
    echo "redis: using the server on 127.0.0.1:$redis_port"
else
    mkdir -p "$state/redis"
    redis-server --bind 127.0.0.1 --port "$redis_port" --dir "$state/redis" \
        --appendonly yes --daemonize yes --logfile "$state/redis.log" \
        --pidfile "$state/redis.pid"
    wait_for redis "$redis_port"
    echo "redis: started on 127.0.0.1:$redis_port (data in .local/redis, log .local/redis.log; scripts/services.sh stop stops it)"
fi
