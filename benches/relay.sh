#!/usr/bin/env bash
# Relay throughput and CPU, copy path against --splice, side by side in one run.
#
# iperf3 (an independent client and server) streams through `sockloop relay`;
# the relay is pinned to CPU 0, iperf3 to CPU 1. For each round and mode we
# record iperf3's received Gbit/s and the relay's CPU seconds (utime+stime
# from /proc/PID/stat) per GB relayed. Rounds interleave the modes (copy,
# splice, copy, ...) so machine noise hits both alike.
#
# Usage: benches/relay.sh [ROUNDS] [SECONDS] [STREAMS]   (needs iperf3, taskset)
#   SOCKLOOP=path runs another build of the relay (an older one, say).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
SECONDS_PER_RUN=${2:-5}
STREAMS=${3:-1}
IPERF_PORT=5299

cargo build --release --quiet
BIN=${SOCKLOOP:-target/release/sockloop}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)

results=$(mktemp)
echo "mode round gbit_per_s relay_cpu_s_per_gb"
for round in $(seq 1 "$ROUNDS"); do
  for mode in copy splice; do
    flags=()
    [[ $mode == splice ]] && flags=(--splice)
    out=$(mktemp)
    taskset -c 0 "$BIN" relay --listen 127.0.0.1:0 --upstream "127.0.0.1:$IPERF_PORT" "${flags[@]}" >"$out" 2>/dev/null &
    relay=$!
    pids+=($relay)
    until grep -q listening "$out"; do sleep 0.05; done
    port=$(sed 's/.*://' "$out")
    taskset -c 1 iperf3 -s -p "$IPERF_PORT" -1 >/dev/null 2>&1 &
    pids+=($!)
    sleep 0.2
    before=$(cpu_ticks "$relay")
    json=$(taskset -c 1 iperf3 -c 127.0.0.1 -p "$port" -t "$SECONDS_PER_RUN" -P "$STREAMS" -J)
    after=$(cpu_ticks "$relay")
    kill "$relay"; wait "$relay" 2>/dev/null || true
    rm -f "$out"
    python3 - "$mode" "$round" "$before" "$after" "$hz" <<PY
import json, sys
mode, rnd, before, after, hz = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
r = json.loads('''$json''')["end"]["sum_received"]
gb = r["bytes"] / 1e9
print(f"{mode} {rnd} {r['bits_per_second'] / 1e9:.2f} {(after - before) / hz / gb:.3f}")
PY
  done
done | tee "$results"
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l[0] in "cs"]
def col(mode, i):
    return [float(r[i]) for r in rows if r[0] == mode]
print("\nmode    Gbit/s median (min-max)   relay CPU s/GB median (min-max)")
for mode in ("copy", "splice"):
    g, c = col(mode, 2), col(mode, 3)
    print(f"{mode:7} {statistics.median(g):6.2f} ({min(g):.2f}-{max(g):.2f})        "
          f"{statistics.median(c):6.3f} ({min(c):.3f}-{max(c):.3f})")
g = statistics.median(col("splice", 2)) / statistics.median(col("copy", 2))
c = statistics.median(col("splice", 3)) / statistics.median(col("copy", 3))
print(f"splice/copy: throughput {g:.2f}x, CPU per GB {c:.2f}x")
PY
rm -f "$results"
