#!/usr/bin/env bash
# sockloop relay beside HAProxy and a tokio proxy, on loads from real
# clients and servers nobody here wrote: redis-benchmark against
# redis-server, wrk against nginx serving a 1 KiB file, iperf3.
#
# Proxies (each fresh for every run, pinned to CPU 0):
#   haproxy          HAProxy (Debian's 2.6), mode tcp, one thread, maxconn 8000,
#                    its config written by this script; no splice options
#   tokio            examples/proxy_tokio.rs: current_thread, copy_bidirectional
#   sockloop         sockloop relay (the copy path)
#   sockloop_splice  sockloop relay --splice (auto: splice once a read fills a chunk)
#   sockloop_always  sockloop relay --splice always
#   base, base_splice  another build (BASELINE=path), copy and --splice: a
#                    before/after comparison within the same interleaved run
# Upstream servers and clients run on CPU 1, every server bound to 127.0.0.1.
#
# Loads (LOADS, names as below):
#   redis_c50    redis-benchmark -c 50   -t set,get -d 64 -n REDIS_N (each command)
#   redis_c1000  redis-benchmark -c 1000 -t set,get -d 64 -n REDIS_N
#   redis_p16    redis-benchmark -c 50 -P 16 -t set,get -d 64 -n 10*REDIS_N
#   wrk_c100     wrk -t 1 -c 100  -d SECS --latency, GET of a 1 KiB file from nginx
#   wrk_c1000    wrk -t 1 -c 1000 -d SECS --latency
#   iperf_p1     iperf3 -t SECS -P 1 (one stream, client to server)
#   iperf_p4     iperf3 -t SECS -P 4
#
# Rounds interleave the proxies (haproxy, tokio, sockloop, sockloop_splice,
# then again) within each load. For each run: the client's own figures
# (requests/s or Gbit/s received, p50 and p99 where it reports them:
# redis-benchmark per command, the worse of SET and GET; wrk's 50% and 99%
# lines), and the proxy's CPU time (utime+stime from /proc/PID/stat, 10 ms
# ticks) read just before the client starts and just after it exits, per
# million requests or per GB.
# SYSCALLS=1 also counts the proxy's syscalls over the same window (perf stat
# on raw_syscalls:sys_enter, attached to the proxy): per request, or per GB
# and bytes per call. Counting costs the proxy a little per syscall, so its
# CPU figures come from runs without it.
#
# Usage: benches/relay_peers.sh
#   ROUNDS=3 SECS=3 REDIS_N=100000 (defaults: about 6 minutes in all)
#   LOADS="redis_c50 iperf_p1" PROXIES="haproxy sockloop" pick a subset
#   SYSCALLS=1 counts syscalls; KEEP=dir keeps every client's output there
#   SOCKLOOP=path measures another build of sockloop
#   BASELINE=path PROXIES="... base base_splice" adds an older build beside it
# Needs (Debian): haproxy redis-server redis-tools nginx-light wrk iperf3,
# and taskset, python3 (and perf for SYSCALLS=1).
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-3}
SECS=${SECS:-3}
REDIS_N=${REDIS_N:-100000}
LOADS=${LOADS:-"redis_c50 redis_c1000 redis_p16 wrk_c100 wrk_c1000 iperf_p1 iperf_p4"}
PROXIES=${PROXIES:-"haproxy tokio sockloop sockloop_splice"}
SYSCALLS=${SYSCALLS:-0}

for tool in haproxy redis-server redis-benchmark nginx wrk iperf3 taskset python3; do
    command -v "$tool" >/dev/null || {
        echo "relay_peers: $tool not found (apt-get install -y haproxy redis-server redis-tools nginx-light wrk iperf3)" >&2
        exit 1
    }
done
[ "$SYSCALLS" = 1 ] && { command -v perf >/dev/null || { echo "relay_peers: SYSCALLS=1 needs perf" >&2; exit 1; }; }

