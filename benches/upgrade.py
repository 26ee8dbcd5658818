#!/usr/bin/env python3
"""The clients' side of benches/upgrade.sh.

  upgrade.py churn --port P [--conns C] [--seconds D] [--size N]
      a connection churn against an echo server: C connections at a time,
      each connects, sends one N-byte request, reads its N-byte echo and
      closes, and a new one takes its place at once. Prints one JSON line.
  upgrade.py wrk OUTPUT
      the same JSON line from the output of wrk run with upgrade_gap.lua
  upgrade.py table RESULTS [--restarts R]
      a Markdown table, one row per run, from lines of RESULTS of the form
      "load server method round restarts_done <json>"; each count of
      failures is followed by its kinds

The JSON line has: completed (requests answered in full), connect_failed
(connects that were refused, reset or not accepted within --timeout),
request_failed (connected, then reset, closed before the whole reply, a
wrong reply, or no reply within --timeout), gap_ms (the longest time between
two completed requests) and gap_at_s (when that gap ended, from the first
completion), and a breakdown of the failures by kind.

The churn client is one Python process on one epoll loop (non-blocking
sockets, no threads): it records each completion's time from
time.monotonic() as the reply's last byte is read. A failed connect is
retried at once, so a refusing server costs as many failures as the client
can try: the count says how long and how hard clients were turned away, not
how many users were.
"""

import argparse
import errno
import json
import re
import selectors
import socket
import sys
import time


class Slot:
    """One connection at a time: its socket, its request, what came back."""

    def __init__(self):
        self.sock = None
        self.connected = False
        self.deadline = 0.0
        self.request = b""
        self.reply = bytearray()


