//! The relay's upstreams failing and balanced: a refused or timed-out connect
//! is tried again on the next upstream, so every client is served, its early
//! bytes neither lost nor doubled; each upstream is tried at most once per
//! client; a failed upstream is skipped for its down time instead of being
//! tried for every client, and comes back; least-conn sends new clients
//! where the fewest pairs are open.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use sockloop::app::echo::Echo;
use sockloop::app::relay::{Balance, Relay};
use sockloop::reactor::{Addr, CloseReason, Config};

use crate::common::{
    IO_TIMEOUT, LogFile, Rng, Server, SlowUpstream, TestServer, echo_all, round_trip, wait_until,
};

/// A port nobody listens on: a connect to it is refused.
fn refusing() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap()
}

fn relay(upstreams: &[SocketAddr]) -> Relay {
    Relay::new(upstreams.iter().copied().map(Addr::from).collect())
}

/// Copying, and splice(2) where the OS has it.
const SPLICE_MODES: &[bool] = if sockloop::sys::SPLICE {
    &[false, true]
} else {
    &[false]
};

#[test]
fn every_client_is_served_past_a_refusing_upstream() {
    let echo = TestServer::start(Config::default(), || Echo);
    let upstreams = [refusing(), echo.addr];
    // Never skipped: each client meets the refusal, and goes on to the echo.
    let relay = TestServer::start(Config::default(), move || {
        relay(&upstreams).with_down_time(Duration::ZERO)
    });
    for i in 0..10 {
        let mut client = relay.connect();
        let msg = format!("client {i}");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
    }
    let stats = relay.wait_for("every refusal counted", |s| s.connect_failed == 10);
    assert_eq!(stats.connected, 10);
    assert_eq!(echo.stats().accepted, 10);
}

#[test]
fn a_client_whose_upstream_times_out_gets_every_early_byte_through_the_next_once() {
    for &splice in SPLICE_MODES {
        let black_hole = SlowUpstream::new();
        let echo = TestServer::start(Config::default(), || Echo);
        let upstreams = [black_hole.addr, echo.addr];
        let config = Config {
            connect_timeout: Duration::from_millis(300),
            ..Config::default()
        };
        let relay = TestServer::start(config, move || {
            let relay = relay(&upstreams);
            if splice { relay.with_splice() } else { relay }
        });
        // All sent, FIN included, while the first connect waits for its
        // timeout: held for an upstream that never comes.
        let data = Rng::new(7).bytes(512 << 10);
        let back = echo_all(relay.connect(), &data);
        assert!(
            back == data,
            "splice {splice}: {} bytes back of {}",
            back.len(),
            data.len()
        );
        let stats = relay.wait_for("both sides closed", |s| s.active == 0);
        assert_eq!(stats.connect_failed, 1, "splice {splice}");
        assert_eq!(
            stats.closed_by(CloseReason::Error(std::io::ErrorKind::TimedOut)),
            1
        );
        drop(black_hole);
    }
}

#[test]
fn a_client_is_closed_once_every_upstream_has_failed_once() {
    let upstreams = [refusing(), refusing()];
    let relay = TestServer::start(Config::default(), move || relay(&upstreams));
    for round in 1..=2 {
        let mut client = relay.connect();
        // The relay may have closed it already.
        let _ = client.write_all(b"anyone?");
        let mut buf = [0; 8];
        assert_eq!(client.read(&mut buf).unwrap_or(0), 0, "closed");
        // Both down after the first client: tried anyway, each once.
        relay.wait_for("each upstream tried once more", |s| {
            s.connect_failed == 2 * round
        });
    }
    assert_eq!(relay.stats().connect_failed, 4);
}

#[test]
fn a_refusing_upstream_is_skipped_for_its_down_time_not_tried_for_every_client() {
    let echo = TestServer::start(Config::default(), || Echo);
    let upstreams = [refusing(), echo.addr];
    let relay = TestServer::start(Config::default(), move || {
        relay(&upstreams).with_down_time(Duration::from_secs(600))
    });
    for i in 0..20 {
        let mut client = relay.connect();
        let msg = format!("client {i}");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
    }
    // Round-robin would have sent half of them to it.
    assert_eq!(relay.stats().connect_failed, 1);
    assert_eq!(echo.stats().accepted, 20);
}

#[test]
fn an_upstream_back_up_is_used_again_after_its_down_time_and_logged() {
    let echo = Server::start(&[], &["echo"], std::process::Stdio::null());
    let down = refusing();
    let log = LogFile::new("relay-upstreams");
    let args = [
        "relay",
        "--upstream",
        &down.to_string(),
        "--upstream",
        &echo.addr().to_string(),
        "--upstream-down-time",
        "200ms",
    ];
    let relay = Server::start(&[], &args, log.stdio());
    let mut first = relay.connect();
    assert_eq!(round_trip(&mut first, b"first"), b"first");
    wait_until("the down upstream logged", || {
        log.read()
            .contains(&format!("upstream {down} is down"))
            .then_some(())
    });

    let back = TestServer::start_on(down, Config::default(), || Echo);
    // New clients, until one is sent to it again: after its down time (or
    // two, if a try came just before it was back).
    wait_until("a client on the upstream that came back", || {
        let mut client = relay.connect();
        assert_eq!(round_trip(&mut client, b"again"), b"again");
        (back.stats().accepted > 0).then_some(())
    });
    wait_until("the upstream logged back", || {
        log.read()
            .contains(&format!("upstream {down} is back"))
            .then_some(())
    });
}

#[test]
fn least_conn_sends_new_clients_away_from_the_busy_upstream() {
    let a = TestServer::start(Config::default(), || Echo);
    let b = TestServer::start(Config::default(), || Echo);
    let upstreams = [a.addr, b.addr];
    let relay = TestServer::start(Config::default(), move || {
        relay(&upstreams).with_balance(Balance::LeastConn)
    });
    // A long-lived client: on the first upstream (a tie goes in turn).
    let mut long_lived = relay.connect();
    assert_eq!(round_trip(&mut long_lived, b"stay"), b"stay");
    assert_eq!(a.stats().accepted, 1);
    // Short-lived clients, one after another: each finds B with no pair
    // open and A with one, and goes to B. Round-robin would alternate.
    for i in 0..4 {
        let mut client = relay.connect();
        let msg = format!("short {i}");
        assert_eq!(round_trip(&mut client, msg.as_bytes()), msg.as_bytes());
        drop(client);
        relay.wait_for("the short-lived pair closed", |s| s.active == 2);
    }
    assert_eq!(a.stats().accepted, 1);
    assert_eq!(b.stats().accepted, 4);
    assert_eq!(round_trip(&mut long_lived, b"still here"), b"still here");
}

#[test]
fn send_proxy_goes_once_to_the_upstream_that_answers_after_a_refusal() {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let down = refusing();
    let args = [
        "relay",
        "--upstream",
        &down.to_string(),
        "--upstream",
        &upstream.local_addr().unwrap().to_string(),
        "--send-proxy",
        "v1",
    ];
    let relay = Server::start(&[], &args, std::process::Stdio::null());
    let mut client = relay.connect();
    let port = client.local_addr().unwrap().port();
    client.write_all(b"early").unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let header = format!("PROXY TCP4 127.0.0.1 127.0.0.1 {port} {}\r\n", relay.port);
    let mut got = vec![0; header.len() + 5];
    up.read_exact(&mut got).unwrap();
    assert_eq!(
        String::from_utf8_lossy(&got),
        format!("{header}early"),
        "one header, then the client's bytes once"
    );
    drop(client);
    let mut rest = Vec::new();
    up.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"", "nothing more");
}
