//! Timeouts and counters: idle peers and peers that stop reading are closed,
//! talkative ones are not, and the stats add up to what the test did.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use sockloop::app::echo::Echo;
use sockloop::reactor::{Addr, CloseReason, Config, ConnId, Context, Service};

use crate::common::{Rng, SlowUpstream, TestServer, echo_all, round_trip};

#[test]
fn idle_connections_close_and_talkative_ones_stay() {
    let config = Config {
        idle_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let server = TestServer::start(config, || Echo);
    let mut idle = server.connect();
    let mut talker = server.connect();
    // Talk every 50 ms for over three idle periods.
    for i in 0..20 {
        let msg = format!("ping {i}");
        assert_eq!(round_trip(&mut talker, msg.as_bytes()), msg.as_bytes());
        thread::sleep(Duration::from_millis(50));
    }
    let mut buf = [0; 8];
    assert_eq!(idle.read(&mut buf).expect("EOF on the idle connection"), 0);
    let stats = server.stats();
    assert_eq!(stats.closed_by(CloseReason::Idle), 1);
    assert_eq!(stats.active, 1, "the talkative connection is still open");
    assert_eq!(round_trip(&mut talker, b"still here"), b"still here");
}

#[test]
fn a_peer_that_takes_none_of_its_output_is_closed_by_the_write_timeout() {
    let config = Config {
        write_timeout: Some(Duration::from_millis(300)),
        ..Config::default()
    };
    let server = TestServer::start(config, || Echo);
    let mut silent = server.connect();
    let mut steady = server.connect();
    let writer = thread::spawn(move || {
        let chunk = vec![7; 1 << 20];
        // Ends with an error once the server gives up on us.
        for _ in 0..64 {
            if silent.write_all(&chunk).is_err() {
                return;
            }
        }
    });
    let stats = server.wait_for("the write timeout", |s| {
        s.closed_by(CloseReason::WriteTimeout) == 1
    });
    assert_eq!(stats.active, 1);
    assert_eq!(round_trip(&mut steady, b"unaffected"), b"unaffected");
    writer.join().unwrap();
}

#[test]
fn counters_match_what_the_clients_did() {
    const CLIENTS: u64 = 10;
    let server = TestServer::start(Config::default(), || Echo);
    let mut sent = 0;
    for i in 0..CLIENTS {
        let data = Rng::new(i).bytes(1000 * (i as usize + 1));
        sent += data.len() as u64;
        assert!(echo_all(server.connect(), &data) == data);
    }
    let stats = server.wait_for("every close", |s| s.closed == CLIENTS);
    assert_eq!(stats.accepted, CLIENTS);
    assert_eq!(stats.active, 0);
    assert_eq!(stats.closed_by(CloseReason::Peer), CLIENTS);
    assert_eq!(stats.bytes_in, sent);
    assert_eq!(stats.bytes_out, sent);
    assert_eq!(
        stats.interest_changes,
        2 * CLIENTS,
        "one add and one delete per connection"
    );
    assert!(stats.reads >= CLIENTS && stats.writes >= CLIENTS);
}

/// On each accepted connection, starts a connect to `target` and abandons
/// it at once; counts what it hears about those connects.
struct AbandonsConnects {
    target: std::net::SocketAddr,
    failed: Vec<std::io::ErrorKind>,
}

impl Service for AbandonsConnects {
    type Conn = ();

    fn on_connect(&mut self, ctx: &mut Context<'_>, _: ConnId, _: &Addr) {
        let up = ctx.connect(&self.target.into(), None);
        ctx.abort(up, CloseReason::Local);
    }

    fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
        input.len()
    }

    fn on_connect_failed(&mut self, _: &mut Context<'_>, _: ConnId, error: std::io::Error) {
        self.failed.push(error.kind());
    }
}

#[test]
fn a_service_hears_about_every_connect_it_started_even_one_it_abandoned() {
    let slow = SlowUpstream::new();
    let target = slow.addr;
    let server = TestServer::start_then(
        Config::default(),
        move || AbandonsConnects {
            target,
            failed: Vec::new(),
        },
        |reactor| reactor.service().failed.clone(),
    );
    let _clients: Vec<_> = (0..3).map(|_| server.connect()).collect();
    server.wait_for("three connects started and closed", |s| {
        s.accepted == 3 && s.closed == 3
    });
    assert_eq!(
        server.stop(),
        vec![std::io::ErrorKind::ConnectionAborted; 3],
        "each abandoned connect is reported once"
    );
}
