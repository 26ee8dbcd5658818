"""Vanished peers and a lossy link: sockloop relay beside HAProxy 2.6, each
in the centre of a star of network namespaces (run by benches/netfaults.sh,
as root). Clients are tests/suite/netns/peer.py in leaf 0; the upstream is
a sockloop echo in leaf 1, logging each close at debug, which is how a
proxy's giving up on a client is seen from outside it.

Timers alike on both proxies: user timeout 2 s (USER_TIMEOUT=seconds) (sockloop --tcp-user-timeout
2s; HAProxy tcp-ut 2000 on the bind line and the server line), keepalive
1 s idle, 1 s interval, 2 probes (--tcp-keepalive 1s,1s,2; option clitcpka
and srvtcpka with clitcpka-*/srvtcpka-*), timeout client/server 30 s
(--idle-timeout 30s); connect timeout 1 s (5 s under loss, where a SYN
lost waits a second for its retransmission).

Scenarios:
  vanish_client    CLIENTS clients send 1 MB each, then see nothing the proxy
                   sends (their own segments still arrive): the seconds until
                   the proxy ends each one (the upstream sees its pair close),
                   and what the proxy held meanwhile (RSS growth; kernel TCP
                   memory of the centre namespace, /proc/net/sockstat)
  vanish_upstream  a client streaming through the proxy when its upstream
                   vanishes: the seconds until the client hears, and how
                   (reset, or an EOF that looks like a complete stream)
  loss             20 clients x 4 MiB through the proxy, 5 % loss both ways
                   on both links: connections that did not get every byte back
"""

import os
import subprocess
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEER = open(os.path.join(ROOT, "tests/suite/netns/peer.py")).read()
SOCKLOOP = os.environ.get("SOCKLOOP", os.path.join(ROOT, "target/debug/sockloop"))
HAPROXY = os.environ.get("HAPROXY", "/usr/sbin/haproxy")
CLIENTS = int(os.environ.get("CLIENTS", "50"))
USER_TIMEOUT = int(os.environ.get("USER_TIMEOUT", "2"))
TAG = f"nf{os.getpid()}"
CENTRE, LEAVES = f"{TAG}c", [f"{TAG}l0", f"{TAG}l1"]


def sh(*args, **kw):
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def make_net():
    for ns in [CENTRE] + LEAVES:
        sh("ip", "netns", "add", ns)
        sh("ip", "-n", ns, "link", "set", "lo", "up")
    for i, leaf in enumerate(LEAVES):
        c, l = f"{TAG}c{i}", f"{TAG}l{i}"
        sh("ip", "link", "add", c, "netns", CENTRE, "type", "veth", "peer", "name", l, "netns", leaf)
        for ns, dev, ip in [(CENTRE, c, f"10.0.{i + 1}.1"), (leaf, l, f"10.0.{i + 1}.2")]:
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")


def drop_net():
    for ns in [CENTRE] + LEAVES:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout
        for pid in pids.split():
            subprocess.run(["kill", "-KILL", pid])
        subprocess.run(["ip", "netns", "delete", ns], capture_output=True)


def fault(ns, rules):
    script = "add table inet fault\n"
    script += "add chain inet fault incoming { type filter hook input priority 0; }\n"
    script += "add chain inet fault outgoing { type filter hook output priority 0; }\n"
    for chain, rule in rules:
        script += f"add rule inet fault {chain} meta l4proto tcp {rule}\n"
    sh("ip", "netns", "exec", ns, "nft", "-f", "-", input=script)


def heal(ns):
    sh("ip", "netns", "exec", ns, "nft", "-f", "-",
       input="add table inet fault\ndelete table inet fault\n")


