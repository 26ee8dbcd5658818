#!/usr/bin/env python3
"""A pub/sub load for benches/hub_peers.sh: one publisher, S subscribers,
64-byte messages, every message checked.

  hub_peers.py run --protocol lines|redis|nats --ports P[,P...] --subscribers S
                   [--seconds D] [--server-pids PID[,PID...]]
                   [--metrics-ports M[,M...] --link-metric NAME]
      prints one JSON line: protocol, subscribers, published, delivered,
      seconds, delivered_per_sec, server_cpu_s (and per PID:
      server_cpu_s_each), cpu_s_per_m, client_cpu_s
      (this process's, over the same window: near `seconds`, the client
      was the limit), pings_answered, errors
  hub_peers.py table RESULTS
      medians (min-max) over the rounds, per subscriber count, and ratios
      to NATS and to Redis

Protocols: `lines` is `sockloop hub --framing lines` (a line goes to every
other client: the subscribers are clients that never send); `redis` is
Redis pub/sub (each subscriber SUBSCRIBEs to one channel, the publisher
PUBLISHes to it and checks that each PUBLISH reached S subscribers); `nats`
is NATS's text protocol (each subscriber SUBs to one subject, the publisher
PUBs to it without subscribing; `PING`s from the server are answered).

With several ports (federated hubs) subscriber i connects to port i mod N
and the publisher to the first. Before publishing, the client scrapes each
hub's --metrics until the hub has accepted its subscribers and reports its
link (--link-metric) up: a subscriber not yet accepted, or a link not yet
subscribed, would miss message 0 and fail the run.

Message i carries its number and filler that depends on it, so the bytes
each subscriber must receive are known in advance: the same stream for
every subscriber. Each subscriber's bytes are compared with that stream as
they arrive, so a message lost, repeated, reordered, cut or corrupted is
caught, and at the end every subscriber must have every message.

The publisher sends in blocks of 1,024 messages, and never more than eight
blocks ahead of the slowest subscriber, so that no server ever holds more
than about 540 KB (lines; Redis about 800 KB, NATS about 670 KB) for one
subscriber, in its buffers and the kernel's together (the hub's high
watermark is 1 MiB, Redis's pub/sub client output limit 32 MB, NATS's
max_pending 64 MB). Four blocks were too few to keep the pipe full: the hub
delivered about a third less. Message 0 is a barrier: the measured window
opens once every subscriber has it (Redis: and the publisher has heard that
it reached all S), runs for D seconds of publishing, and closes once every
subscriber has every message sent. The servers' CPU time (utime+stime,
/proc/PID/stat, summed over the PIDs given) is read at the window's edges.
"""
import argparse
import json
import os
import re
import selectors
import socket
import statistics
import sys
import time
import urllib.request

SIZE = 64
BLOCK = 1024
WINDOW_BLOCKS = 8
FILL = bytes(range(33, 127))  # printable ASCII: no line ends in a payload
STALL = 10.0  # seconds without progress before the run is called failed


class RunFailed(Exception):
    pass


def payload(i):
    k = i % 46
    return b"%016d" % i + FILL[k:k + SIZE - 16]


def read_line(sock):
    """One CRLF-ended line from a blocking socket, not a byte more."""
    line = b""
    while not line.endswith(b"\r\n"):
        peek = sock.recv(4096, socket.MSG_PEEK)
        if not peek:
            raise RunFailed("server closed a connection while greeting it")
        end = peek.find(b"\n")
        line += sock.recv(len(peek) if end < 0 else end + 1)
    return line


class Lines:
    """sockloop hub --framing lines: nothing to say before publishing."""
    name = "lines"
    pub_head, pub_tail = b"", b"\n"
    sub_head, sub_tail = b"", b"\n"
    confirms = False  # the publisher hears that each message was delivered
    pings = 0  # server PINGs answered (NATS)

    def greet_subscribers(self, socks):
        pass

    def greet_publisher(self, sock):
        pass

    def publisher_read(self, data):
        """Takes bytes the publisher read; returns the messages confirmed."""
        raise RunFailed(f"the publisher was sent {len(data)} bytes")

    def control(self, data):
        """The length of a control line at the start of `data`, where a
        message would begin (answered), 0 if one may still be arriving,
        None if there is none."""
        return None

    def take_owed(self):
        """Bytes the publisher owes the server, sent between messages."""
        return b""


