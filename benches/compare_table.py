#!/usr/bin/env python3
"""The table of benches/compare.sh: medians (min-max) per server over the
rounds, and ratios of the medians to tokio current_thread (and, for the
server's cost per message, to the raw epoll floor).

Input lines: `NAME JSON`, one per run, JSON as printed by `sockloop bench --json`,
plus `server_syscalls_per_msg` and `server_waits_per_msg` when counted.
"""
import json
import statistics
import sys

TOKIO = ("tokio_current_thread", "vs tokio ct")
FLOOR = ("epoll_floor", "vs floor")
# (JSON field, column heading, digits, ratios to whom)
COLUMNS = [
    ("msgs_per_sec", "msgs/s", 0, [TOKIO]),
    ("p99_us", "p99 µs", 1, [TOKIO]),
    ("server_cpu_us_per_msg", "server CPU µs/msg", 2, [TOKIO, FLOOR]),
    ("server_syscalls_per_msg", "server syscalls/msg", 3, [TOKIO, FLOOR]),
    ("server_waits_per_msg", "of which epoll_wait", 3, []),
]


def main(path):
    runs = {}
    with open(path) as f:
        for line in f:
            name, _, text = line.partition(" ")
            runs.setdefault(name, []).append(json.loads(text))
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
