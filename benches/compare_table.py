#!/usr/bin/env python3
"""The table of benches/compare.sh: medians (min-max) per server over the
rounds, and ratios of the medians to tokio current_thread.

Input lines: `NAME JSON`, one per run, JSON as printed by `sockloop bench --json`.
"""
import json
import statistics
import sys

BASE = "tokio_current_thread"
# (JSON field, column heading, digits)
COLUMNS = [
    ("msgs_per_sec", "msgs/s", 0),
    ("p99_us", "p99 µs", 1),
    ("server_cpu_us_per_msg", "server CPU µs/msg", 2),
]


def main(path):
    runs = {}
    with open(path) as f:
        for line in f:
            name, _, text = line.partition(" ")
            runs.setdefault(name, []).append(json.loads(text))
    medians = {
        name: {
            field: statistics.median(vals) if (vals := [r[field] for r in rs if r[field] is not None]) else None
            for field, _, _ in COLUMNS
        }
        for name, rs in runs.items()
    }
    head = ["server", "runs"]
    for _, title, _ in COLUMNS:
        head += [title + " median (min–max)", "vs tokio ct"]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|" + "---:|" * (2 * len(COLUMNS)))
    for name, rs in runs.items():
        row = [name, str(len(rs))]
        for field, _, digits in COLUMNS:
            vals = [r[field] for r in rs if r[field] is not None]
            if not vals:
                row += ["–", "–"]
                continue
            med = medians[name][field]
            row.append(f"{med:,.{digits}f} ({min(vals):,.{digits}f}–{max(vals):,.{digits}f})")
            base = medians.get(BASE, {}).get(field)
            row.append(f"{med / base:.2f}×" if base else "–")
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