class Redis(Lines):
    name = "redis"
    pub_head = b"*3\r\n$7\r\nPUBLISH\r\n$5\r\nbench\r\n$%d\r\n" % SIZE
    sub_head = b"*3\r\n$7\r\nmessage\r\n$5\r\nbench\r\n$%d\r\n" % SIZE
    pub_tail = sub_tail = b"\r\n"
    confirms = True
    SUBSCRIBE = b"*2\r\n$9\r\nSUBSCRIBE\r\n$5\r\nbench\r\n"
    SUBSCRIBED = b"*3\r\n$9\r\nsubscribe\r\n$5\r\nbench\r\n:1\r\n"

    def __init__(self, subscribers):
        self.reply = b":%d\r\n" % subscribers  # PUBLISH reached every subscriber
        self.replies = b""

    def greet_subscribers(self, socks):
        # Every SUBSCRIBE confirmed before anything is published, or a
        # subscriber would miss the first messages.
        for s in socks:
            s.sendall(self.SUBSCRIBE)
        for s in socks:
            got = b""
            while len(got) < len(self.SUBSCRIBED):
                chunk = s.recv(len(self.SUBSCRIBED) - len(got))
                if not chunk:
                    raise RunFailed("subscriber closed while subscribing")
                got += chunk
            if got != self.SUBSCRIBED:
                raise RunFailed(f"unexpected answer to SUBSCRIBE: {got!r}")

    def publisher_read(self, data):
        self.replies += data
        size = len(self.reply)
        n = len(self.replies) // size
        if self.replies[:n * size] != self.reply * n:
            raise RunFailed(f"unexpected reply to PUBLISH near {self.replies[:40]!r} "
                            f"(want {self.reply!r}: every subscriber)")
        self.replies = self.replies[n * size:]
        return n


class Nats(Lines):
    name = "nats"
    pub_head = b"PUB bench %d\r\n" % SIZE
    sub_head = b"MSG bench 1 %d\r\n" % SIZE  # every subscriber's sid is 1
    pub_tail = sub_tail = b"\r\n"
    CONNECT = b'CONNECT {"verbose":false,"pedantic":false}\r\n'
    PING, PONG = b"PING\r\n", b"PONG\r\n"

    def __init__(self):
        self.lines = b""  # the publisher's unparsed input
        self.owed = 0  # PONGs the publisher owes

    def handshake(self, sock):
        """Reads INFO, then the PONG that answers our PING: the server has
        taken all we sent before it."""
        while True:
            line = read_line(sock)
            if line == self.PONG:
                return
            if line == self.PING:
                sock.sendall(self.PONG)
            elif not line.startswith(b"INFO "):
                raise RunFailed(f"unexpected line from NATS: {line[:80]!r}")

    def greet_subscribers(self, socks):
        for s in socks:
            s.sendall(self.CONNECT + b"SUB bench 1\r\n" + self.PING)
        for s in socks:
            self.handshake(s)

    def greet_publisher(self, sock):
        sock.sendall(self.CONNECT + self.PING)
        self.handshake(sock)

    def publisher_read(self, data):
        self.lines += data
        *lines, self.lines = self.lines.split(b"\r\n")
        for line in lines:
            if line != b"PING":
                raise RunFailed(f"the publisher was sent {line[:80]!r}")
            self.owed += 1
            self.pings += 1
        return 0

    def control(self, data):
        if data.startswith(self.PING):
            self.pings += 1
            return len(self.PING)
        return 0 if self.PING.startswith(data) else None

    def take_owed(self):
        owed, self.owed = self.PONG * self.owed, 0
        return owed


