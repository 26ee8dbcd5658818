#!/usr/bin/env bash
# Runs one `sockloop bench` load against sockloop's echo and each baseline
# server, ROUNDS rounds interleaved (A B C D E, A B C D E, ...), each server
# pinned to CPU 0 and the load generator to CPU 1, and prints a table of
# medians (min-max) with ratios to tokio current_thread.
#
# Usage: benches/compare.sh [sockloop bench args...]
#   default load: --conns 100 --size 64 --mode pingpong --duration 5s --warmup 1s
#   ROUNDS=5 (default); KEEP=dir keeps each run's JSON and stderr there;
#   SKIP=regex leaves out the servers whose names match (e.g. SKIP=threads
#   at 10,000 connections); SYSCALLS=1 also counts the server's syscalls
#   over the measured window (perf stat on the raw_syscalls tracepoint,
#   switched on and off by the bench through a FIFO). Counting costs the
#   server a little per syscall, so take CPU figures from runs without it.
#   EXTRA='name|command[|bench flags][;...]' adds servers to the rounds, e.g.
#   an older build of sockloop, to compare before and after in one run;
#   the flags go to the bench for that server only (--tls --ca PEM).
#   BASE=name takes the ratios to that server instead of tokio_current_thread.
#   SOCKLOOP=path measures that binary as the server `sockloop` (a build
#   from another worktree, say); the load generator, the peers and the
#   chart are still this tree's build, the same for every server.
#   CHART=path.svg is where the chart of the table goes (default
#   target/compare.svg): server CPU per message and p99 per server, drawn
#   by examples/compare_chart.rs.
#   With --connect-rate in the load, a second table shows the connecting
#   phase (an accept storm: --conns 10000 --connect-rate 1000000 --idle).
#   Each run also records the kernel's count of SYNs dropped for a full
#   accept queue (TcpExt ListenOverflows, machine-wide) over the run.
#
# Server CPU per message: the bench reads utime+stime of the server process
# (/proc/PID/stat, 10 ms ticks) at the start and end of its measured window
# (--server-pid), so connection setup, warmup and the final drain are left out.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-5}
if [ $# -eq 0 ]; then
    set -- --conns 100 --size 64 --mode pingpong --duration 5s --warmup 1s
fi
LOAD=("$@")

cargo build --release --quiet --bin sockloop --examples
OUT=${CARGO_TARGET_DIR:-target}/release
# The load generator; SOCKLOOP is the echo under test.
BIN=$OUT/sockloop
SOCKLOOP=${SOCKLOOP:-$BIN}

# name|command; every server prints `listening on IP:PORT` first on stdout.
SERVERS=(
    "sockloop|$SOCKLOOP echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0"
    "tokio_current_thread|$OUT/examples/echo_tokio 127.0.0.1:0 --flavor current_thread"
    "tokio_multi_thread|$OUT/examples/echo_tokio 127.0.0.1:0 --flavor multi_thread"
    "threads|$OUT/examples/echo_threads 127.0.0.1:0"
    "epoll_floor|$OUT/examples/echo_epoll_floor 127.0.0.1:0"
)
if [ -n "${EXTRA:-}" ]; then
    IFS=';' read -ra extra <<<"$EXTRA"
    SERVERS+=("${extra[@]}")
fi

WORK=$(mktemp -d)
SERVER_PID=
PERF_PID=
BENCH_EXTRA=()
cleanup() {
    [ -n "$PERF_PID" ] && stop_perf
    stop_pid "$SERVER_PID"
    drop_work
}
trap cleanup EXIT

# Starts a server on CPU 0; sets SERVER_PID and SERVER_ADDR.
start_server() {
    local name=$1 command=$2
    # The last round's file would still name the last round's port until
    # the new server's redirection truncates it: start from no file.
    rm -f "$WORK/$name.stdout"
    # taskset execs the server, so $! is the server's own pid.
    # shellcheck disable=SC2086 # the command is meant to split into words
    taskset -c 0 $command >"$WORK/$name.stdout" 2>"$WORK/$name.server.log" &
    SERVER_PID=$!
    SERVER_ADDR=
    for _ in $(seq 100); do
        SERVER_ADDR=$(sed -n 's/^listening on //p' "$WORK/$name.stdout" 2>/dev/null || true)
        [ -n "$SERVER_ADDR" ] && return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    echo "compare: $name did not start:" >&2
    cat "$WORK/$name.server.log" >&2
    exit 1
}

# Counts the server's syscalls while the bench holds the window open; sets
# BENCH_EXTRA to the bench flag that drives it.
start_counting() {
    local name=$1 round=$2
    rm -f "$WORK/ctl" && mkfifo "$WORK/ctl"
    perf stat -x, -e raw_syscalls:sys_enter,syscalls:sys_enter_epoll_wait \
        --control "fifo:$WORK/ctl" -D -1 -p "$SERVER_PID" -o "$WORK/$name.$round.perf" 2>/dev/null &
    PERF_PID=$!
    # The bench opens the FIFO without blocking: perf must be reading it first.
    until [ -f "$WORK/$name.$round.perf" ]; do sleep 0.05; done
    BENCH_EXTRA=(--window-fifo "$WORK/ctl")
}

stop_perf() {
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
}

# Adds the counts per message to the bench's JSON.
stop_counting() {
    local name=$1 round=$2 json=$3
    stop_perf
    python3 - "$WORK/$name.$round.perf" "$json" <<'PY'
import json, sys
counts = {}
for line in open(sys.argv[1]):
    fields = line.strip().split(",")
    if len(fields) > 2 and fields[0].isdigit():
        counts[fields[2]] = int(fields[0])
run = json.loads(sys.argv[2])
run["server_syscalls_per_msg"] = counts["raw_syscalls:sys_enter"] / run["msgs"]
run["server_waits_per_msg"] = counts["syscalls:sys_enter_epoll_wait"] / run["msgs"]
print(json.dumps(run, separators=(",", ":")))
PY
}

# SYNs the kernel dropped because an accept queue was full, machine-wide
# (Linux; empty elsewhere).
listen_overflows() {
    awk '/^TcpExt:/ { if (!n) { n = split($0, k) } else { split($0, v);
        for (i = 1; i <= n; i++) if (k[i] == "ListenOverflows") print v[i] } }' \
        /proc/net/netstat 2>/dev/null || true
}

