#!/usr/bin/env bash
# The hub against Redis pub/sub and NATS, and three hubs federated through
# Redis against Redis alone: one publisher, S subscribers, 64 B messages,
# nothing dropped and every message checked (benches/hub_peers.py, the client).
#
#   sockloop   sockloop hub --framing lines (a line goes to every other client)
#   redis      redis-server (Debian's 7.0), one channel, PUBLISH and SUBSCRIBE
#   nats       nats-server (Debian's 2.9), GOMAXPROCS=1, no auth, no
#              JetStream; one subject, PUB and SUB (the publisher does not
#              subscribe)
#   federated  three `sockloop hub --framing lines --federate
#              redis://127.0.0.1:P/bench` and the redis-server they share;
#              subscriber i on hub i mod 3, the publisher on the first
#
# Each server fresh for every run, pinned to CPU 0 (all four processes of
# `federated`); the client (one Python process, publisher and subscribers on
# one epoll loop) on CPU 1. Rounds interleave the servers. For each run:
# messages delivered per second (to all subscribers together) over the
# window that opens once message 0 reached every subscriber and closes once
# every subscriber has every message sent in SECS seconds of publishing; the
# server's CPU (utime+stime; for `federated` the sum of the hubs' and
# Redis's) over that window per million messages delivered.
#
# Usage: benches/hub_peers.sh          ROUNDS=3 SECS=3 SUBSCRIBERS="100 1000"
#   SERVERS="sockloop nats redis federated" (defaults: a few minutes);
#   KEEP=dir keeps the runs' output there; SOCKLOOP=path measures another
#   build. Needs redis-server, nats-server (for nats), taskset, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-"100 1000"}
SERVERS=${SERVERS:-"sockloop nats redis federated"}
HUBS=3

need=(redis-server taskset python3)
[[ " $SERVERS " == *" nats "* ]] && need+=(nats-server)
for tool in "${need[@]}"; do
    command -v "$tool" >/dev/null || { echo "hub_peers: $tool not found (apt-get install -y redis-server nats-server)" >&2; exit 1; }
done
if [ -z "${SOCKLOOP:-}" ]; then
    cargo build --release --quiet --bin sockloop
fi
BIN=${SOCKLOOP:-${CARGO_TARGET_DIR:-target}/release/sockloop}

WORK=$(mktemp -d)
SERVER_PIDS=()
cleanup() {
    stop_server
    drop_work
}
trap cleanup EXIT

# Starts redis-server on CPU 0 on port $1, logging to $2.
start_redis() {
    taskset -c 0 redis-server --bind 127.0.0.1 --port "$1" --save '' --appendonly no \
        --daemonize no --logfile "$2" &
    SERVER_PIDS+=($!)
    wait_port "$1"
}

# Starts $HUBS hubs on CPU 0 federated through a fresh redis-server; sets
# PORTS and METRICS_PORTS (comma-separated, the hubs in order).
start_federated() {
    local redis_port hub_port metrics_port i
    redis_port=$(free_port)
    start_redis "$redis_port" "$WORK/redis.log"
    PORTS= METRICS_PORTS=
    for i in $(seq "$HUBS"); do
        hub_port=$(free_port)
        metrics_port=$(free_port)
        taskset -c 0 "$BIN" hub --framing lines --listen "127.0.0.1:$hub_port" \
            --metrics "127.0.0.1:$metrics_port" --federate "redis://127.0.0.1:$redis_port/bench" \
            >"$WORK/hub$i.out" 2>"$WORK/hub$i.log" &
        SERVER_PIDS+=($!)
        wait_port "$hub_port"
        PORTS+=${PORTS:+,}$hub_port
        METRICS_PORTS+=${METRICS_PORTS:+,}$metrics_port
    done
}

# Starts server $1; sets SERVER_PIDS, PORTS, METRICS_PORTS and PROTOCOL.
start_server() {
    PORTS=$(free_port)
    METRICS_PORTS=
    case $1 in
    sockloop)
        PROTOCOL=lines
        taskset -c 0 "$BIN" hub --framing lines --listen "127.0.0.1:$PORTS" \
            >"$WORK/server.out" 2>"$WORK/server.log" &
        SERVER_PIDS+=($!)
        wait_port "$PORTS"
        ;;
    redis)
        PROTOCOL=redis
        start_redis "$PORTS" "$WORK/server.log"
        ;;
    nats)
        # One core, as the others: Go would take it from the CPU mask too.
        PROTOCOL=nats
        GOMAXPROCS=1 taskset -c 0 nats-server -a 127.0.0.1 -p "$PORTS" -l "$WORK/server.log" &
        SERVER_PIDS+=($!)
        wait_port "$PORTS"
        ;;
    federated)
        PROTOCOL=lines
        start_federated
        ;;
    *) echo "hub_peers: unknown server $1" >&2; exit 1 ;;
    esac
}

# Stops the servers, signalled together and then reaped: four processes
# for `federated`, each with its own shutdown.
stop_server() {
    local pid
    for pid in "${SERVER_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        stop_pid "$pid"
    done
    SERVER_PIDS=()
}

echo "servers: $SERVERS; subscribers: $SUBSCRIBERS; $ROUNDS rounds of ${SECS}s; servers on CPU 0, client on CPU 1" >&2
failed=0
for subscribers in $SUBSCRIBERS; do
    for round in $(seq "$ROUNDS"); do
        for server in $SERVERS; do
            start_server "$server"
            pids=$(IFS=,; echo "${SERVER_PIDS[*]}")
            if json=$(taskset -c 1 python3 benches/hub_peers.py run --protocol "$PROTOCOL" \
                --ports "$PORTS" --metrics-ports "$METRICS_PORTS" --subscribers "$subscribers" \
                --seconds "$SECS" --server-pids "$pids" 2>"$WORK/client.err"); then
                echo "$server $json" >>"$WORK/results"
                echo "round $round S=$subscribers $server: $(grep -o '"delivered_per_sec": [0-9.]*' <<<"$json")" >&2
            else
                failed=1
                echo "round $round S=$subscribers $server: failed: $json" >&2
                tail -3 "$WORK/client.err" >&2
            fi
            stop_server
        done
    done
done

[ -s "$WORK/results" ] && python3 benches/hub_peers.py table "$WORK/results"
exit "$failed"