class Blocks:
    """The publisher's and the subscribers' streams, a block at a time."""

    def __init__(self, proto):
        self.proto = proto
        self.cache = {}
        self.pub_len = len(proto.pub_head) + SIZE + len(proto.pub_tail)
        self.sub_len = len(proto.sub_head) + SIZE + len(proto.sub_tail)

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
    def __init__(self, sock):
        self.sock = sock
        self.got = 0  # bytes of messages received and checked
        self.carry = b""  # the start of a control line, cut by a read

    def check(self, data, n, blocks, proto):
        """Compares data[:n], just read, with the stream from self.got on."""
        if self.carry:
            data, self.carry = self.carry + data[:n], b""
            n = len(data)
        L, done = blocks.sub_len, 0
        while done < n:
            k, within = divmod(self.got, BLOCK * L)
            take = min(n - done, BLOCK * L - within)
            # (A bytearray slice compares at memcmp speed; a memoryview
            # byte by byte.)
            if data[done:done + take] != blocks.get(k)[1][within:within + take]:
                return self.check_slowly(data, n, done, blocks, proto)
            self.got += take
            done += take

    def check_slowly(self, data, n, done, blocks, proto):
        """As check, a message at a time: what differs from the stream must
        be a control line (a NATS PING) where a message would begin."""
        L = blocks.sub_len
        while done < n:
            if self.got % L == 0:
                control = proto.control(data[done:min(done + 16, n)])
                if control == 0:
                    self.carry = bytes(data[done:n])
                    return
                if control:
                    self.sock.send(Nats.PONG)  # an idle socket: 6 bytes fit
                    done += control
                    continue
            k, within = divmod(self.got, BLOCK * L)
            take = min(n - done, L - self.got % L)
            if data[done:done + take] != blocks.get(k)[1][within:within + take]:
                raise RunFailed(f"subscriber got a wrong byte within message {self.got // L}: "
                                f"{bytes(data[done:min(done + 40, n)])!r}")
            self.got += take
            done += take


def server_cpu(pids):
    """Each process's CPU seconds so far (utime+stime)."""
    each = []
    for pid in pids:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        each.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
    return each


def connect(port):
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.settimeout(STALL)
    return s


def scrape(port):
    """A hub's counters: name (with labels) to value."""
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=STALL) as answer:
        text = answer.read().decode()
    return {m[1]: float(m[2]) for m in re.finditer(r"^(\S+) (\S+)$", text, re.M)}


def wait_for_hubs(metrics_ports, on_hub, link_metric):
    """Until every hub has accepted its subscribers (its accepted count
    includes our scrapes) and says its link is up."""
    scrapes = [0] * len(metrics_ports)
    deadline = time.monotonic() + STALL
    for i, port in enumerate(metrics_ports):
        while True:
            scrapes[i] += 1
            counters = scrape(port)
            accepted = counters.get("sockloop_accepted_total", 0) - scrapes[i]
            if accepted >= on_hub[i] and counters.get(link_metric, 0) >= 1:
                break
            if time.monotonic() > deadline:
                raise RunFailed(f"hub {i}: {accepted:.0f} of {on_hub[i]} subscribers accepted, "
                                f"{link_metric} {counters.get(link_metric)}")
            time.sleep(0.02)


def open_connections(args, proto):
    """The subscribers, then the publisher, each greeted."""
    ports = args.ports
    subs = [Subscriber(connect(ports[i % len(ports)])) for i in range(args.subscribers)]
    proto.greet_subscribers([s.sock for s in subs])
    if args.metrics_ports:
        on_hub = [len(range(i, args.subscribers, len(ports))) for i in range(len(ports))]
        wait_for_hubs(args.metrics_ports, on_hub, args.link_metric)
    pub = connect(ports[0])
    proto.greet_publisher(pub)
    for sock in [s.sock for s in subs] + [pub]:
        sock.setblocking(False)
    return subs, pub


