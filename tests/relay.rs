//! The relay through real sockets: bytes intact both ways under load,
//! half-close carried through, upstream failure and recovery, bounded
//! buffering against a client that does not read, and round-robin.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;

use common::{IO_TIMEOUT, Rng, Server, TestServer, echo_all, round_trip, wait_until};
use sockloop::app::echo::Echo;
use sockloop::app::relay::Relay;
use sockloop::reactor::{CloseReason, Config};

/// Block `k` of client `seed`'s stream; writer and reader both regenerate it.
fn block(seed: u64, k: u64) -> Vec<u8> {
    Rng::new(seed << 32 | k).bytes(BLOCK)
}

const BLOCK: usize = 64 << 10;

/// Streams `blocks` blocks through `stream` and checks every byte that comes back.
fn stream_and_verify(stream: TcpStream, seed: u64, blocks: u64) {
    let mut writer = stream.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            for k in 0..blocks {
                writer.write_all(&block(seed, k)).expect("write");
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut reader = stream;
        let mut buf = vec![0; BLOCK];
        for k in 0..blocks {
            reader.read_exact(&mut buf).expect("read echo");
            assert!(buf == block(seed, k), "client {seed}: block {k} altered");
        }
        assert_eq!(
            reader.read(&mut buf).expect("EOF"),
            0,
            "client {seed}: bytes after the echo"
        );
    });
}

fn hundred_clients_times_8_mib(relay_flags: &[&str]) {
    let echo = Server::start(&[], &["echo"], Stdio::null());
    let upstream = format!("127.0.0.1:{}", echo.port);
    let mut args = vec!["relay", "--upstream", &upstream];
    args.extend_from_slice(relay_flags);
    let relay = Server::start(&[], &args, Stdio::null());
    thread::scope(|s| {
        for seed in 0..100 {
            let stream = relay.connect();
            s.spawn(move || stream_and_verify(stream, seed, 128));
        }
    });
}

#[test]
fn hundred_clients_times_8_mib_through_relay_and_echo_binaries() {
    hundred_clients_times_8_mib(&[]);
}

#[test]
fn hundred_clients_times_8_mib_through_the_splice_relay() {
    hundred_clients_times_8_mib(&["--splice"]);
}

fn half_close_passes_through(splice: bool) {
    let upstream = TestServer::start(Config::default(), || Echo);
    let addr = upstream.addr;
    let relay = TestServer::start(Config::default(), move || relay_to(vec![addr], splice));
    let data = Rng::new(9).bytes(5 << 20);
    let back = echo_all(relay.connect(), &data);
    assert!(
        back == data,
        "got {} of {} bytes back",
        back.len(),
        data.len()
    );
    // The upstream saw our FIN: it closed as a peer that finished.
    let up = upstream.wait_for("upstream close", |s| s.closed == 1);
    assert_eq!(up.closed_by(CloseReason::Peer), 1);
    let stats = relay.wait_for("both relay sides closed", |s| {
        s.closed == 2 && s.active == 0
    });
    assert_eq!(stats.bytes_in, 2 * data.len() as u64, "exact byte counts");
    assert_eq!(stats.bytes_out, 2 * data.len() as u64);
    if splice {
        // All but what arrived before the upstream was up went by splice.
        assert!(stats.bytes_spliced > data.len() as u64, "{stats:?}");
    } else {
        assert_eq!(stats.bytes_spliced, 0);
    }
}

fn relay_to(upstreams: Vec<SocketAddr>, splice: bool) -> Relay {
    let relay = Relay::new(upstreams);
    if splice { relay.with_splice() } else { relay }
}

#[test]
fn half_close_passes_through_the_relay() {
    half_close_passes_through(false);
}

#[test]
fn half_close_passes_through_the_splice_relay() {
    half_close_passes_through(true);
}

