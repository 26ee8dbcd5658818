//! Peers that vanish without a FIN or a RST (a laptop closed, a cable
//! pulled): the kernel's timers find them, the server closes them as
//! `tcp-timeout`, logs them at warn, and lets go of what it held for them.

use std::time::Instant;

use super::{GAVE_UP, Net, Way, most_buffered, stat, wait_for_gave_up, wait_for_stats};

/// What a vanished client's replies meet: every segment with data in it is
/// dropped on its way in, while its own bytes (and its ACK-only segments,
/// which are small) still go out, so its requests keep arriving.
const REPLIES_LOST: &str = "ip length gt 200 drop";

/// Only the user timeout (2 s) can end a vanished peer here, and its
/// output backs up in user space (a small send buffer), where it shows.
const USER_TIMEOUT_ONLY: [&str; 12] = [
    "--tcp-user-timeout",
    "2s",
    "--tcp-keepalive",
    "off",
    "--idle-timeout",
    "0",
    "--write-timeout",
    "0",
    "--sndbuf",
    "16K",
    "--stats-interval",
    "200ms",
];

/// A sockloop server of `args` in the centre and `clients` clients in leaf
/// 0 that send requests and then see none of the replies: each is closed
/// by the user timeout, counted, and its output released.
fn replies_in_flight_are_given_up(scenario: &str, args: &[&str], clients: usize) {
    let net = Net::star(2);
    let (upstream, mut upstream_log) =
        net.sockloop(net.leaf(1), &["echo", "--stats-interval", "200ms"]);
    let upstream_addr = format!("{}:{}", net.leaf_ip(1), upstream.port);
    let relay = args[0] == "relay";
    let mut args = args.to_vec();
    if relay {
        args.extend(["--upstream", &upstream_addr]);
    }
    args.extend(USER_TIMEOUT_ONLY);
    let (server, mut log) = net.sockloop(net.centre(), &args);
    let port = server.port.to_string();
    let count = clients.to_string();
    let centre = net.centre_ip(0).to_string();
    let mut client = net.peer(net.leaf(0), &["hold", &centre, &port, &count]);
    client.lines.wait_for("connected");
    net.fault(net.leaf(0), Way::In, REPLIES_LOST);
    client.tell("send 1000000");
    let (sent, _) = client.lines.wait_for_at("sending");
    wait_for_gave_up(&mut log, clients, sent, scenario, "--tcp-user-timeout 2s");
    let held = most_buffered(&log);
    eprintln!("netns: {scenario}: output held for the vanished, at most {held} bytes");
    // Spliced, what is held is in a pipe, which this figure does not count.
    assert!(held > 0 || args.contains(&"--splice"), "{:?}", log.seen);
    let after = wait_for_stats(&mut log, |l| stat(l, "tcp-timeout") == clients as u64);
    assert_eq!(stat(&after, "output buffered"), 0, "{after}");
    assert_eq!(stat(&after, "active"), 0, "{after}");
    if relay {
        // Each pair's other half: reset, never a clean end, and not
        // counted as timed out itself.
        assert_eq!(stat(&after, "error"), clients as u64, "{after}");
        wait_for_stats(&mut upstream_log, |l| stat(l, "error") == clients as u64);
    }
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn an_echo_client_whose_replies_vanish_is_closed_by_the_user_timeout() {
    replies_in_flight_are_given_up("echo, replies lost", &["echo"], 3);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn with_two_reactors_every_client_whose_replies_vanish_is_closed() {
    let args = ["echo", "--threads", "2"];
    replies_in_flight_are_given_up("echo --threads 2, replies lost", &args, 6);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_relay_client_whose_replies_vanish_is_closed_and_its_upstream_reset() {
    for splice in [None, Some("always")] {
        let mut args = vec!["relay"];
        args.extend(splice.map(|mode| ["--splice", mode]).into_iter().flatten());
        let scenario = format!("relay {args:?}, replies lost");
        replies_in_flight_are_given_up(&scenario, &args, 2);
    }
}

/// Clients connected to a server of `args` in the centre vanish whole
/// while idle: keepalive finds each, and nothing else closes them.
fn idle_clients_that_vanish_are_found_by_keepalive(scenario: &str, args: &[&str]) {
    let net = Net::star(1);
    let mut args = args.to_vec();
    let common = [
        "--tcp-keepalive",
        "1s,1s,2",
        "--tcp-user-timeout",
        "0",
        "--idle-timeout",
        "0",
        "--stats-interval",
        "200ms",
    ];
    args.extend(common);
    let (server, mut log) = net.sockloop(net.centre(), &args);
    let (centre, port) = (net.centre_ip(0).to_string(), server.port.to_string());
    let mut client = net.peer(net.leaf(0), &["hold", &centre, &port, "3"]);
    client.lines.wait_for("connected");
    wait_for_stats(&mut log, |l| stat(l, "active") == 3);
    net.fault(net.leaf(0), Way::Both, "drop");
    let vanished = Instant::now();
    wait_for_gave_up(&mut log, 3, vanished, scenario, "--tcp-keepalive 1s,1s,2");
    let after = wait_for_stats(&mut log, |l| stat(l, "tcp-timeout") == 3);
    assert_eq!(stat(&after, "active"), 0, "{after}");
    assert_eq!(stat(&after, "closed"), 3, "{after}");
    let warned = log.seen.iter().filter(|l| l.contains(GAVE_UP)).count();
    assert_eq!(warned, 3, "{:?}", log.seen);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn idle_echo_clients_that_vanish_are_found_by_keepalive() {
    idle_clients_that_vanish_are_found_by_keepalive("echo, idle", &["echo"]);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn idle_hub_clients_that_vanish_are_found_by_keepalive_with_two_reactors() {
    let args = ["hub", "--framing", "lines", "--threads", "2"];
    idle_clients_that_vanish_are_found_by_keepalive("hub --threads 2, idle", &args);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn hub_subscribers_that_vanish_mid_broadcast_are_closed_and_released() {
    let net = Net::star(2);
    let mut args = vec!["hub", "--framing", "lines"];
    args.extend(USER_TIMEOUT_ONLY);
    let (server, mut log) = net.sockloop(net.centre(), &args);
    let port = server.port.to_string();
    let (subscribers_at, publisher_at) = (net.centre_ip(0).to_string(), net.centre_ip(1));
    let mut subscribers = net.peer(net.leaf(0), &["hold", &subscribers_at, &port, "2"]);
    subscribers.lines.wait_for("connected");
    let publisher_at = publisher_at.to_string();
    let mut publisher = net.peer(net.leaf(1), &["hold", &publisher_at, &port, "1"]);
    publisher.lines.wait_for("connected");
    net.fault(net.leaf(0), Way::Both, "drop");
    publisher.tell("send 300000");
    let (sent, _) = publisher.lines.wait_for_at("sending");
    wait_for_gave_up(
        &mut log,
        2,
        sent,
        "hub, broadcast lost",
        "--tcp-user-timeout 2s",
    );
    let held = most_buffered(&log);
    eprintln!("netns: hub, broadcast lost: output held for the vanished, at most {held} bytes");
    assert!(held > 0, "{:?}", log.seen);
    let after = wait_for_stats(&mut log, |l| stat(l, "tcp-timeout") == 2);
    // The publisher is served on.
    assert_eq!(stat(&after, "active"), 1, "{after}");
    assert_eq!(stat(&after, "output buffered"), 0, "{after}");
}
