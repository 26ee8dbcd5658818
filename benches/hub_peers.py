#!/usr/bin/env python3
"""A pub/sub load for benches/hub_peers.sh: one publisher, S subscribers,
64-byte messages, every message checked.

  hub_peers.py run --protocol lines|redis --port P --subscribers S
                   [--seconds D] [--server-pid PID]
      prints one JSON line: protocol, subscribers, published, delivered,
      seconds, delivered_per_sec, server_cpu_s, cpu_s_per_m, errors
  hub_peers.py table RESULTS
      medians (min-max) over the rounds, per subscriber count, and ratios
      to Redis

Protocols: `lines` is `sockloop hub --framing lines` (a line goes to every
other client: the subscribers are clients that never send); `redis` is
Redis pub/sub (each subscriber SUBSCRIBEs to one channel, the publisher
PUBLISHes to it and checks that each PUBLISH reached S subscribers).

Message i carries its number and filler that depends on it, so the bytes
each subscriber must receive are known in advance: the same stream for
every subscriber. Each subscriber's bytes are compared with that stream as
they arrive, so a message lost, repeated, reordered, cut or corrupted is
caught, and at the end every subscriber must have every message.

The publisher sends in blocks of 1,024 messages, and never more than eight
blocks ahead of the slowest subscriber, so that neither server ever holds
more than about 540 KB (lines; Redis about 800 KB) for one subscriber, in
its buffers and the kernel's together (the hub's high watermark is 1 MiB,
Redis's pub/sub client output limit 32 MB). Four blocks were too few to keep
the pipe full: the hub delivered about a third less. Message 0 is a barrier: the
measured window opens once every subscriber has it (Redis: and the
publisher has heard that it reached all S), runs for D seconds of
publishing, and closes once every subscriber has every message sent. The
server's CPU time (utime+stime, /proc/PID/stat) is read at the window's
edges.
"""
import argparse
import json
import os
import selectors
import socket
import statistics
import sys
import time

SIZE = 64
BLOCK = 1024
WINDOW_BLOCKS = 8
FILL = bytes(range(33, 127))  # printable ASCII: no line ends in a payload
STALL = 10.0  # seconds without progress before the run is called failed


def payload(i):
    k = i % 46
    return b"%016d" % i + FILL[k:k + SIZE - 16]


class Protocol:
    def __init__(self, name, subscribers):
        self.name = name
        if name == "lines":
            self.pub_head, self.pub_tail = b"", b"\n"
            self.sub_head, self.sub_tail = b"", b"\n"
            self.subscribe = b""
            self.subscribed = b""
            self.reply = b""
        else:
            self.pub_head = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n" % SIZE
            self.sub_head = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$%d\r\n" % SIZE
            self.pub_tail = self.sub_tail = b"\r\n"
            self.subscribe = b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n"
            self.subscribed = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n"
            self.reply = b":%d\r\n" % subscribers
        self.pub_len = len(self.pub_head) + SIZE + len(self.pub_tail)
        self.sub_len = len(self.sub_head) + SIZE + len(self.sub_tail)


class Blocks:
    """The publisher's and the subscribers' streams, a block at a time."""

    def __init__(self, proto):
        self.proto = proto
        self.cache = {}

    def get(self, k):
        if k not in self.cache:
            p = self.proto
            loads = [payload(i) for i in range(k * BLOCK, (k + 1) * BLOCK)]
            self.cache[k] = (
                b"".join(p.pub_head + m + p.pub_tail for m in loads),
                b"".join(p.sub_head + m + p.sub_tail for m in loads),
            )
        return self.cache[k]

    def forget_below(self, k):
        for old in [b for b in self.cache if b < k]:
            del self.cache[old]


class Subscriber:
    def __init__(self, sock, proto):
        self.sock = sock
        self.prefix = proto.subscribed  # expected before the messages
        self.got = 0  # bytes of messages received and checked

    def messages(self, sub_len):
        return self.got // sub_len


