#!/usr/bin/env python3
"""User-space memory per idle connection of an echo server.

Usage: benches/idle_memory.py N[,N...] [--rounds R] -- SERVER-COMMAND...

The command must accept an address as its last argument, or take --listen
before it: pass the command whole, with 127.0.0.1:0 where the address goes.
For each count N (0 is allowed: the server's RSS alone) and each round, it
starts the server afresh, opens N connections from this process, sends one
byte on each and reads it back (so every connection has seen traffic), waits
a second, and reports the server's VmRSS and its growth divided by N. Kernel
socket memory is not in RSS and not counted. With several rounds, the last
lines give the median (min-max) per count.

This process holds one descriptor per connection: N is bounded by its open
file limit (20,000 here: 19,000 connections fit).
"""
import resource
import socket
import statistics
import subprocess
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def measure(command, n):
    """(RSS before, RSS after) of one server with n idle connections."""
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    conns = []
    try:
        line = server.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        time.sleep(0.3)
        before = rss(server.pid)
        for _ in range(n):
            conns.append(socket.create_connection(("127.0.0.1", port)))
        for c in conns:
            c.sendall(b"x")
        for c in conns:
            assert c.recv(1) == b"x"
        time.sleep(1.0)
        return before, rss(server.pid)
    finally:
        for c in conns:
            c.close()
        server.kill()
        server.wait()


def main():
    args = sys.argv[1:sys.argv.index("--")]
    command = sys.argv[sys.argv.index("--") + 1:]
    counts = [int(n) for n in args[0].split(",")]
    rounds = int(args[args.index("--rounds") + 1]) if "--rounds" in args else 1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if max(counts) + 50 > hard:
        sys.exit(f"{max(counts)} connections need more descriptors than the limit {hard}")
    results = {n: [] for n in counts}
    for r in range(rounds):
        for n in counts:
            before, after = measure(command, n)
            per = (after - before) / n if n else 0.0
            results[n].append((after, per))
            print(f"round {r + 1}: {n} connections: RSS {before / 1e6:.2f} -> {after / 1e6:.2f} MB"
                  + (f", {per:.0f} B per connection" if n else ""), flush=True)
    if rounds > 1:
        for n, rs in results.items():
            mb = [a / 1e6 for a, _ in rs]
            per = [p for _, p in rs]
            print(f"{n} connections: RSS median {statistics.median(mb):.2f} MB "
                  f"({min(mb):.2f}-{max(mb):.2f})"
                  + (f", {statistics.median(per):.0f} B per connection "
                     f"({min(per):.0f}-{max(per):.0f})" if n else ""))


if __name__ == "__main__":
    main()
