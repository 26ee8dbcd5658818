#!/usr/bin/env bash
# User-space instructions per echoed message, which a busy machine does not
# move: each build runs as an echo under cachegrind (no cache simulation),
# pinned to CPU 0, loaded from CPU 1 by this tree's `sockloop bench` at
# 1,000 connections for 2 s and for 6 s; (I6 - I2) / (M6 - M2), so start-up,
# connects, warmup and exit cancel. Rounds interleaved.
#
# Usage: benches/instructions.sh NAME=BINARY [NAME=BINARY...]
#   ROUNDS=3 (default); OUT=dir keeps each run's cachegrind file (default
#   target/instructions); needs valgrind. SERVER_ARGS are added to each
#   server's command line; LOAD replaces the load's flags (default
#   '--conns 1000 --size 64 --mode pingpong'). For TLS, say:
#   SERVER_ARGS='--tls-cert C --tls-key K' LOAD='--conns 100 --size 1024
#   --mode pingpong --tls --ca C'.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --bin sockloop
LOADGEN=${CARGO_TARGET_DIR:-target}/release/sockloop
OUT=${OUT:-${CARGO_TARGET_DIR:-target}/instructions}
ROUNDS=${ROUNDS:-3}
LOAD=${LOAD:---conns 1000 --size 64 --mode pingpong}
mkdir -p "$OUT"
: > "$OUT/raw.txt"

# Prints "instructions messages" for one run of build $2 loaded for $3 seconds.
run_one() {
    local log="$OUT/$1.$3.$4"
    # shellcheck disable=SC2086 # the extra arguments are meant to split into words
    taskset -c 0 valgrind --tool=cachegrind --cache-sim=no --cachegrind-out-file="$log.cg" \
        "$2" echo --listen 127.0.0.1:0 --idle-timeout 0 --write-timeout 0 ${SERVER_ARGS:-} >"$log.out" 2>"$log.err" &
    local server=$! addr=""
    for _ in $(seq 1 300); do
        addr=$(grep -o -m1 'listening on [^ ,]*' "$log.out" | awk '{print $3}') || true
        [ -n "$addr" ] && break
        sleep 0.1
    done
    # shellcheck disable=SC2086 # as above
    taskset -c 1 "$LOADGEN" bench --target "$addr" $LOAD \
        --duration "$3s" --warmup 1s --json >"$log.json" 2>"$log.bench"
    kill -TERM "$server"
    wait "$server" || true
    local instructions messages
    instructions=$(awk '/^summary:/ {print $2}' "$log.cg")
    messages=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["msgs"])' "$log.json")
    echo "$1 $3 $4 $instructions $messages" >>"$OUT/raw.txt"
}

for round in $(seq 1 "$ROUNDS"); do
    for spec in "$@"; do
        run_one "${spec%%=*}" "${spec#*=}" 2 "$round"
        run_one "${spec%%=*}" "${spec#*=}" 6 "$round"
    done
done
python3 - "$OUT/raw.txt" <<'PY'
import collections, statistics, sys
runs = collections.defaultdict(dict)
for line in open(sys.argv[1]):
    name, secs, rnd, instructions, messages = line.split()
    runs[(name, rnd)][secs] = (int(instructions), int(messages))
per_message = collections.defaultdict(list)
for (name, _), r in runs.items():
    (i2, m2), (i6, m6) = r["2"], r["6"]
    per_message[name].append((i6 - i2) / (m6 - m2))
print("| build | instructions per message, each round | median |")
print("|---|---|---:|")
for name, values in per_message.items():
    each = ", ".join(f"{v:.0f}" for v in values)
    print(f"| {name} | {each} | {statistics.median(values):.0f} |")
PY
