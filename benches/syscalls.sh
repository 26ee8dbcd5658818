#!/usr/bin/env bash
# Server syscalls per round trip: runs `sockloop bench` pingpong 64 B, depth 1
# against `sockloop echo`, then stops the server with SIGTERM and reads the
# counters it logs on exit (waits, reads, writes, interest changes).
#
# Usage: benches/syscalls.sh [CONNS...]   (default: 1 100 1000)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sockloop
BIN=target/release/sockloop
WORK=$(mktemp -d)
SERVER=
cleanup() { [ -n "$SERVER" ] && kill "$SERVER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT

[ $# -eq 0 ] && set -- 1 100 1000
echo "conns round_trips waits reads writes interest_changes syscalls_per_round_trip reads_writes_per_round_trip"
for conns in "$@"; do
    taskset -c 0 "$BIN" echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0 \
        >"$WORK/out" 2>"$WORK/err" &
    SERVER=$!
    until grep -q listening "$WORK/out"; do sleep 0.05; done
    addr=$(sed 's/^listening on //' "$WORK/out")
    taskset -c 1 "$BIN" bench --target "$addr" --conns "$conns" --size 64 --mode pingpong \
        --duration 3s --warmup 500ms >/dev/null 2>&1
    kill -TERM "$SERVER"
    wait "$SERVER" || true
    SERVER=
    python3 - "$conns" "$WORK/err" <<'PY'
import re, sys
conns, log = sys.argv[1], open(sys.argv[2]).read()
line = [l for l in log.splitlines() if "stopped:" in l][-1]
num = lambda key: int(re.search(key + r" (\d+)", line).group(1))
trips = num("in") // 64          # every byte the server read was one request of 64 B
waits, reads, writes, ctl = num("waits"), num("reads"), num("writes"), num("interest changes")
print(conns, trips, waits, reads, writes, ctl,
      f"{(waits + reads + writes + ctl) / trips:.3f}", f"{(reads + writes) / trips:.3f}")
PY
done