def server_cpu(pid):
    if pid is None:
        return None
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def run(args):
    proto = Protocol(args.protocol, args.subscribers)
    blocks = Blocks(proto)
    subs = [Subscriber(connect(args.port), proto) for _ in range(args.subscribers)]
    for s in subs:
        if proto.subscribe:
            s.sock.sendall(proto.subscribe)
        s.sock.setblocking(False)
    # Redis: every SUBSCRIBE confirmed before anything is published, or a
    # subscriber would miss the first messages.
    if proto.subscribed:
        for s in subs:
            s.sock.setblocking(True)
            s.sock.settimeout(STALL)
            want = len(s.prefix)
            got = b""
            while len(got) < want:
                chunk = s.sock.recv(want - len(got))
                if not chunk:
                    raise RuntimeError("subscriber closed while subscribing")
                got += chunk
            if got != s.prefix:
                raise RuntimeError(f"unexpected answer to SUBSCRIBE: {got!r}")
            s.sock.setblocking(False)
    pub = connect(args.port)
    pub.setblocking(False)

    sel = selectors.DefaultSelector()
    for s in subs:
        sel.register(s.sock, selectors.EVENT_READ, s)
    sel.register(pub, selectors.EVENT_READ, None)

    L, P = proto.sub_len, proto.pub_len
    sent = 0  # bytes of the publisher's stream sent
    end = None  # messages to send in all, once publishing stops
    replies = b""  # Redis: unparsed replies to PUBLISH
    replied = 0
    started = window_start = cpu_start = None
    deadline = None
    last_progress = time.monotonic()
    writing = False
    buf = bytearray(1 << 18)

    def min_messages():
        return min(s.got for s in subs) // L

    def fail(what):
        print(json.dumps({"protocol": args.protocol, "subscribers": args.subscribers,
                          "errors": 1, "error": what}))
        sys.exit(1)

    while True:
        now = time.monotonic()
        slowest = min_messages()
        # The window opens once message 0 is everywhere (Redis: and confirmed).
        if window_start is None and slowest >= 1 and (not proto.reply or replied >= 1):
            window_start, cpu_start = now, server_cpu(args.server_pid)
            deadline = now + args.seconds
        if deadline is not None and end is None and now >= deadline:
            end = -(-sent // P)  # finish the message being sent
        if end is not None and slowest >= end and (not proto.reply or replied >= end):
            break
        # Publish: message 0 alone, then whole blocks within the window.
        limit = 1 if window_start is None else (slowest // BLOCK + WINDOW_BLOCKS) * BLOCK
        if end is not None:
            limit = end
        want_write = sent < limit * P
        if want_write:
            k, within = divmod(sent, BLOCK * P)
            chunk = blocks.get(k)[0][within:min(BLOCK * P, limit * P - k * BLOCK * P)]
            try:
                n = pub.send(chunk)
                sent += n
                last_progress = now
                continue  # more may fit at once
            except BlockingIOError:
                pass
        if want_write != writing:
            writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if writing else 0)
            sel.modify(pub, events, None)
        ready = sel.select(timeout=0.05)
        if not ready and time.monotonic() - last_progress > STALL:
            fail(f"no progress for {STALL:.0f} s: slowest subscriber at message {slowest}, "
                 f"{sent // P} sent")
        for key, mask in ready:
            s = key.data
            if s is None:  # the publisher: Redis replies, or nothing
                if not mask & selectors.EVENT_READ:
                    continue
                try:
                    data = pub.recv(1 << 16)
                except BlockingIOError:
                    continue
                if not data:
                    fail("server closed the publisher")
                if not proto.reply:
                    fail(f"the publisher was sent {len(data)} bytes")
                replies += data
                n = len(replies) // len(proto.reply)
                if replies[:n * len(proto.reply)] != proto.reply * n:
                    fail(f"unexpected reply to PUBLISH near {replies[:40]!r} "
                         f"(want {proto.reply!r}: every subscriber)")
                replies = replies[n * len(proto.reply):]
                replied += n
                last_progress = time.monotonic()
                continue
            try:
                # Into one buffer: a fresh 256 KiB object per read costs page faults.
                n = s.sock.recv_into(buf)
            except BlockingIOError:
                continue
            if n == 0:
                fail(f"server closed a subscriber after {s.got // L} messages")
            pos, done = s.got, 0
            while done < n:
                k, within = divmod(pos, BLOCK * L)
                expected = blocks.get(k)[1]
                take = min(n - done, BLOCK * L - within)
                # (A bytearray slice compares at memcmp speed; a memoryview
                # byte by byte.)
                if buf[done:done + take] != expected[within:within + take]:
                    fail(f"subscriber got a wrong byte within message {pos // L}..{(pos + take) // L}")
                pos += take
                done += take
            if pos // L > sent // P + 1:
                fail("a subscriber got more messages than were published")
            s.got = pos
            last_progress = time.monotonic()
        blocks.forget_below(min_messages() // BLOCK)

    finish = time.monotonic()
    cpu_end = server_cpu(args.server_pid)
    for s in subs:
        s.sock.close()
    pub.close()
    seconds = finish - window_start
    delivered = (end - 1) * args.subscribers  # message 0 opened the window
    cpu = None if cpu_start is None else cpu_end - cpu_start
    print(json.dumps({
        "protocol": args.protocol,
        "subscribers": args.subscribers,
        "published": end - 1,
        "delivered": delivered,
        "seconds": round(seconds, 3),
        "delivered_per_sec": delivered / seconds,
        "server_cpu_s": cpu,
        "cpu_s_per_m": None if cpu is None else cpu / (delivered / 1e6),
        "errors": 0,
    }))


def table(path):
    runs = [json.loads(line.split(" ", 1)[1]) | {"server": line.split(" ", 1)[0]}
            for line in open(path) if " {" in line]
    for subscribers in sorted({r["subscribers"] for r in runs}):
        these = [r for r in runs if r["subscribers"] == subscribers]
        servers = list(dict.fromkeys(r["server"] for r in these))

        def vals(server, field):
            return [r[field] for r in these if r["server"] == server and r.get(field) is not None]

        def med(server, field):
            v = vals(server, field)
            return statistics.median(v) if v else None

        print(f"\n{subscribers} subscribers\n")
        print("| server | runs | messages delivered/s median (min–max) | vs Redis "
              "| server CPU s per M messages median (min–max) | vs Redis |")
        print("|---|---:|---:|---:|---:|---:|")
        for server in servers:
            row = [server, str(len(vals(server, "delivered")))]
            for field, digits in (("delivered_per_sec", 0), ("cpu_s_per_m", 3)):
                v, m, base = vals(server, field), med(server, field), med("redis", field)
                if m is None:
                    row += ["–", "–"]
                    continue
                row.append(f"{m:,.{digits}f} ({min(v):,.{digits}f}–{max(v):,.{digits}f})")
                row.append(f"{m / base:.2f}×" if base else "–")
            print("| " + " | ".join(row) + " |")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        return table(sys.argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--protocol", choices=["lines", "redis"], required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--server-pid", type=int)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
