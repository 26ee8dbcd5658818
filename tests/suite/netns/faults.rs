//! Links that lose packets, break for a while or are slow: live peers are
//! served through all of it, byte for byte, and no timer ends one of them.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::thread;
use std::time::Duration;

use super::{Net, Peer, Way, stat, wait_for_stats};
use crate::common::{IO_TIMEOUT, LogFile, LogLines, Server};

/// Dead-peer timers short enough to fire on a link that is only lossy or
/// briefly cut, were they wrong.
const TIGHT_TIMERS: [&str; 4] = ["--tcp-user-timeout", "5s", "--tcp-keepalive", "1s,1s,3"];

/// Random loss of `percent` % of the TCP packets `ns` sends and receives.
fn lossy(net: &Net, ns: &str, percent: u32) {
    net.fault(
        ns,
        Way::Both,
        &format!("numgen random mod 100 lt {percent} drop"),
    );
}

/// A server of `args` in the centre (a relay's upstream, an echo, in leaf
/// 1), with the tight timers and a stats line every 200 ms.
fn serve(net: &Net, args: &[&str]) -> (Server, LogLines, Option<Server>) {
    let mut args = args.to_vec();
    args.extend(TIGHT_TIMERS);
    args.extend(["--stats-interval", "200ms"]);
    let upstream = (args[0] == "relay").then(|| net.sockloop(net.leaf(1), &["echo"]).0);
    let upstream_addr = upstream
        .as_ref()
        .map(|up| format!("{}:{}", net.leaf_ip(1), up.port));
    if let Some(addr) = &upstream_addr {
        args.extend(["--upstream", addr]);
    }
    let (server, log) = net.sockloop(net.centre(), &args);
    (server, log, upstream)
}

/// Every connection of `peer` ended well, and the server's stats line,
/// once all are closed, counts them all as closed by their peer.
fn all_served(peer: &mut Peer, log: &mut LogLines, closes: u64) {
    let outcome = peer.results();
    assert!(outcome.iter().all(|l| l.contains(" ok ")), "{outcome:?}");
    let line = wait_for_stats(log, |l| {
        stat(l, "active") == 0 && stat(l, "closed") >= closes
    });
    assert_eq!(stat(&line, "closed"), stat(&line, "peer"), "{line}");
}