class Run:
    """The publisher and the subscribers on one selector."""

    def __init__(self, args, proto):
        self.args, self.proto = args, proto
        self.blocks = Blocks(proto)
        self.subs, self.pub = open_connections(args, proto)
        self.sel = selectors.DefaultSelector()
        for s in self.subs:
            self.sel.register(s.sock, selectors.EVENT_READ, s)
        self.sel.register(self.pub, selectors.EVENT_READ, None)
        self.sent = 0  # bytes of the publisher's stream sent
        self.owed = b""  # control bytes the publisher sends between messages
        self.confirmed = 0  # messages the publisher heard were delivered (Redis)
        self.writing = False
        self.last_progress = time.monotonic()
        self.buf = bytearray(1 << 18)

    def slowest(self):
        return min(s.got for s in self.subs) // self.blocks.sub_len

    def confirmed_up_to(self, n):
        return not self.proto.confirms or self.confirmed >= n

    def publish(self, limit):
        """Sends the stream up to message `limit`; True if it sent any."""
        P = self.blocks.pub_len
        if self.owed and self.sent % P == 0:
            n = self.pub.send(self.owed)
            self.owed = self.owed[n:]
            return True
        end = limit * P
        if self.owed:  # finish the message under way, then the control bytes
            end = min(end, self.sent - self.sent % P + P)
        if self.sent >= end:
            return False
        k, within = divmod(self.sent, BLOCK * P)
        self.sent += self.pub.send(self.blocks.get(k)[0][within:min(BLOCK * P, end - k * BLOCK * P)])
        return True

    def want_write(self, limit):
        return self.sent < limit * self.blocks.pub_len or bool(self.owed)

    def read_publisher(self):
        try:
            data = self.pub.recv(1 << 16)
        except BlockingIOError:
            return
        if not data:
            raise RunFailed("server closed the publisher")
        self.confirmed += self.proto.publisher_read(data)
        self.owed += self.proto.take_owed()
        self.last_progress = time.monotonic()

    def read_subscriber(self, s):
        try:
            # Into one buffer: a fresh 256 KiB object per read costs page faults.
            n = s.sock.recv_into(self.buf)
        except BlockingIOError:
            return
        if n == 0:
            raise RunFailed(f"server closed a subscriber after {s.got // self.blocks.sub_len} messages")
        s.check(self.buf, n, self.blocks, self.proto)
        if s.got // self.blocks.sub_len > self.sent // self.blocks.pub_len + 1:
            raise RunFailed("a subscriber got more messages than were published")
        self.last_progress = time.monotonic()

    def wait(self, want_write):
        if want_write != self.writing:
            self.writing = want_write
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if want_write else 0)
            self.sel.modify(self.pub, events, None)
        ready = self.sel.select(timeout=0.05)
        if not ready and time.monotonic() - self.last_progress > STALL:
            raise RunFailed(f"no progress for {STALL:.0f} s: slowest subscriber at message "
                            f"{self.slowest()}, {self.sent // self.blocks.pub_len} sent")
        for key, mask in ready:
            if key.data is not None:
                self.read_subscriber(key.data)
            elif mask & selectors.EVENT_READ:
                self.read_publisher()
        self.blocks.forget_below(self.slowest() // BLOCK)

    def measure(self):
        """Publishes and checks until the window closes: (messages, seconds,
        the servers' CPU s, the client's CPU s)."""
        pids = self.args.server_pids
        end = window_start = cpu_start = client_start = deadline = None
        while True:
            now = time.monotonic()
            slowest = self.slowest()
            # The window opens once message 0 is everywhere (Redis: and confirmed).
            if window_start is None and slowest >= 1 and self.confirmed_up_to(1):
                window_start, cpu_start = now, server_cpu(pids)
                client_start = time.process_time()
                deadline = now + self.args.seconds
            if deadline is not None and end is None and now >= deadline:
                end = -(-self.sent // self.blocks.pub_len)  # finish the message being sent
            if end is not None and slowest >= end and self.confirmed_up_to(end):
                break
            # Publish: message 0 alone, then whole blocks within the window.
            limit = 1 if window_start is None else (slowest // BLOCK + WINDOW_BLOCKS) * BLOCK
            limit = limit if end is None else end
            try:
                if self.want_write(limit) and self.publish(limit):
                    self.last_progress = now
                    continue  # more may fit at once
            except BlockingIOError:
                pass
            self.wait(self.want_write(limit))
        cpu_end, client = server_cpu(pids), time.process_time() - client_start
        seconds = time.monotonic() - window_start
        return end - 1, seconds, [b - a for a, b in zip(cpu_start, cpu_end)], client

    def close(self):
        for s in self.subs:
            s.sock.close()
        self.pub.close()


def run(args):
    proto = {"lines": Lines, "redis": lambda: Redis(args.subscribers), "nats": Nats}[args.protocol]()
    try:
        bench = Run(args, proto)
        published, seconds, cpu_each, client_cpu = bench.measure()
    except (RunFailed, OSError) as e:
        print(json.dumps({"protocol": args.protocol, "subscribers": args.subscribers,
                          "errors": 1, "error": str(e)}))
        sys.exit(1)
    bench.close()
    delivered = published * args.subscribers  # message 0 opened the window
    cpu = sum(cpu_each) if cpu_each else None
    print(json.dumps({
        "protocol": args.protocol,
        "subscribers": args.subscribers,
        "published": published,
        "delivered": delivered,
        "seconds": round(seconds, 3),
        "delivered_per_sec": delivered / seconds,
        "server_cpu_s": cpu,
        "server_cpu_s_each": [round(c, 2) for c in cpu_each],
        "cpu_s_per_m": None if cpu is None else cpu / (delivered / 1e6),
        "client_cpu_s": round(client_cpu, 3),
        "pings_answered": proto.pings,
        "errors": 0,
    }))


def table(path):
    runs = [json.loads(line.split(" ", 1)[1]) | {"server": line.split(" ", 1)[0]}
            for line in open(path) if " {" in line]
    for subscribers in sorted({r["subscribers"] for r in runs}):
        these = [r for r in runs if r["subscribers"] == subscribers]
        servers = list(dict.fromkeys(r["server"] for r in these))
        bases = [(b, name) for b, name in (("nats", "NATS"), ("redis", "Redis")) if b in servers]

        def vals(server, field):
            return [r[field] for r in these if r["server"] == server and r.get(field) is not None]

        def med(server, field):
            v = vals(server, field)
            return statistics.median(v) if v else None

        vs = "".join(f" vs {name} |" for _, name in bases)
        print(f"\n{subscribers:,} subscribers\n")
        print(f"| server | runs | messages delivered/s median (min–max) |{vs} "
              f"server CPU s per M messages median (min–max) |{vs}")
        print("|---|---:|" + "---:|" * (2 + 2 * len(bases)))
        for server in servers:
            row = [server, str(len(vals(server, "delivered")))]
            for field, digits in (("delivered_per_sec", 0), ("cpu_s_per_m", 3)):
                v, m = vals(server, field), med(server, field)
                if m is None:
                    row += ["–"] * (1 + len(bases))
                    continue
                row.append(f"{m:,.{digits}f} ({min(v):,.{digits}f}–{max(v):,.{digits}f})")
                for base, _ in bases:
                    b = med(base, field)
                    row.append(f"{m / b:.2f}×" if b else "–")
            print("| " + " | ".join(row) + " |")
        per_round_ratios(these, servers, [b for b, _ in bases])


def per_round_ratios(runs, servers, bases):
    """CPU per message over a base's in the same round (the k-th run of
    each: rounds interleave the servers), which the machine's load moves
    less than either figure."""
    def cpu(server):
        return [r["cpu_s_per_m"] for r in runs if r["server"] == server and r.get("cpu_s_per_m")]

    lines = []
    for base in bases:
        for server in servers:
            pairs = list(zip(cpu(server), cpu(base)))
            if server in bases or not pairs:
                continue
            ratios = [a / b for a, b in pairs]
            lines.append(f"{server}/{base} {statistics.median(ratios):.2f}× "
                         f"({min(ratios):.2f}–{max(ratios):.2f})")
    if lines:
        print("\nServer CPU per message, per-round ratios, median (min–max): " + "; ".join(lines) + ".")


def port_list(text):
    return [int(p) for p in text.split(",") if p]


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "table":
        return table(sys.argv[2])
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["run"])
    parser.add_argument("--protocol", choices=["lines", "redis", "nats"], required=True)
    parser.add_argument("--ports", type=port_list, required=True)
    parser.add_argument("--subscribers", type=int, required=True)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--server-pids", type=port_list, default=[])
    parser.add_argument("--metrics-ports", type=port_list, default=[])
    parser.add_argument("--link-metric", default="sockloop_federation_link_up")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
