#!/usr/bin/env python3
"""Reads the clients' output for benches/relay_peers.sh and prints its tables.

  relay_peers.py parse KIND LOAD PROXY ROUND OUTPUT CPU_TICKS HZ SYSCALLS [N]
      one JSON line for one run: what the client (KIND: redis, wrk or
      iperf; N: redis-benchmark's -n) reported (requests or bytes,
      throughput, p50 and p99) and the proxy's CPU and syscalls (empty:
      not counted) over it
  relay_peers.py table RESULTS [RESULTS ...]
      per load, medians (min-max) over the rounds, and ratios to HAProxy;
      several results files (KEEP=dir of runs of the same builds) pool
      their rounds

Clients: redis-benchmark --csv (each command's rps, p50 and p99; requests
are -n per command), wrk --latency (requests, Requests/sec, the 50% and 99%
lines, socket errors and non-2xx answers), iperf3 -J (bytes and bits per
second the server received).
"""
import csv
import json
import re
import statistics
import sys

BASE = "haproxy"


def parse_redis(text, n_per_command):
    rows = [r for r in csv.reader(text.splitlines()) if r and r[0] != "test"]
    if not rows:
        raise ValueError("no CSV rows from redis-benchmark")
    seconds = sum(n_per_command / float(r[1]) for r in rows)
    requests = n_per_command * len(rows)
    return {
        "requests": requests,
        "seconds": seconds,
        "rate": requests / seconds,
        # The worse of the commands' figures (SET, GET).
        "p50_ms": max(float(r[4]) for r in rows),
        "p99_ms": max(float(r[6]) for r in rows),
        "errors": 0,
    }


def wrk_time_ms(text):
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def parse_wrk(text):
    requests, seconds = re.search(r"(\d+) requests in ([\d.]+)(ms|s)", text).group(1, 2)
    unit = re.search(r"\d+ requests in [\d.]+(ms|s)", text).group(1)
    seconds = float(seconds) / (1e3 if unit == "ms" else 1)
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", text))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    return {
        "requests": int(requests),
        "seconds": seconds,
        "rate": float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1)),
        "p50_ms": wrk_time_ms(re.search(r"^\s+50%\s+(\S+)", text, re.M).group(1)),
        "p99_ms": wrk_time_ms(re.search(r"^\s+99%\s+(\S+)", text, re.M).group(1)),
        "errors": errors + (int(non2xx.group(1)) if non2xx else 0),
    }


def parse_iperf(text):
    run = json.loads(text)
    if "error" in run:
        raise ValueError(run["error"])
    received = run["end"]["sum_received"]
    return {
        "bytes": received["bytes"],
        "seconds": received["seconds"],
        "rate": received["bits_per_second"] / 1e9,
        "p50_ms": None,
        "p99_ms": None,
        "errors": 0,
    }


def parse(kind, load, proxy, rnd, path, ticks, hz, syscalls, n=None):
    text = open(path).read()
    if kind == "redis":
        run = parse_redis(text, int(n))
    elif kind == "wrk":
        run = parse_wrk(text)
    else:
        run = parse_iperf(text)
    run.update(proxy=proxy, load=load, round=int(rnd), cpu_s=int(ticks) / int(hz))
    if "requests" in run:
        run["cpu_s_per_m"] = run["cpu_s"] / (run["requests"] / 1e6)
        if syscalls:
            run["syscalls_per_req"] = int(syscalls) / run["requests"]
    else:
        gb = run["bytes"] / 1e9
        run["cpu_s_per_gb"] = run["cpu_s"] / gb
        if syscalls:
            run["syscalls_per_gb"] = int(syscalls) / gb
            run["kb_per_syscall"] = run["bytes"] / int(syscalls) / 1e3
    print(json.dumps(run, separators=(",", ":")))


# (field, heading, digits, ratio to HAProxy)
REQUEST_COLUMNS = [
    ("rate", "requests/s", 0, True),
    ("p50_ms", "p50 ms", 2, True),
    ("p99_ms", "p99 ms", 2, True),
    ("cpu_s_per_m", "proxy CPU s per M requests", 2, True),
    ("syscalls_per_req", "proxy syscalls per request", 2, True),
]
BULK_COLUMNS = [
    ("rate", "Gbit/s", 2, True),
    ("cpu_s_per_gb", "proxy CPU s per GB", 3, True),
    ("syscalls_per_gb", "proxy syscalls per GB", 0, True),
    ("kb_per_syscall", "KB per syscall", 1, False),
]


def fmt(v, digits):
    return f"{v:,.{digits}f}"


def table(paths):
    runs = [json.loads(line) for path in paths for line in open(path) if line.startswith("{")]
    loads = list(dict.fromkeys(r["load"] for r in runs))
    for load in loads:
        these = [r for r in runs if r["load"] == load]
        proxies = list(dict.fromkeys(r["proxy"] for r in these))
        bulk = "bytes" in these[0]
        columns = [c for c in (BULK_COLUMNS if bulk else REQUEST_COLUMNS)
                   if any(r.get(c[0]) is not None for r in these)]

        def values(proxy, field):
            return [r[field] for r in these if r["proxy"] == proxy and r.get(field) is not None]

        def median(proxy, field):
            vals = values(proxy, field)
            return statistics.median(vals) if vals else None

        print(f"\n{load}\n")
        head = ["proxy", "runs"]
        for _, title, _, ratio in columns:
            head += [title + " median (min–max)"] + (["vs HAProxy"] if ratio else [])
        print("| " + " | ".join(head) + " |")
        print("|---|---:|" + "".join("---:|" * (2 if c[3] else 1) for c in columns))
        for proxy in proxies:
            n = len([r for r in these if r["proxy"] == proxy])
            errors = sum(r["errors"] for r in these if r["proxy"] == proxy)
            row = [proxy + (f" ({errors} errors)" if errors else ""), str(n)]
            for field, _, digits, ratio in columns:
                vals, med = values(proxy, field), median(proxy, field)
                if med is None:
                    row += ["–"] * (2 if ratio else 1)
                    continue
                row.append(f"{fmt(med, digits)} ({fmt(min(vals), digits)}–{fmt(max(vals), digits)})")
                if ratio:
                    base = median(BASE, field)
                    row.append(f"{med / base:.2f}×" if base else "–")
            print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "parse":
        parse(*sys.argv[2:])
    else:
        table(sys.argv[2:])
