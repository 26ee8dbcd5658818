//! Networks of our own, for the faults loopback never has: network
//! namespaces joined by veth pairs, where `nft` loses packets at random,
//! drops them all (a peer that vanished without a FIN or RST) or answers
//! them with a reset, and `tc … tbf` slows a link down.
//!
//! [`Net::star`] makes a centre namespace (the server under test) and
//! leaves (clients, upstreams), leaf `i` joined to the centre by a veth
//! pair of its own: the centre is `10.0.i+1.1` on it, the leaf
//! `10.0.i+1.2`. These addresses exist only inside the namespaces; the
//! host's interfaces and routes are never touched. Every name carries the
//! process id and a counter, so tests can run side by side. Dropping the
//! `Net` kills what still runs in its namespaces and deletes them, however
//! the test ends.
//!
//! Everything here needs root, `ip` (iproute2), `nft` (nftables), `tc` and
//! python3: the tests are `#[ignore]`d in a plain `cargo test`, and
//! `.ci/run` installs the tools and runs them (`-- --ignored netns::`).

mod faults;
mod relay;
mod vanish;

use std::net::Ipv4Addr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::common::{IO_TIMEOUT, LogLines, Server};

/// The clients (`tests/suite/netns/peer.py`), run by `python3 -c`.
const PEER: &str = include_str!("peer.py");

/// A star of namespaces: the centre and its leaves.
pub struct Net {
    centre: String,
    leaves: Vec<String>,
    /// Unique to this net: the start of its veth pairs' names.
    tag: String,
}

impl Net {
    /// A centre and `leaves` leaves (at most 9), each joined to the centre.
    pub fn star(leaves: usize) -> Net {
        assert!(leaves < 10, "leaves are numbered by one digit");
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("sl{}x{n}", std::process::id());
        let net = Net {
            centre: format!("{tag}c"),
            leaves: (0..leaves).map(|i| format!("{tag}l{i}")).collect(),
            tag,
        };
        sweep_abandoned();
        // Built step by step: whatever fails halfway, Drop removes.
        for ns in net.namespaces() {
            run("ip", &["netns", "add", ns]);
            run("ip", &["-n", ns, "link", "set", "lo", "up"]);
        }
        for (i, leaf) in net.leaves.iter().enumerate() {
            let (centre_end, leaf_end) = (net.centre_dev(i), net.leaf_dev(i));
            // Each end is made inside its namespace: no name on the host.
            let pair = [
                "link",
                "add",
                &centre_end,
                "netns",
                &net.centre,
                "type",
                "veth",
                "peer",
                "name",
                &leaf_end,
                "netns",
                leaf,
            ];
            run("ip", &pair);
            let ends = [
                (&net.centre, &centre_end, net.centre_ip(i)),
                (leaf, &leaf_end, net.leaf_ip(i)),
            ];
            for (ns, dev, ip) in ends {
                run(
                    "ip",
                    &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
                );
                run("ip", &["-n", ns, "link", "set", dev, "up"]);
            }
        }
        net
    }

    fn namespaces(&self) -> impl Iterator<Item = &String> {
        std::iter::once(&self.centre).chain(&self.leaves)
    }

    /// The namespace of the server under test.
    pub fn centre(&self) -> &str {
        &self.centre
    }

    /// Leaf `i`'s namespace.
    pub fn leaf(&self, i: usize) -> &str {
        &self.leaves[i]
    }

    /// The centre's address on leaf `i`'s link: where that leaf reaches it.
    pub fn centre_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, i as u8 + 1, 1)
    }

    /// Leaf `i`'s address.
    pub fn leaf_ip(&self, i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, i as u8 + 1, 2)
    }

    /// The centre's end of leaf `i`'s link.
    pub fn centre_dev(&self, i: usize) -> String {
        format!("{}c{i}", self.tag)
    }

    fn leaf_dev(&self, i: usize) -> String {
        format!("{}l{i}", self.tag)
    }

    /// The prefix that runs a command inside `ns`.
    pub fn exec<'a>(&self, ns: &'a str) -> [&'a str; 4] {
        ["ip", "netns", "exec", ns]
    }

    /// `sockloop ARGS --listen 0.0.0.0:0` in `ns` (its addresses are the
    /// namespace's only), with its log read line by line.
    pub fn sockloop(&self, ns: &str, args: &[&str]) -> (Server, LogLines) {
        let mut server = Server::start_on(&self.exec(ns), args, "0.0.0.0:0", Stdio::piped());
        let log = LogLines::new(server.take_stderr());
        (server, log)
    }

    /// A client of `peer.py` in `ns`: `mode` and its arguments.
    pub fn peer(&self, ns: &str, args: &[&str]) -> Peer {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "python3", "-c", PEER])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 in a namespace");
        let lines = LogLines::new(child.stdout.take().expect("piped"));
        Peer { child, lines }
    }

    /// Adds `rule` (one nft statement: `drop`, `numgen random mod 100 lt 5
    /// drop`, `reject with tcp reset`, `tcp sport 7000 drop`) for the TCP
    /// packets `ns` receives, sends, or both.
    pub fn fault(&self, ns: &str, way: Way, rule: &str) {
        let chains: &[&str] = match way {
            Way::In => &["incoming"],
            Way::Out => &["outgoing"],
            Way::Both => &["incoming", "outgoing"],
        };
        let mut script = "add table inet fault\n\
             add chain inet fault incoming { type filter hook input priority 0; }\n\
             add chain inet fault outgoing { type filter hook output priority 0; }\n"
            .to_string();
        for chain in chains {
            script += &format!("add rule inet fault {chain} meta l4proto tcp {rule}\n");
        }
        nft(ns, &script);
    }

    /// Lifts every fault of `ns`, if it has any.
    pub fn heal(&self, ns: &str) {
        nft(ns, "add table inet fault\ndelete table inet fault\n");
    }

    /// Limits what `ns` sends out of `dev` to `rate` (tc's `tbf`: `2mbit`).
    pub fn limit_rate(&self, ns: &str, dev: &str, rate: &str) {
        let tbf = [
            "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate, "burst", "32kbit",
            "latency", "400ms",
        ];
        run("tc", &tbf);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.namespaces() {
            remove_namespace(ns);
        }
    }
}