#[test]
fn upstream_down_closes_clients_and_recovery_needs_no_restart() {
    let port_holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let down: SocketAddr = port_holder.local_addr().unwrap();
    drop(port_holder);
    let relay = TestServer::start(Config::default(), move || Relay::new(vec![down]));
    for _ in 0..5 {
        let mut client = relay.connect();
        let mut buf = [0; 8];
        let n = client.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a client of a dead upstream must be closed");
    }
    let stats = relay.wait_for("every failure counted", |s| s.connect_failed == 5);
    assert_eq!(stats.connected, 0);

    let _upstream = TestServer::start_on(down, Config::default(), || Echo);
    let mut client = relay.connect();
    assert_eq!(round_trip(&mut client, b"back again"), b"back again");
}

fn a_client_that_never_reads_holds_the_upstream(splice: bool) {
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = source.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let config = Config::default();
    let bound = config.high_watermark + config.read_chunk;
    let relay = TestServer::start(config, move || relay_to(vec![addr], splice));
    thread::scope(|s| {
        // An upstream that sends for as long as anyone takes its bytes.
        s.spawn(|| {
            let (mut up, _) = source.accept().unwrap();
            up.set_write_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
            let chunk = vec![1; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = up.write_all(&chunk)
                    && e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
                {
                    return;
                }
            }
        });
        let silent = relay.connect();
        let conns = wait_until("the relay to stop reading the upstream", || {
            let conns = relay.handle.connections().unwrap();
            let stalled = conns.len() == 2
                && conns
                    .iter()
                    .any(|c| c.state == "backpressured" && c.pending_output == 0)
                && conns.iter().any(|c| c.pending_output > 0);
            stalled.then_some(conns)
        });
        let client_side = conns
            .iter()
            .find(|c| c.pending_output > 0)
            .expect("client backlog");
        assert!(client_side.pending_output <= bound, "{client_side:?}");
        assert!(relay.stats().peak_pending_output <= bound);
        stop.store(true, Ordering::Relaxed);
        drop(silent);
    });
}

#[test]
fn a_client_that_never_reads_holds_the_upstream_not_memory() {
    a_client_that_never_reads_holds_the_upstream(false);
}

#[test]
fn a_client_that_never_reads_holds_the_upstream_under_splice() {
    a_client_that_never_reads_holds_the_upstream(true);
}

#[test]
fn round_robin_splits_ten_clients_five_and_five() {
    let a = TestServer::start(Config::default(), || Echo);
    let b = TestServer::start(Config::default(), || Echo);
    let upstreams = vec![a.addr, b.addr];
    let relay = TestServer::start(Config::default(), move || Relay::new(upstreams));
    let mut clients: Vec<TcpStream> = (0..10).map(|_| relay.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let msg = format!("client {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(a.stats().accepted, 5);
    assert_eq!(b.stats().accepted, 5);
}

#[test]
fn an_upstream_that_never_answers_times_out_and_the_client_is_closed() {
    use sockloop::sys::{ListenOptions, Listener};
    // A listener that never accepts, its queue already full: further SYNs
    // are dropped, so a connect neither succeeds nor fails.
    let black_hole = Listener::bind(
        "127.0.0.1:0".parse().unwrap(),
        &ListenOptions { backlog: 0 },
    )
    .unwrap();
    let addr = black_hole.local_addr();
    // Backlog 0 holds one: this connection fills it.
    let _filler = TcpStream::connect(addr).unwrap();
    let config = Config {
        connect_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    };
    let relay = TestServer::start(config, move || Relay::new(vec![addr]));
    let mut client = relay.connect();
    let mut buf = [0; 8];
    assert_eq!(
        client.read(&mut buf).unwrap_or(0),
        0,
        "the client must be closed"
    );
    let stats = relay.wait_for("the timeout counted", |s| s.connect_failed == 1);
    assert_eq!(
        stats.closed_by(CloseReason::Error(std::io::ErrorKind::TimedOut)),
        2
    );
}
