//! A relay between a client leaf and an upstream leaf, when one side
//! vanishes or is reset mid-stream: the other side is reset (a stream cut
//! short never looks complete), and new clients go to an upstream that
//! still answers.

use std::thread;
use std::time::{Duration, Instant};

use super::{Net, Way, stat, wait_for_gave_up, wait_for_stats};
use crate::common::{LogLines, Server};

/// A relay in the centre before two echo upstreams in leaf 1; clients in
/// leaf 0.
struct Relayed {
    net: Net,
    relay: Server,
    log: LogLines,
    /// The two upstreams, in the relay's round-robin order.
    upstreams: [(Server, LogLines); 2],
}

impl Relayed {
    fn new(relay_args: &[&str]) -> Relayed {
        let net = Net::star(2);
        let echo = ["echo", "--stats-interval", "200ms"];
        let upstreams = [
            net.sockloop(net.leaf(1), &echo),
            net.sockloop(net.leaf(1), &echo),
        ];
        let addrs = upstreams
            .each_ref()
            .map(|(server, _)| format!("{}:{}", net.leaf_ip(1), server.port));
        let mut args = vec!["relay", "--upstream", &addrs[0], "--upstream", &addrs[1]];
        args.extend(["--stats-interval", "200ms", "--idle-timeout", "0"]);
        args.extend(relay_args);
        let (relay, log) = net.sockloop(net.centre(), &args);
        Relayed {
            net,
            relay,
            log,
            upstreams,
        }
    }

    /// `count` clients in leaf 0 streaming `size` bytes each through the
    /// relay, 16 KiB every 10 ms.
    fn stream(&self, count: usize, size: usize) -> super::Peer {
        let (at, port) = (
            self.net.centre_ip(0).to_string(),
            self.relay.port.to_string(),
        );
        let args = [
            "stream",
            &at,
            &port,
            &count.to_string(),
            &size.to_string(),
            "16384",
            "0.01",
        ];
        self.net.peer(self.net.leaf(0), &args)
    }

    fn upstream_port(&self, i: usize) -> u16 {
        self.upstreams[i].0.port
    }
}

/// The first upstream vanishes under a client streaming through the relay:
/// the relay's user timeout ends that half, the client is reset, and the
/// clients after it are served by the other upstream.
fn a_vanished_upstream_resets_its_client_and_new_ones_fail_over(scenario: &str, extra: &[&str]) {
    let mut args = vec![
        "--tcp-user-timeout",
        "2s",
        "--tcp-keepalive",
        "1s,1s,2",
        "--connect-timeout",
        "1s",
    ];
    args.extend(extra);
    let mut relayed = Relayed::new(&args);
    let mut client = relayed.stream(1, 8 << 20);
    client.lines.wait_for("sending");
    thread::sleep(Duration::from_millis(500));
    let gone = relayed.upstream_port(0);
    let (net, upstream) = (&relayed.net, relayed.net.leaf(1));
    net.fault(upstream, Way::In, &format!("tcp dport {gone} drop"));
    net.fault(upstream, Way::Out, &format!("tcp sport {gone} drop"));
    let vanished = Instant::now();
    wait_for_gave_up(
        &mut relayed.log,
        1,
        vanished,
        scenario,
        "--tcp-user-timeout 2s",
    );
    let (reset_at, _) = relayed.log.wait_for_at("resetting");
    let after = reset_at.saturating_duration_since(vanished).as_secs_f64();
    eprintln!("netns: {scenario}: client reset {after:.2}s after the upstream vanished");
    let outcome = client.results();
    assert!(outcome[0].contains(" reset "), "{outcome:?}");
    // The next goes to the second upstream, the one after to the first,
    // which does not answer within the connect timeout: then the second.
    let outcome = relayed.stream(2, 100_000).results();
    assert!(outcome.iter().all(|l| l.contains(" ok ")), "{outcome:?}");
    let line = wait_for_stats(&mut relayed.log, |l| stat(l, "active") == 0);
    assert_eq!(stat(&line, "tcp-timeout"), 1, "{line}");
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_vanished_upstream_resets_its_client_within_the_user_timeout() {
    a_vanished_upstream_resets_its_client_and_new_ones_fail_over("relay, upstream vanished", &[]);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_vanished_upstream_resets_its_spliced_client_within_the_user_timeout() {
    let scenario = "relay --splice always, upstream vanished";
    a_vanished_upstream_resets_its_client_and_new_ones_fail_over(scenario, &["--splice", "always"]);
}

/// A reset injected on one side of a relay mid-stream: the relay resets
/// the other side and says so.
fn a_reset_on_one_side_resets_the_other(extra: &[&str]) {
    for client_side in [true, false] {
        let mut relayed = Relayed::new(extra);
        let mut client = relayed.stream(1, 8 << 20);
        client.lines.wait_for("sending");
        thread::sleep(Duration::from_millis(300));
        let net = &relayed.net;
        if client_side {
            // What the relay sends the client is answered with a reset.
            let rule = format!("tcp sport {} reject with tcp reset", relayed.relay.port);
            net.fault(net.leaf(0), Way::In, &rule);
        } else {
            let rule = format!(
                "tcp dport {} reject with tcp reset",
                relayed.upstream_port(0)
            );
            net.fault(net.leaf(1), Way::In, &rule);
        }
        let resetting = relayed.log.wait_for("resetting");
        eprintln!("netns: relay, reset injected (client side {client_side}): {resetting}");
        // The peer left out answers what comes next with a reset of its
        // own: let that through.
        net.heal(net.leaf(0));
        net.heal(net.leaf(1));
        let outcome = client.results();
        assert!(outcome[0].contains(" reset "), "{outcome:?}");
        if client_side {
            // The upstream, reset by the relay: never a clean end.
            let (_, upstream_log) = &mut relayed.upstreams[0];
            let upstream = wait_for_stats(upstream_log, |l| stat(l, "closed") >= 1);
            assert_eq!(stat(&upstream, "error"), 1, "{upstream}");
            assert_eq!(stat(&upstream, "peer"), 0, "{upstream}");
        }
        let relay = wait_for_stats(&mut relayed.log, |l| {
            stat(l, "closed") >= 2 && stat(l, "active") == 0
        });
        assert_eq!(stat(&relay, "error"), 2, "{relay}");
        assert_eq!(stat(&relay, "tcp-timeout"), 0, "{relay}");
    }
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_reset_injected_on_either_side_of_the_relay_resets_the_other() {
    a_reset_on_one_side_resets_the_other(&[]);
}

#[test]
#[ignore = "needs root, ip and nft: .ci/run runs them"]
fn a_reset_injected_on_either_side_of_the_spliced_relay_resets_the_other() {
    a_reset_on_one_side_resets_the_other(&["--splice", "always"]);
}