class Churn:
    def __init__(self, port, size, timeout):
        self.addr = ("127.0.0.1", port)
        self.size = size
        self.timeout = timeout
        self.poller = selectors.DefaultSelector()
        self.serial = 0
        self.completed = 0
        self.failures = {}
        self.first = self.last = None
        self.gap = 0.0
        self.gap_end = 0.0
        self.idle = []

    def fail(self, kind):
        self.failures[kind] = self.failures.get(kind, 0) + 1

    def start(self, slot, now):
        self.serial += 1
        # The request's bytes differ from one request to the next, so a
        # reply meant for another connection would not pass for this one's.
        stamp = b"%d " % self.serial
        slot.request = (stamp * (self.size // len(stamp) + 1))[: self.size]
        slot.reply = bytearray()
        slot.connected = False
        slot.deadline = now + self.timeout
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        slot.sock = sock
        code = sock.connect_ex(self.addr)
        if code not in (0, errno.EINPROGRESS):
            self.end(slot, f"connect: {errno.errorcode.get(code, code)}", now)
            return
        self.poller.register(sock, selectors.EVENT_WRITE, slot)

    def end(self, slot, failure, now):
        """Closes the slot's socket and counts how it ended."""
        if failure is None:
            self.completed += 1
            if self.last is None:
                self.first = now
            elif now - self.last > self.gap:
                self.gap, self.gap_end = now - self.last, now - self.first
            self.last = now
        else:
            self.fail(failure)
        try:
            self.poller.unregister(slot.sock)
        except (KeyError, ValueError):
            pass
        slot.sock.close()
        slot.sock = None
        # Started again by the loop, not from here: a server that refuses
        # at once would make this a recursion.
        self.idle.append(slot)

    def ready(self, slot, now):
        sock = slot.sock
        if not slot.connected:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.end(slot, f"connect: {errno.errorcode.get(code, code)}", now)
                return
            slot.connected = True
            slot.deadline = now + self.timeout
            try:
                # 64 B fits any send buffer: all of it or an error.
                sock.send(slot.request)
            except OSError as e:
                self.end(slot, f"send: {errno.errorcode.get(e.errno, e.errno)}", now)
                return
            self.poller.modify(sock, selectors.EVENT_READ, slot)
            return
        try:
            data = sock.recv(65536)
        except BlockingIOError:
            return
        except OSError as e:
            self.end(slot, f"recv: {errno.errorcode.get(e.errno, e.errno)}", now)
            return
        if not data:
            self.end(slot, "closed before the whole reply", now)
            return
        slot.reply += data
        if len(slot.reply) < self.size:
            return
        self.end(slot, None if slot.reply == slot.request else "wrong reply", now)

    def run(self, conns, seconds):
        now = time.monotonic()
        slots = [Slot() for _ in range(conns)]
        self.idle = list(slots)
        stop = now + seconds
        while now < stop:
            starting, self.idle = self.idle, []
            for slot in starting:
                self.start(slot, now)
            for key, _ in self.poller.select(timeout=0.01):
                self.ready(key.data, time.monotonic())
            now = time.monotonic()
            for slot in slots:
                if slot.sock is not None and now > slot.deadline:
                    kind = "reply" if slot.connected else "connect"
                    self.end(slot, f"{kind}: no answer within {self.timeout}s", now)
        for slot in slots:
            if slot.sock is not None:
                slot.sock.close()

    def result(self):
        connect_failed = sum(n for k, n in self.failures.items() if k.startswith("connect"))
        return {
            "completed": self.completed,
            "connect_failed": connect_failed,
            "request_failed": sum(self.failures.values()) - connect_failed,
            "gap_ms": round(self.gap * 1000, 1),
            "gap_at_s": round(self.gap_end, 3),
            "failures": self.failures,
        }


def parse_wrk(path):
    text = open(path).read()
    done = re.search(r"^\s*(\d+) requests in", text, re.M)
    gap = re.search(r"^gap ([\d.]+) at ([\d.]+) completed (\d+)$", text, re.M)
    if not done or not gap:
        raise SystemExit(f"upgrade.py: no wrk summary or gap line in {path}")
    errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text
    )
    connect, read, write, timeout = (int(n) for n in errors.groups()) if errors else (0,) * 4
    status = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    # wrk connects without blocking and learns of a refusal from its first
    # write: with one write per connection, a write error is a failed
    # connect (refused, or reset before the request could go).
    failures = {"connect: connect": connect, "connect: write": write, "read": read,
                "timeout": timeout, "non-2xx": int(status.group(1)) if status else 0}
    return {
        "completed": int(gap.group(3)),
        "connect_failed": connect + write,
        "request_failed": read + timeout + failures["non-2xx"],
        "gap_ms": float(gap.group(1)),
        "gap_at_s": float(gap.group(2)),
        "failures": {k: n for k, n in failures.items() if n},
    }


def table(path, restarts):
    print("| load | server | restarts | done | failed connects | failed or short requests "
          "| longest gap | requests completed |")
    print("|---|---|---|---|---|---|---|---|")
    for line in open(path):
        load, server, method, round_, done, blob = line.split(" ", 5)
        r = json.loads(blob)
        wanted = "0" if method == "none" else str(restarts)
        print(f"| {load} | {server} | {method} | {done}/{wanted} "
              f"| {with_kinds(r, 'connect_failed', True)} "
              f"| {with_kinds(r, 'request_failed', False)} "
              f"| {r['gap_ms']:.1f} ms (at {r['gap_at_s']:.1f} s) | {r['completed']} |")


def with_kinds(result, total, connects):
    """A failure count, and how many of each kind if there are any."""
    kinds = [(k.removeprefix("connect: "), n) for k, n in sorted(result["failures"].items())
             if n and k.startswith("connect") == connects]
    detail = ", ".join(f"{k} {n}" for k, n in kinds)
    return f"{result[total]}" + (f" ({detail})" if detail else "")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    churn = sub.add_parser("churn")
    churn.add_argument("--port", type=int, required=True)
    churn.add_argument("--conns", type=int, default=50)
    churn.add_argument("--seconds", type=float, default=15)
    churn.add_argument("--size", type=int, default=64)
    churn.add_argument("--timeout", type=float, default=2)
    wrk = sub.add_parser("wrk")
    wrk.add_argument("output")
    tab = sub.add_parser("table")
    tab.add_argument("results")
    tab.add_argument("--restarts", type=int, default=10)
    args = parser.parse_args()
    if args.command == "churn":
        client = Churn(args.port, args.size, args.timeout)
        client.run(args.conns, args.seconds)
        print(json.dumps(client.result()))
    elif args.command == "wrk":
        print(json.dumps(parse_wrk(args.output)))
    else:
        table(args.results, args.restarts)


if __name__ == "__main__":
    sys.exit(main())