/// 20 clients × `size` bytes through a server of `args`, with 5 % of the
/// packets lost both ways on every link.
fn loss_loses_nothing(args: &[&str], size: usize) {
    let net = Net::star(2);
    let (server, mut log, _upstream) = serve(&net, args);
    lossy(&net, net.leaf(0), 5);
    lossy(&net, net.leaf(1), 5);
    let (at, port) = (net.centre_ip(0).to_string(), server.port.to_string());
    let size = size.to_string();
    let mut peer = net.peer(
        net.leaf(0),
        &["stream", &at, &port, "20", &size, "65536", "0"],
    );
    // A relay closes both halves of each pair.
    let closes = if args[0] == "relay" { 40 } else { 20 };
    all_served(&mut peer, &mut log, closes);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn echo_under_5_percent_loss_returns_every_byte() {
    loss_loses_nothing(&["echo"], 4 << 20);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn relay_under_5_percent_loss_passes_every_byte() {
    loss_loses_nothing(&["relay"], 4 << 20);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn spliced_relay_under_5_percent_loss_passes_every_byte() {
    loss_loses_nothing(&["relay", "--splice", "always"], 4 << 20);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn hub_under_5_percent_loss_delivers_every_line_in_order() {
    let net = Net::star(1);
    // Room for all a subscriber is owed (1.9 MB): under loss one falls
    // behind for a while, and the default high watermark (1 MiB) would
    // rightly disconnect it (--slow-policy disconnect).
    let args = ["hub", "--framing", "lines", "--high-watermark", "4M"];
    let (server, mut log, _) = serve(&net, &args);
    lossy(&net, net.leaf(0), 5);
    let (at, port) = (net.centre_ip(0).to_string(), server.port.to_string());
    // 20 clients each publish 100 KB and read the others' 1.9 MB.
    let mut peer = net.peer(net.leaf(0), &["hub", &at, &port, "20", "100", "1000"]);
    peer.lines.wait_for("connected");
    // A client whose last ACK of the handshake was lost joins the hub
    // only when the SYN-ACK is sent again, a second later.
    wait_for_stats(&mut log, |l| stat(l, "active") == 20);
    peer.tell("go");
    all_served(&mut peer, &mut log, 20);
}

/// Clients stream through a server of `args` while their link is cut for
/// 2 s, well within the user timeout (5 s): all of them finish.
fn a_partition_that_heals_in_time_loses_nothing(args: &[&str]) {
    let net = Net::star(2);
    let (server, mut log, _upstream) = serve(&net, args);
    let (at, port) = (net.centre_ip(0).to_string(), server.port.to_string());
    // 2 MiB each, 32 KiB every 50 ms: about 3 s of sending.
    let stream = ["stream", &at, &port, "5", "2097152", "32768", "0.05"];
    let mut peer = net.peer(net.leaf(0), &stream);
    peer.lines.wait_for("sending");
    thread::sleep(Duration::from_millis(500));
    net.fault(net.leaf(0), Way::Both, "drop");
    thread::sleep(Duration::from_secs(2));
    net.heal(net.leaf(0));
    let closes = if args[0] == "relay" { 10 } else { 5 };
    all_served(&mut peer, &mut log, closes);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn echo_clients_survive_a_partition_that_heals_before_the_timeouts() {
    a_partition_that_heals_in_time_loses_nothing(&["echo"]);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn relay_clients_survive_a_partition_that_heals_before_the_timeouts() {
    a_partition_that_heals_in_time_loses_nothing(&["relay"]);
}

/// The high watermark of the slow-link test, and the most one read adds.
const HIGH_WATERMARK: u64 = 256 << 10;
const READ_CHUNK: u64 = 64 << 10;

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_bulk_client_on_a_slow_link_is_paused_while_others_are_served() {
    let net = Net::star(2);
    let metrics = LogFile::new("netns-metrics");
    let metrics_at = format!("unix:{}", metrics.path().display());
    let args = [
        "echo",
        "--high-watermark",
        "256K",
        "--sndbuf",
        "16K",
        "--metrics",
        &metrics_at,
        "--stats-interval",
        "200ms",
    ];
    let (server, mut log) = net.sockloop(net.centre(), &args);
    net.limit_rate(net.centre(), &net.centre_dev(0), "2mbit");
    let port = server.port.to_string();
    // 1 MiB back at 2 Mbit/s: about 4 s, while it sends as fast as it may.
    let bulk_at = net.centre_ip(0).to_string();
    let bulk_args = ["stream", &bulk_at, &port, "1", "1048576", "65536", "0"];
    let mut bulk = net.peer(net.leaf(0), &bulk_args);
    bulk.lines.wait_for("sending");
    let ping_at = net.centre_ip(1).to_string();
    let mut pings = net.peer(net.leaf(1), &["ping", &ping_at, &port, "5", "300"]);
    let pinged = pings.results();
    assert!(pinged.iter().all(|l| l.contains(" ok 300")), "{pinged:?}");
    let seen = &pings.lines.seen;
    let latency = seen.iter().find(|l| l.starts_with("latency"));
    let latency = latency.unwrap_or_else(|| panic!("no latency in {seen:?}"));
    eprintln!("netns: slow link: small requests on another link, µs p50 p99 max: {latency}");
    let outcome = bulk.results();
    assert!(outcome[0].contains(" ok "), "{outcome:?}");
    let peak = peak_pending_output(metrics.path());
    eprintln!("netns: slow link: the bulk client's output peaked at {peak} bytes");
    assert!(peak <= HIGH_WATERMARK + READ_CHUNK, "{peak}");
    wait_for_stats(&mut log, |l| stat(l, "active") <= 1);
}

/// `sockloop_peak_pending_output_bytes` from the metrics page served on
/// the Unix-domain socket at `path` (a file, so the test reaches it from
/// outside the namespaces).
fn peak_pending_output(path: &std::path::Path) -> u64 {
    let mut stream = UnixStream::connect(path).expect("the metrics socket");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    // The server closes after its answer.
    stream.read_to_string(&mut page).unwrap();
    page.lines()
        .find_map(|l| l.strip_prefix("sockloop_peak_pending_output_bytes "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no peak in {page}"))
}