class Proc:
    """A process in a namespace; its output lines, each with when it came."""

    def __init__(self, ns, args, stdin=False, stream="stdout", env=None):
        self.p = subprocess.Popen(
            ["ip", "netns", "exec", ns] + args,
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, **(env or {})))
        self.lines, self.cond = [], threading.Condition()
        for pipe in (self.p.stdout, self.p.stderr):
            threading.Thread(target=self._read, args=(pipe,), daemon=True).start()

    def _read(self, pipe):
        for line in pipe:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()

    def wait_for(self, needle, count=1, timeout=60):
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [(t, l) for t, l in self.lines if needle in l]
                if len(found) >= count:
                    return found[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{needle!r} x{count}: {self.lines[-20:]}")
                self.cond.wait(left)

    def tell(self, line):
        self.p.stdin.write(line + "\n")
        self.p.stdin.flush()

    def stop(self):
        self.p.kill()
        self.p.wait()


def peer(args, stdin=False):
    return Proc(LEAVES[0], ["python3", "-c", PEER] + args, stdin=stdin)


def upstream():
    """Two sockloop echoes in leaf 1, every close logged at debug."""
    echoes = []
    for _ in range(2):
        echo = Proc(LEAVES[1], [SOCKLOOP, "echo", "--listen", "0.0.0.0:0"],
                    env={"RUST_LOG": "debug"})
        port = echo.wait_for("listening on")[0][1].rsplit(":", 1)[1]
        echoes.append((echo, int(port)))
    return echoes


def start_proxy(kind, ports, work, connect_timeout=1):
    ups = [f"10.0.2.2:{p}" for p in ports]
    if kind == "sockloop":
        args = [SOCKLOOP, "relay", "--listen", "0.0.0.0:7000", "--tcp-user-timeout", f"{USER_TIMEOUT}s",
                "--tcp-keepalive", "1s,1s,2", "--idle-timeout", "30s", "--connect-timeout", f"{connect_timeout}s"]
        for up in ups:
            args += ["--upstream", up]
        proxy = Proc(CENTRE, args)
        proxy.wait_for("listening on")
    else:
        ut = USER_TIMEOUT * 1000
        servers = "\n".join(f"    server s{i} {up} tcp-ut {ut}" for i, up in enumerate(ups))
        config = f"""global
    maxconn 8000
defaults
    mode tcp
    timeout connect {connect_timeout}s
    timeout client 30s
    timeout server 30s
    option clitcpka
    option srvtcpka
    clitcpka-idle 1s
    clitcpka-intvl 1s
    clitcpka-cnt 2
    srvtcpka-idle 1s
    srvtcpka-intvl 1s
    srvtcpka-cnt 2
    option redispatch
    retries 1
frontend f
    bind 0.0.0.0:7000 tcp-ut {ut}
    default_backend b
backend b
    balance roundrobin
{servers}
"""
        path = os.path.join(work, "haproxy.cfg")
        open(path, "w").write(config)
        proxy = Proc(CENTRE, [HAPROXY, "-db", "-f", path])
        time.sleep(0.5)
    return proxy


def rss_kib(pid):
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def proxy_pid(proxy):
    """The proxy's own pid: `ip netns exec` execs it."""
    return proxy.p.pid


def tcp_mem_kib():
    out = sh("ip", "netns", "exec", CENTRE, "cat", "/proc/net/sockstat")
    for line in out.splitlines():
        if line.startswith("TCP:"):
            words = line.split()
            return int(words[words.index("mem") + 1]) * 4
    return 0


def vanish_client(kind, work):
    echoes = upstream()
    proxy = start_proxy(kind, [echoes[0][1]], work)
    pid = proxy_pid(proxy)
    client = peer(["hold", "10.0.1.1", "7000", str(CLIENTS)], stdin=True)
    client.wait_for("connected")
    time.sleep(0.5)
    rss0, mem0 = rss_kib(pid), tcp_mem_kib()
    fault(LEAVES[0], [("incoming", "ip length gt 200 drop")])
    client.tell("send 1000000")
    sent = client.wait_for("sending")[0][0]
    peak_rss, peak_mem = rss0, mem0
    echo = echoes[0][0]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        peak_rss, peak_mem = max(peak_rss, rss_kib(pid)), max(peak_mem, tcp_mem_kib())
        with echo.cond:
            closed = sum(1 for _, l in echo.lines if "closed c" in l)
        if closed >= CLIENTS:
            break
        time.sleep(0.1)
    times = sorted(t - sent for t, _ in echo.wait_for("closed c", CLIENTS, timeout=1))
    time.sleep(0.5)
    rss1, mem1 = rss_kib(pid), tcp_mem_kib()
    for p in [client, proxy] + [e for e, _ in echoes]:
        p.stop()
    heal(LEAVES[0])
    return {
        "first s": f"{times[0]:.2f}", "median s": f"{times[len(times) // 2]:.2f}",
        "last s": f"{times[-1]:.2f}",
        "RSS held KiB": peak_rss - rss0, "RSS after KiB": rss1 - rss0,
        "kernel TCP held KiB": peak_mem - mem0, "kernel TCP after KiB": mem1 - mem0,
    }


def vanish_upstream(kind, work):
    echoes = upstream()
    proxy = start_proxy(kind, [echoes[0][1], echoes[1][1]], work)
    client = peer(["stream", "10.0.1.1", "7000", "1", str(8 << 20), "16384", "0.01"])
    client.wait_for("sending")
    time.sleep(0.5)
    gone = echoes[0][1]
    fault(LEAVES[1], [("incoming", f"tcp dport {gone} drop"), ("outgoing", f"tcp sport {gone} drop")])
    vanished = time.monotonic()
    at, line = client.wait_for("conn 0")[0]
    outcome = " ".join(line.split()[3:])
    later = peer(["stream", "10.0.1.1", "7000", "4", "100000", "16384", "0"])
    later.wait_for("done")
    served = sum(1 for _, l in later.lines if " ok " in l)
    for p in [client, later, proxy] + [e for e, _ in echoes]:
        p.stop()
    heal(LEAVES[1])
    return {"client hears after s": f"{at - vanished:.2f}", "as": outcome,
            "later clients served": f"{served}/4"}


def loss(kind, work):
    echoes = upstream()
    proxy = start_proxy(kind, [echoes[0][1]], work, connect_timeout=5)
    for leaf in LEAVES:
        fault(leaf, [(c, "numgen random mod 100 lt 5 drop") for c in ("incoming", "outgoing")])
    began = time.monotonic()
    client = peer(["stream", "10.0.1.1", "7000", "20", str(4 << 20), "65536", "0"])
    client.wait_for("done", timeout=600)
    took = time.monotonic() - began
    results = [l for _, l in client.lines if l.startswith("conn ")]
    for p in [client, proxy] + [e for e, _ in echoes]:
        p.stop()
    for leaf in LEAVES:
        heal(leaf)
    bad = [l for l in results if " ok " not in l]
    for line in bad:
        print(f"  {kind}: {line}", file=sys.stderr)
    return {"connections byte-exact": f"{len(results) - len(bad)}/20", "seconds": f"{took:.1f}"}


def main():
    scenarios = os.environ.get("SCENARIOS", "vanish_client vanish_upstream loss").split()
    proxies = os.environ.get("PROXIES", "haproxy sockloop").split()
    rounds = int(os.environ.get("ROUNDS", "2"))
    work = sys.argv[1]
    make_net()
    try:
        for name in scenarios:
            for r in range(rounds):
                for kind in proxies:
                    result = globals()[name](kind, work)
                    print(f"{name}\t{kind}\tround {r + 1}\t" +
                          "\t".join(f"{k}: {v}" for k, v in result.items()), flush=True)
    finally:
        drop_net()


if __name__ == "__main__":
    main()
