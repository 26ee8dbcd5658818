#!/usr/bin/env bash
# Restarts under load: the same load through each server while it is
# restarted RESTARTS times, and what the clients saw — failed connects,
# failed or short requests, and the longest time without a completed request.
#
# Servers and how they are restarted (RUNS, server:method, as below):
#   sockloop:usr2       SIGUSR2 to the pid in --pid-file; the next one once the
#                       file names the new process (it said READY=1 first)
#   sockloop:restart    SIGTERM (the old one drains, --shutdown-timeout), wait
#                       for it to exit, start it again on the same port
#   haproxy:reload      HAProxy (Debian's 2.6) in master-worker mode (-W -S):
#                       SIGUSR2 to the master, whose new worker takes the
#                       listening sockets from the old one (-x sockpair@);
#                       the next one once the master logged "Loading success."
#   haproxy:restart     the same HAProxy stopped hard (SIGTERM to the master:
#                       open connections are closed) and started again
#   sockloop:none, haproxy:none   the same load without restarts: what the
#                       load and the machine give when nobody restarts
# The server under test runs on CPU 0; the upstreams and clients on CPU 1,
# every server bound to 127.0.0.1. HAProxy runs mode tcp, one thread,
# maxconn 8000.
#
# Loads (LOADS):
#   http   wrk -t 1 -c CONNS -H 'Connection: close' (a new connection per
#          request), GET of a 1 KiB file from nginx, through `sockloop relay`
#          or HAProxy; benches/upgrade_gap.lua records the completions
#   echo   benches/upgrade.py churn: CONNS connections at a time, each sends
#          64 B, reads the echo and closes, and the next one connects; to
#          `sockloop echo` itself, or to HAProxy in front of a sockloop echo
#          that is never restarted (there is no HAProxy echo)
# Both clients retry a failed connect at once, so the failed connects count
# how many attempts an outage turned away, not how many users.
#
# Each run lasts SECS; the first restart comes LEAD seconds in, then one
# every SPACING seconds once the previous one is complete. The table's
# "done" counts the restarts that began and ended while the client ran.
#
# Usage: benches/upgrade.sh
#   SECS=20 LEAD=2 SPACING=1 RESTARTS=10 CONNS=50 ROUNDS=1 (about 5 minutes)
#   LOADS="http echo" RUNS="sockloop:usr2 haproxy:reload" pick a subset
#   SOCKLOOP=path measures that build (else: cargo build --release)
#   KEEP=dir keeps every server's and client's output there
# Needs (Debian): haproxy nginx-light wrk, and taskset, python3.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

SECS=${SECS:-20}
LEAD=${LEAD:-2}
SPACING=${SPACING:-1}
RESTARTS=${RESTARTS:-10}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-1}
LOADS=${LOADS:-"http echo"}
RUNS=${RUNS:-"sockloop:none sockloop:usr2 sockloop:restart haproxy:none haproxy:reload haproxy:restart"}

for tool in haproxy nginx wrk taskset python3; do
    command -v "$tool" >/dev/null || {
        echo "upgrade: $tool not found (apt-get install -y haproxy nginx-light wrk)" >&2
        exit 1
    }
done
if [ -z "${SOCKLOOP:-}" ]; then
    cargo build --release --quiet --bin sockloop
fi
# Absolute: SIGUSR2 starts the program at the path the server was started as.
BIN=$(realpath "${SOCKLOOP:-${CARGO_TARGET_DIR:-target}/release/sockloop}")

WORK=$(mktemp -d)
UPSTREAM_PIDS=()
SERVER_PIDS=()
CLIENT_PID=
cleanup() {
    stop_pid "$CLIENT_PID"
    stop_servers
    for pid in "${UPSTREAM_PIDS[@]}"; do
        stop_pid "$pid"
    done
    drop_work
}
trap cleanup EXIT

# Waits up to $2 tenths of a second for `$1` (a command) to succeed.
wait_for() {
    for _ in $(seq "$2"); do
        eval "$1" && return 0
        sleep 0.1
    done
    return 1
}

# Stops every server process of the run, whether this shell started it or
# an upgrade did (then it is not our child: wait for it by its pid).
stop_servers() {
    for pid in "${SERVER_PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
        wait_for "! kill -0 $pid 2>/dev/null" 100 || kill -KILL "$pid" 2>/dev/null || true
    done
    SERVER_PIDS=()
}

# --- upstreams, on CPU 1, started once ----------------------------------------
NGINX_PORT=$(free_port)
start_nginx "$NGINX_PORT"
UPSTREAM_PIDS+=("$NGINX_PID")

# The echo behind HAProxy: started once, never restarted.
ECHO_PORT=$(free_port)
taskset -c 1 "$BIN" echo --listen "127.0.0.1:$ECHO_PORT" >"$WORK/upstream-echo.out" 2>&1 &
UPSTREAM_PIDS+=($!)
for port in "$NGINX_PORT" "$ECHO_PORT"; do wait_port "$port"; done

