#!/usr/bin/env bash
# The hub against Redis pub/sub: one publisher, S subscribers, 64 B messages,
# nothing dropped and every message checked (benches/hub_peers.py, the client).
#
#   sockloop   sockloop hub --framing lines (a line goes to every other client)
#   redis      redis-server (Debian's 7.0), one channel, PUBLISH and SUBSCRIBE
#
# Each server fresh for every run, pinned to CPU 0; the client (one Python
# process, publisher and subscribers on one epoll loop) on CPU 1. Rounds
# interleave the servers. For each run: messages delivered per second (to all
# subscribers together) over the window that opens once message 0 reached
# every subscriber and closes once every subscriber has every message sent in
# SECS seconds of publishing; the server's CPU (utime+stime) over that window
# per million messages delivered.
#
# Usage: benches/hub_peers.sh          ROUNDS=3 SECS=3 SUBSCRIBERS="100 1000"
#   (defaults: about a minute); KEEP=dir keeps the runs' output there;
#   SOCKLOOP=path measures another build. Needs redis-server, taskset, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
SUBSCRIBERS=${SUBSCRIBERS:-"100 1000"}
SERVERS=${SERVERS:-"sockloop redis"}

for tool in redis-server taskset python3; do
    command -v "$tool" >/dev/null || { echo "hub_peers: $tool not found (apt-get install -y redis-server)" >&2; exit 1; }
done
cargo build --release --quiet --bin sockloop
BIN=${SOCKLOOP:-${CARGO_TARGET_DIR:-target}/release/sockloop}

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    stop_pid "$SERVER_PID"
    drop_work
}
trap cleanup EXIT

# Starts server $1 on CPU 0; sets SERVER_PID, PORT and PROTOCOL.
start_server() {
    PORT=$(free_port)
    case $1 in
    sockloop)
        PROTOCOL=lines
        taskset -c 0 "$BIN" hub --framing lines --listen "127.0.0.1:$PORT" \
            >"$WORK/server.out" 2>"$WORK/server.log" &
        ;;
    redis)
        PROTOCOL=redis
        taskset -c 0 redis-server --bind 127.0.0.1 --port "$PORT" --save '' --appendonly no \
            --daemonize no --logfile "$WORK/server.log" &
        ;;
    *) echo "hub_peers: unknown server $1" >&2; exit 1 ;;
    esac
    SERVER_PID=$!
    wait_port "$PORT"
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

echo "servers: $SERVERS; subscribers: $SUBSCRIBERS; $ROUNDS rounds of ${SECS}s; server on CPU 0, client on CPU 1" >&2
failed=0
for subscribers in $SUBSCRIBERS; do
    for round in $(seq "$ROUNDS"); do
        for server in $SERVERS; do
            start_server "$server"
            if json=$(taskset -c 1 python3 benches/hub_peers.py run --protocol "$PROTOCOL" \
                --port "$PORT" --subscribers "$subscribers" --seconds "$SECS" \
                --server-pid "$SERVER_PID" 2>"$WORK/client.err"); then
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
