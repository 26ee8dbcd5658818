#!/usr/bin/env python3
"""The table of benches/compare.sh: medians (min-max) per server over the
rounds, and ratios of the medians to tokio current_thread or to $BASE (and, for the
server's cost per message, to the raw epoll floor).

Input lines: `NAME JSON`, one per run, JSON as printed by `sockloop bench --json`,
plus `server_syscalls_per_msg` and `server_waits_per_msg` when counted, and
`listen_overflows` (the kernel's count of SYNs dropped for a full accept
queue, machine-wide, over the run) where Linux says.

With `--connect-rate` (an accept storm, say) a second table shows the
connecting phase: connections accepted and served once per second (idle
mode: each connection's first echo), connect latency, and the server's CPU
per connection over that phase.
"""
import json
import os
import statistics
import sys

# BASE=name compares with another server (the TLS runs: tokio_rustls).
BASE = os.environ.get("BASE", "tokio_current_thread")
TOKIO = (BASE, "vs tokio ct" if BASE == "tokio_current_thread" else f"vs {BASE}")
FLOOR = ("epoll_floor", "vs floor")
# (JSON field, column heading, digits, ratios to whom)
COLUMNS = [
    ("msgs_per_sec", "msgs/s", 0, [TOKIO]),
    ("p99_us", "p99 µs", 1, [TOKIO]),
    ("server_cpu_us_per_msg", "server CPU µs/msg", 2, [TOKIO, FLOOR]),
    ("server_syscalls_per_msg", "server syscalls/msg", 3, [TOKIO, FLOOR]),
    ("server_waits_per_msg", "of which epoll_wait", 3, []),
]
CONNECT_COLUMNS = [
    ("served_per_sec", "served conns/s", 0, [TOKIO]),
    ("connects_per_sec", "connects/s", 0, [TOKIO]),
    ("connect_p50_us", "connect p50 µs", 1, []),
    ("connect_p99_us", "connect p99 µs", 1, [TOKIO]),
    ("connect_max_us", "connect max µs", 1, []),
    ("served_p99_us", "first echo p99 µs", 1, [TOKIO]),
    ("connect_server_cpu_us_per_conn", "server CPU µs/conn", 1, [TOKIO]),
    ("listen_overflows", "SYNs dropped (queue full)", 0, []),
]


def main(path):
    runs = {}
    with open(path) as f:
        for line in f:
            name, _, text = line.partition(" ")
            runs.setdefault(name, []).append(json.loads(text))
    table(runs, COLUMNS)
    if any(r.get("connect_rate") for rs in runs.values() for r in rs):
        print()
        table(runs, CONNECT_COLUMNS)


def table(runs, COLUMNS):
    values = {
        name: {field: [r[field] for r in rs if r.get(field) is not None] for field, *_ in COLUMNS}
        for name, rs in runs.items()
    }
    medians = {
        name: {field: statistics.median(vals) if vals else None for field, vals in fields.items()}
        for name, fields in values.items()
    }
    # Columns no run measured (syscalls, unless counted) are left out.
    columns = [c for c in COLUMNS if any(v[c[0]] for v in values.values())]
    head = ["server", "runs"]
    for _, title, _, bases in columns:
        head += [title + " median (min–max)"] + [heading for _, heading in bases]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|" + "".join("---:|" * (1 + len(c[3])) for c in columns))
    for name, rs in runs.items():
        row = [name, str(len(rs))]
        for field, _, digits, bases in columns:
            vals = values[name][field]
            med = medians[name][field]
            if med is None:
                row += ["–"] * (1 + len(bases))
                continue
            row.append(f"{med:,.{digits}f} ({min(vals):,.{digits}f}–{max(vals):,.{digits}f})")
            for base_name, _ in bases:
                base = medians.get(base_name, {}).get(field)
                row.append(f"{med / base:.2f}×" if base else "–")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