# --- the server under test, on CPU 0 ------------------------------------------
PORT=$(free_port)
PIDFILE=$WORK/sockloop.pid
HAPROXY_LOG=

# Starts server $1 for load $2 on $PORT, and returns once it serves.
start_server() {
    local server=$1 load=$2 upstream
    case $load in
    http) upstream=$NGINX_PORT ;;
    echo) upstream=$ECHO_PORT ;;
    esac
    case $server in
    sockloop)
        local command=(echo --listen "127.0.0.1:$PORT")
        [ "$load" = http ] && command=(relay --listen "127.0.0.1:$PORT" --upstream "127.0.0.1:$upstream")
        rm -f "$PIDFILE"
        taskset -c 0 "$BIN" "${command[@]}" --pid-file "$PIDFILE" >>"$WORK/server.out" 2>>"$WORK/server.log" &
        SERVER_PIDS+=($!)
        wait_for "[ -s $PIDFILE ]" 100 || { echo "upgrade: sockloop did not start" >&2; tail "$WORK/server.log" >&2; exit 1; }
        ;;
    haproxy)
        haproxy_config "$WORK/haproxy.cfg" "$PORT" "$upstream"
        HAPROXY_LOG=$WORK/haproxy.$(date +%s%N).log
        taskset -c 0 haproxy -W -db -S "$WORK/master.sock" -f "$WORK/haproxy.cfg" >"$HAPROXY_LOG" 2>&1 &
        SERVER_PIDS+=($!)
        wait_for "grep -qs 'Loading success' $HAPROXY_LOG" 100 || { echo "upgrade: haproxy did not start" >&2; cat "$HAPROXY_LOG" >&2; exit 1; }
        ;;
    esac
}

# Restarts server $1 (for load $2) by method $3, and returns once the new
# one serves.
restart() {
    local server=$1 load=$2 method=$3 old
    case $server:$method in
    sockloop:usr2)
        old=$(cat "$PIDFILE")
        kill -USR2 "$old"
        wait_for "[ -s $PIDFILE ] && [ \"\$(cat $PIDFILE)\" != $old ]" 150 || {
            echo "upgrade: no new process after SIGUSR2 to $old" >&2
            tail "$WORK/server.log" >&2
            exit 1
        }
        SERVER_PIDS+=("$(cat "$PIDFILE")")
        ;;
    haproxy:reload)
        old=$(grep -c 'Loading success' "$HAPROXY_LOG")
        kill -USR2 "${SERVER_PIDS[0]}"
        wait_for "[ \$(grep -c 'Loading success' $HAPROXY_LOG) -gt $old ]" 150 || {
            echo "upgrade: haproxy did not reload" >&2
            tail "$HAPROXY_LOG" >&2
            exit 1
        }
        ;;
    sockloop:restart | haproxy:restart)
        stop_servers
        start_server "$server" "$load"
        ;;
    *) echo "upgrade: unknown run $server:$method" >&2; exit 1 ;;
    esac
}

# Starts the client of load $1 against $PORT in the background, output to $2.
start_client() {
    case $1 in
    http)
        taskset -c 1 wrk -t 1 -c "$CONNS" -d "${SECS}s" -H 'Connection: close' \
            -s benches/upgrade_gap.lua "http://127.0.0.1:$PORT/1k.bin" >"$2" 2>&1 &
        ;;
    echo)
        taskset -c 1 python3 benches/upgrade.py churn --port "$PORT" --conns "$CONNS" \
            --seconds "$SECS" >"$2" 2>&1 &
        ;;
    *) echo "upgrade: unknown load $1" >&2; exit 1 ;;
    esac
    CLIENT_PID=$!
}

echo "loads: $LOADS; runs: $RUNS; $RESTARTS restarts, $SPACING s apart from $LEAD s into a $SECS s run; $CONNS connections" >&2
results=$WORK/results
for round in $(seq "$ROUNDS"); do
    for load in $LOADS; do
        for run in $RUNS; do
            server=${run%%:*} method=${run#*:}
            start_server "$server" "$load"
            output=$WORK/$load.$server.$method.$round.out
            start_client "$load" "$output"
            sleep "$LEAD"
            done_restarts=0
            if [ "$method" != none ]; then
                # Counted only if the client ran from its start to its end.
                for _ in $(seq "$RESTARTS"); do
                    kill -0 "$CLIENT_PID" 2>/dev/null || break
                    restart "$server" "$load" "$method"
                    kill -0 "$CLIENT_PID" 2>/dev/null || break
                    done_restarts=$((done_restarts + 1))
                    sleep "$SPACING"
                done
            fi
            wait "$CLIENT_PID" || true
            CLIENT_PID=
            stop_servers
            case $load in
            http) json=$(python3 benches/upgrade.py wrk "$output") ;;
            echo) json=$(tail -1 "$output") ;;
            esac
            echo "$load $server $method $round $done_restarts $json" | tee -a "$results" >&2
        done
    done
done

python3 benches/upgrade.py table "$results" --restarts "$RESTARTS"