/// Kills what runs in `ns` (only ours can be inside) and deletes it, its
/// veth ends with it.
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-KILL", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "delete", ns]).status();
}

/// Removes the namespaces of test processes that are gone: one killed by
/// a signal never ran its `Drop`.
fn sweep_abandoned() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let listed = String::from_utf8_lossy(&out.stdout);
    for ns in listed.lines().filter_map(|l| l.split_whitespace().next()) {
        let owner = ns.strip_prefix("sl").and_then(|rest| rest.split_once('x'));
        let abandoned = owner.is_some_and(|(pid, _)| {
            pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists()
        });
        if abandoned {
            remove_namespace(ns);
        }
    }
}

/// Which of a namespace's packets a fault is for.
pub enum Way {
    /// Those it receives.
    In,
    /// Those it sends.
    Out,
    /// Both.
    Both,
}

/// A `peer.py` client in a namespace, killed and reaped however the test ends.
pub struct Peer {
    child: Child,
    /// Its stdout, line by line, each with when it came.
    pub lines: LogLines,
}

impl Peer {
    /// Sends `command` to its stdin.
    pub fn tell(&mut self, command: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped");
        writeln!(stdin, "{command}").expect("write to the peer");
    }

    /// Every `conn` line up to `done`, and whether it exited with success.
    pub fn results(&mut self) -> Vec<String> {
        self.lines.wait_for("done");
        let status = self.wait();
        assert!(status.success(), "peer failed: {:?}", self.lines.seen);
        let conns = self.lines.seen.iter().filter(|l| l.starts_with("conn "));
        conns.cloned().collect()
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the peer") {
                return status;
            }
            assert!(Instant::now() < deadline, "the peer did not exit");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a command that must succeed.
fn run(program: &str, args: &[&str]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program} (needs root and iproute2): {e}"));
    assert!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Runs an nft script in `ns`.
fn nft(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run nft (needs nftables)");
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(script.as_bytes())
        .expect("write the nft script");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft in {ns}:\n{script}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The count after `name ` in a `stats:` line (`active 3`): 0 where the
/// line has none (a close reason not counted yet).
pub fn stat(line: &str, name: &str) -> u64 {
    let Some(at) = line.find(&format!("{name} ")) else {
        return 0;
    };
    let rest = &line[at + name.len() + 1..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("{name} in {line}"))
}

/// Waits for a `stats:` line for which `done` holds; panics with the last
/// one after `IO_TIMEOUT`.
pub fn wait_for_stats(log: &mut LogLines, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let line = log.wait_for("stats: ");
        if done(&line) {
            return line;
        }
        assert!(Instant::now() < deadline, "not the stats wanted: {line}");
    }
}

/// The most output the `stats:` lines seen so far say was held.
pub fn most_buffered(log: &LogLines) -> u64 {
    let lines = log.seen.iter().filter(|l| l.contains("stats: "));
    lines.map(|l| stat(l, "output buffered")).max().unwrap_or(0)
}

/// What the server logs (at warn) when the kernel ends a connection:
/// `closed c3 (10.0.1.2:40000): the kernel gave up on the peer (...)`, not
/// the relay's line about the other half.
pub const GAVE_UP: &str = "): the kernel gave up on the peer";

/// Waits for `n` connections ended by the kernel's timers, and prints how
/// long after `since` each came, against what was `configured`, for the notes.
pub fn wait_for_gave_up(
    log: &mut LogLines,
    n: usize,
    since: Instant,
    scenario: &str,
    configured: &str,
) {
    for _ in 0..n {
        let (at, _) = log.wait_for_at(GAVE_UP);
        let after = at.saturating_duration_since(since).as_secs_f64();
        eprintln!("netns: {scenario}: closed {after:.2}s after the fault ({configured})");
    }
}
