"""The clients of the network-namespace tests (tests/suite/netns), run inside
a namespace by `ip netns exec`. Each mode reports on stdout, a line per
event, flushed at once, so the test can act between the lines:

  stream HOST PORT COUNT SIZE CHUNK PAUSE
      COUNT connections each send SIZE bytes of their own pattern, CHUNK at
      a time with PAUSE seconds between, then FIN, and read back what comes
      until EOF: `conn I PORT ok N`, or `reset N`, `eof N`, `mismatch N`,
      `error N ERRNO` (N: bytes that came back right). `sending` once all
      are connected, `done` at the end.
  hold HOST PORT COUNT
      COUNT connections, then `connected PORT...`; commands on stdin:
      `send N` (N bytes on each as 64-byte lines, each in a thread of its
      own, nothing read; `sending` at once), `quit`.
  hub HOST PORT COUNT LINES SIZE
      COUNT hub clients, `connected`, and once told `go` on stdin each
      publish LINES lines of SIZE bytes and read the
      others' (COUNT - 1) * LINES lines, each sender's in order and intact:
      `conn I PORT ok N` (N lines) or what went wrong.
  ping HOST PORT COUNT ROUNDS
      COUNT connections each make ROUNDS round trips of 64 bytes, one at a
      time: `conn I PORT ok ROUNDS`, then `latency p50 P99 max` (µs).
"""

import random
import socket
import sys
import threading
import time

TIMEOUT = 60


def say(line):
    print(line, flush=True)


def connect(host, port):
    s = socket.create_connection((host, int(port)), timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def pattern(seed, size):
    return random.Random(seed).randbytes(size)


def failure(error, n):
    if isinstance(error, ConnectionResetError):
        return f"reset {n}"
    return f"error {n} {getattr(error, 'errno', None) or type(error).__name__}"


def send_paced(s, data, chunk, pause, errors):
    try:
        for at in range(0, len(data), chunk):
            s.sendall(data[at : at + chunk])
            if pause:
                time.sleep(pause)
        s.shutdown(socket.SHUT_WR)
    except OSError as e:
        errors.append(e)


def stream_one(s, data, chunk, pause):
    # A reset is reported once, to whichever call comes first: when the
    # sender's is, the reader's next recv sees an EOF, which is not one.
    errors, read_error = [], []
    sender = threading.Thread(target=send_paced, args=(s, data, chunk, pause, errors))
    sender.start()
    got = bytearray()
    try:
        while True:
            part = s.recv(1 << 16)
            if not part:
                break
            got += part
    except OSError as e:
        read_error.append(e)
    sender.join()
    reset = [e for e in errors if isinstance(e, ConnectionResetError)]
    if reset or read_error:
        return failure((reset or read_error)[0], good_prefix(got, data))
    if got == data:
        return f"ok {len(got)}"
    if data.startswith(bytes(got)):
        return f"eof {len(got)}"
    return f"mismatch {good_prefix(got, data)}"


def good_prefix(got, data):
    n = 0
    while n < len(got) and n < len(data) and got[n] == data[n]:
        n += 1
    return n


def run_all(socks, work):
    results = [None] * len(socks)

    def one(i):
        results[i] = work(i, socks[i])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(socks))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i, (s, result) in enumerate(zip(socks, results)):
        say(f"conn {i} {s.getsockname()[1]} {result}")
        s.close()
    return results


def stream(host, port, count, size, chunk, pause):
    socks = [connect(host, port) for _ in range(int(count))]
    say("sending")
    size, chunk, pause = int(size), int(chunk), float(pause)
    run_all(socks, lambda i, s: stream_one(s, pattern(i, size), chunk, pause))


def hold(host, port, count):
    socks = [connect(host, port) for _ in range(int(count))]
    say("connected " + " ".join(str(s.getsockname()[1]) for s in socks))
    for line in sys.stdin:
        words = line.split()
        if words[:1] == ["send"]:
            lines = (b"x" * 63 + b"\n") * (int(words[1]) // 64)
            for s in socks:
                threading.Thread(target=send_quietly, args=(s, lines), daemon=True).start()
            say("sending")
        elif words[:1] == ["quit"]:
            return


def send_quietly(s, data):
    try:
        s.sendall(data)
    except OSError:
        pass  # the server may well have given up on this one


def hub_one(i, s, count, lines, size, start):
    payload = lambda sender, seq: pattern(sender * 1_000_003 + seq, size).hex()[:size]
    start.wait()

    def publish():
        for seq in range(lines):
            s.sendall(f"{i} {seq} {payload(i, seq)}\n".encode())

    publisher = threading.Thread(target=publish)
    publisher.start()
    expected = {sender: 0 for sender in range(count) if sender != i}
    want, got, rest = (count - 1) * lines, 0, b""
    try:
        while got < want:
            part = s.recv(1 << 16)
            if not part:
                return f"eof {got}"
            *complete, rest = (rest + part).split(b"\n")
            for line in complete:
                sender, seq, body = line.decode().split(" ")
                sender, seq = int(sender), int(seq)
                if expected.get(sender) != seq or body != payload(sender, seq):
                    return f"mismatch {got}"
                expected[sender] += 1
                got += 1
    except OSError as e:
        return failure(e, got)
    finally:
        publisher.join()
    return f"ok {got}"


def hub(host, port, count, lines, size):
    count, lines, size = int(count), int(lines), int(size)
    socks = [connect(host, port) for _ in range(count)]
    # Everyone subscribed before anyone publishes (a line sent to a hub
    # before a client joined is not that client's to read): the test says
    # `go` once the hub counts them all.
    say("connected")
    sys.stdin.readline()
    start = threading.Barrier(count)
    say("sending")
    run_all(socks, lambda i, s: hub_one(i, s, count, lines, size, start))


def ping_one(s, rounds, latencies):
    message = b"p" * 64
    for _ in range(rounds):
        began = time.monotonic()
        s.sendall(message)
        got = b""
        while len(got) < len(message):
            part = s.recv(len(message) - len(got))
            if not part:
                return f"eof {len(latencies)}"
            got += part
        latencies.append(time.monotonic() - began)
    return f"ok {rounds}"


def ping(host, port, count, rounds):
    socks = [connect(host, port) for _ in range(int(count))]
    latencies = []
    say("sending")
    run_all(socks, lambda i, s: ping_one(s, int(rounds), latencies))
    latencies.sort()
    at = lambda q: int(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1e6)
    say(f"latency {at(0.5)} {at(0.99)} {at(1.0)}")


if __name__ == "__main__":
    modes = {"stream": stream, "hold": hold, "hub": hub, "ping": ping}
    modes[sys.argv[1]](*sys.argv[2:])
    say("done")
