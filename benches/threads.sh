#!/usr/bin/env bash
# One reactor or two: sockloop echo `--threads 2 --pin`, `--threads 2`
# and `--threads 1`,
# and tokio's multi_thread runtime with 2 workers, under one `sockloop bench`
# load, ROUNDS rounds interleaved (A B C, A B C, ...). Prints a table of
# medians (min-max): echoes per second, server CPU per echo, p99, and for
# sockloop each reactor's share of the connections (from its exit log).
#
# Usage: benches/threads.sh [sockloop bench args...]
#   default load: --conns 1000 --size 64 --mode pingpong --duration 5s --warmup 1s
#   ROUNDS=5 (default); KEEP=dir keeps each run's JSON and server log there.
#
# Nothing is pinned but the reactors (--pin): two reactors need both CPUs of
# a 2-core machine, so the load generator shares them with the server. Server
# CPU per echo comes from /proc/PID/stat at the edges of the measured window
# (--server-pid), all threads of the server counted.
set -euo pipefail
cd "$(dirname "$0")/.."
. benches/lib.sh

ROUNDS=${ROUNDS:-5}
if [ $# -eq 0 ]; then
    set -- --conns 1000 --size 64 --mode pingpong --duration 5s --warmup 1s
fi
LOAD=("$@")

cargo build --release --quiet --bin sockloop --example echo_tokio
OUT=${CARGO_TARGET_DIR:-target}/release
BIN=$OUT/sockloop
ECHO="$BIN echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0"

# name|command; every server prints `listening on IP:PORT` first on stdout.
SERVERS=(
    "sockloop_threads2_pin|$ECHO --threads 2 --pin"
    "sockloop_threads2|$ECHO --threads 2"
    "sockloop_threads1|$ECHO --threads 1"
    "tokio_multi_thread_2|env TOKIO_WORKER_THREADS=2 $OUT/examples/echo_tokio 127.0.0.1:0 --flavor multi_thread"
)

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    stop_pid "$SERVER_PID"
    drop_work
}
trap cleanup EXIT

echo "load: ${LOAD[*]}; $ROUNDS rounds; $(nproc) CPUs shared by server and load generator" >&2
failed=0
for round in $(seq "$ROUNDS"); do
    for entry in "${SERVERS[@]}"; do
        name=${entry%%|*}
        log="$WORK/$name.$round.server.log"
        rm -f "$WORK/stdout"
        # shellcheck disable=SC2086 # the command is meant to split into words
        ${entry#*|} >"$WORK/stdout" 2>"$log" &
        SERVER_PID=$!
        addr=
        for _ in $(seq 100); do
            addr=$(sed -n 's/^listening on //p' "$WORK/stdout" 2>/dev/null || true)
            [ -n "$addr" ] && break
            sleep 0.1
        done
        [ -n "$addr" ] || { echo "threads: $name did not start" >&2; cat "$log" >&2; exit 1; }
        if json=$("$BIN" bench --target "$addr" --server-pid "$SERVER_PID" --json "${LOAD[@]}" \
            2>"$WORK/$name.$round.bench.log"); then
            ok=1
        else
            ok=0
            failed=1
            echo "round $round $name: bench failed" >&2
        fi
        # SIGTERM: sockloop drains and logs each reactor's share of the connections.
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
        if [ "$ok" = 1 ]; then
            shares=$(sed -n 's/.*accepted per reactor: \([0-9/]*\).*/\1/p' "$log")
            echo "$name ${shares:--} $json" >>"$WORK/results"
            echo "round $round $name: $(grep -o '"msgs_per_sec":[0-9.]*' <<<"$json") accepted ${shares:--}" >&2
        fi
    done
done

python3 - "$WORK/results" <<'PY'
import json, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    name, shares, blob = line.split(" ", 2)
    runs.setdefault(name, []).append((shares, json.loads(blob)))

def spread(values, fmt):
    return f"{fmt.format(statistics.median(values))} ({fmt.format(min(values))}–{fmt.format(max(values))})"

print("| server | echoes/s | server CPU µs per echo | p99 ms | connections per reactor |")
print("|---|---|---|---|---|")
for name, rows in runs.items():
    rate = [r["msgs_per_sec"] for _, r in rows]
    cpu = [r["server_cpu_us_per_msg"] for _, r in rows if r["server_cpu_us_per_msg"] is not None]
    p99 = [r["p99_us"] / 1000 for _, r in rows]
    shares = ", ".join(s for s, _ in rows if s != "-") or "–"
    cpu_text = spread(cpu, "{:.2f}") if cpu else "n/a"
    print(f"| {name} | {spread(rate, '{:,.0f}')} | {cpu_text} | {spread(p99, '{:.2f}')} | {shares} |")
PY
exit "$failed"