stop_server() {
    stop_pid "$SERVER_PID"
    SERVER_PID=
}

echo "load: ${LOAD[*]}; $ROUNDS rounds; servers on CPU 0, load generator on CPU 1" >&2
failed=0
for round in $(seq "$ROUNDS"); do
    for entry in "${SERVERS[@]}"; do
        IFS='|' read -r name command flags <<<"$entry"
        if [ -n "${SKIP:-}" ] && [[ $name =~ $SKIP ]]; then
            continue
        fi
        # shellcheck disable=SC2206 # a server's own bench flags split into words
        own=(${flags:-})
        start_server "$name" "$command"
        [ "${SYSCALLS:-0}" = 1 ] && start_counting "$name" "$round"
        log="$WORK/$name.$round.bench.log"
        overflows=$(listen_overflows)
        if json=$(taskset -c 1 "$BIN" bench --target "$SERVER_ADDR" --server-pid "$SERVER_PID" \
            --json "${BENCH_EXTRA[@]}" "${own[@]}" "${LOAD[@]}" 2>"$log"); then
            [ -n "$PERF_PID" ] && json=$(stop_counting "$name" "$round" "$json")
            if [ -n "$overflows" ]; then
                json="${json%\}},\"listen_overflows\":$(($(listen_overflows) - overflows))}"
            fi
            echo "$name $json" >>"$WORK/results"
            echo "round $round $name: $(grep -o '"msgs_per_sec":[0-9.]*' <<<"$json")" >&2
        else
            [ -n "$PERF_PID" ] && stop_perf
            failed=1
            echo "round $round $name: bench failed:" >&2
            grep -v '^bench: .*s measuring\|warmup \|draining' "$log" | tail -5 >&2
        fi
        stop_server
    done
done

python3 benches/compare_table.py "$WORK/results"
CHART=${CHART:-${CARGO_TARGET_DIR:-target}/compare.svg}
if "$OUT/examples/compare_chart" "$WORK/results" "$CHART" "${LOAD[*]}"; then
    echo "compare: chart in $CHART" >&2
fi
exit "$failed"
