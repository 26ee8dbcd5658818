#!/usr/bin/env python3
"""User-space memory per idle connection of an echo server.

Usage: benches/idle_memory.py N -- SERVER-COMMAND... (it must accept an address
as its last argument, or take --listen before it: pass the command whole, with
127.0.0.1:0 where the address goes). Starts the server, opens N connections,
sends one byte on each and reads it back (so every connection has seen
traffic), waits a second, and reports the growth of the server's VmRSS
divided by N. Kernel socket memory is not in RSS and not counted.
"""
import socket
import subprocess
import sys
import time


def rss(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main():
    n = int(sys.argv[1])
    command = sys.argv[sys.argv.index("--") + 1:]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = server.stdout.readline()
        port = int(line.rsplit(":", 1)[1])
        time.sleep(0.3)
        before = rss(server.pid)
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        for c in conns:
            c.sendall(b"x")
        for c in conns:
            assert c.recv(1) == b"x"
        time.sleep(1.0)
        after = rss(server.pid)
        print(f"{(after - before) / n:.0f} B per connection "
              f"(RSS {before / 1e6:.1f} -> {after / 1e6:.1f} MB, {n} connections)")
        for c in conns:
            c.close()
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