cargo build --release --quiet --bin sockloop --example proxy_tokio
OUT=${CARGO_TARGET_DIR:-target}/release
BIN=${SOCKLOOP:-$OUT/sockloop}
TOKIO=$OUT/examples/proxy_tokio
HZ=$(getconf CLK_TCK)

WORK=$(mktemp -d)
UPSTREAM_PIDS=()
PROXY_PID=
PERF_PID=
cleanup() {
    stop_pid "$PERF_PID" INT
    stop_pid "$PROXY_PID"
    for pid in "${UPSTREAM_PIDS[@]}"; do
        stop_pid "$pid"
    done
    drop_work
}
trap cleanup EXIT

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }

# --- the upstream servers, on CPU 1, started once ---------------------------
REDIS_PORT=$(free_port)
taskset -c 1 redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize no --logfile "$WORK/redis.log" &
UPSTREAM_PIDS+=($!)

NGINX_PORT=$(free_port)
# wrk keeps its connections: one connection, many requests.
start_nginx "$NGINX_PORT" "    keepalive_requests 1000000;
    keepalive_timeout 60s;"
UPSTREAM_PIDS+=("$NGINX_PID")

IPERF_PORT=$(free_port)
taskset -c 1 iperf3 -s -B 127.0.0.1 -p "$IPERF_PORT" >"$WORK/iperf3.log" 2>&1 &
UPSTREAM_PIDS+=($!)

for port in "$REDIS_PORT" "$NGINX_PORT" "$IPERF_PORT"; do wait_port "$port"; done

# --- proxies, on CPU 0 -------------------------------------------------------
# Starts proxy $1 towards 127.0.0.1:$2; sets PROXY_PID and PROXY_PORT.
start_proxy() {
    local name=$1 upstream=$2 out="$WORK/proxy.out"
    : >"$out"
    case $name in
    haproxy)
        PROXY_PORT=$(free_port)
        haproxy_config "$WORK/haproxy.cfg" "$PROXY_PORT" "$upstream"
        # -db: foreground, no master process: the pid is the proxy itself.
        taskset -c 0 haproxy -db -f "$WORK/haproxy.cfg" >"$out" 2>"$WORK/proxy.log" &
        PROXY_PID=$!
        wait_port "$PROXY_PORT"
        ;;
    tokio | sockloop | sockloop_splice | sockloop_always | base | base_splice)
        local command=("$TOKIO" 127.0.0.1:0 "127.0.0.1:$upstream")
        local relay=(relay --listen 127.0.0.1:0 --upstream "127.0.0.1:$upstream")
        case $name in
        sockloop) command=("$BIN" "${relay[@]}") ;;
        sockloop_splice) command=("$BIN" "${relay[@]}" --splice) ;;
        sockloop_always) command=("$BIN" "${relay[@]}" --splice always) ;;
        base) command=("${BASELINE:?base needs BASELINE=path}" "${relay[@]}") ;;
        base_splice) command=("${BASELINE:?base_splice needs BASELINE=path}" "${relay[@]}" --splice) ;;
        esac
        taskset -c 0 "${command[@]}" >"$out" 2>"$WORK/proxy.log" &
        PROXY_PID=$!
        PROXY_PORT=
        for _ in $(seq 200); do
            PROXY_PORT=$(sed -n 's/^listening on .*://p' "$out")
            [ -n "$PROXY_PORT" ] && break
            sleep 0.05
        done
        [ -n "$PROXY_PORT" ] || { echo "relay_peers: $name did not start" >&2; cat "$WORK/proxy.log" >&2; exit 1; }
        ;;
    *) echo "relay_peers: unknown proxy $name" >&2; exit 1 ;;
    esac
}

stop_proxy() {
    stop_pid "$PROXY_PID"
    PROXY_PID=
}

# Sets KIND, UPSTREAM and CLIENT (the client command, to be run on CPU 1
# against port $PORT) for load $1.
load() {
    local target=127.0.0.1
    N=
    case $1 in
    redis_c50) KIND=redis UPSTREAM=$REDIS_PORT N=$REDIS_N
        CLIENT=(redis-benchmark -h $target -p PORT -c 50 -n "$N" -t set,get -d 64 --csv) ;;
    redis_c1000) KIND=redis UPSTREAM=$REDIS_PORT N=$REDIS_N
        CLIENT=(redis-benchmark -h $target -p PORT -c 1000 -n "$N" -t set,get -d 64 --csv) ;;
    redis_p16) KIND=redis UPSTREAM=$REDIS_PORT N=$((REDIS_N * 10))
        CLIENT=(redis-benchmark -h $target -p PORT -c 50 -P 16 -n "$N" -t set,get -d 64 --csv) ;;
    wrk_c100) KIND=wrk UPSTREAM=$NGINX_PORT
        CLIENT=(wrk -t 1 -c 100 -d "${SECS}s" --latency "http://$target:PORT/1k.bin") ;;
    wrk_c1000) KIND=wrk UPSTREAM=$NGINX_PORT
        CLIENT=(wrk -t 1 -c 1000 -d "${SECS}s" --latency "http://$target:PORT/1k.bin") ;;
    iperf_p1) KIND=iperf UPSTREAM=$IPERF_PORT
        CLIENT=(iperf3 -c $target -p PORT -t "$SECS" -P 1 -J) ;;
    iperf_p4) KIND=iperf UPSTREAM=$IPERF_PORT
        CLIENT=(iperf3 -c $target -p PORT -t "$SECS" -P 4 -J) ;;
    *) echo "relay_peers: unknown load $1" >&2; exit 1 ;;
    esac
}

echo "loads: $LOADS; proxies: $PROXIES; $ROUNDS rounds; proxy on CPU 0, everything else on CPU 1" >&2
results="$WORK/results"
failed=0
for name in $LOADS; do
    load "$name"
    for round in $(seq "$ROUNDS"); do
        for proxy in $PROXIES; do
            start_proxy "$proxy" "$UPSTREAM"
            client=("${CLIENT[@]/PORT/$PROXY_PORT}")
            output="$WORK/$name.$proxy.$round.out"
            syscalls=
            if [ "$SYSCALLS" = 1 ]; then
                perf stat -x, -e raw_syscalls:sys_enter -p "$PROXY_PID" -o "$WORK/perf.out" &
                PERF_PID=$!
                # perf creates its output file once it is counting.
                until [ -f "$WORK/perf.out" ]; do sleep 0.02; done
            fi
            before=$(cpu_ticks "$PROXY_PID")
            if taskset -c 1 "${client[@]}" >"$output" 2>"$output.err"; then ok=1; else ok=0; fi
            after=$(cpu_ticks "$PROXY_PID")
            if [ -n "$PERF_PID" ]; then
                kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=
                syscalls=$(awk -F, '$3 == "raw_syscalls:sys_enter" { print $1 }' "$WORK/perf.out")
                rm -f "$WORK/perf.out"
            fi
            stop_proxy
            if [ "$ok" = 1 ] && line=$(python3 benches/relay_peers.py parse "$KIND" "$name" "$proxy" \
                "$round" "$output" $((after - before)) "$HZ" "$syscalls" $N 2>"$output.parse"); then
                echo "$line" >>"$results"
                echo "round $round $name $proxy: $(grep -o '"rate":[0-9.]*,' <<<"$line")" \
                    "$(grep -o '"cpu_s":[0-9.]*' <<<"$line")" >&2
            else
                failed=1
                echo "round $round $name $proxy: failed" >&2
                tail -3 "$output.err" "$output.parse" >&2 2>/dev/null || true
            fi
        done
    done
done

[ -s "$results" ] && python3 benches/relay_peers.py table "$results"
exit "$failed"
