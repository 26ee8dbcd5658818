//! The raw echo server over real loopback sockets: correctness under
//! concurrency, backpressure, half-close, resets and the connection limit.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use sockloop::app::echo::Echo;
use sockloop::reactor::{CloseReason, Config};

use crate::common::{Rng, TestServer, echo_all, round_trip, wait_until};

fn echo_server(config: Config) -> TestServer {
    TestServer::start(config, || Echo)
}

#[test]
fn two_hundred_clients_each_get_exactly_their_own_bytes() {
    const CLIENTS: u64 = 200;
    const SIZE: usize = 1 << 20;
    let server = echo_server(Config::default());
    thread::scope(|s| {
        for client in 0..CLIENTS {
            let stream = server.connect();
            s.spawn(move || {
                let mut rng = Rng::new(client);
                let data = rng.bytes(SIZE);
                let mut writer = stream.try_clone().unwrap();
                let sent = &data;
                thread::scope(|inner| {
                    inner.spawn(move || {
                        let mut at = 0;
                        while at < sent.len() {
                            let n = rng.range(1, 64 << 10).min(sent.len() - at);
                            writer.write_all(&sent[at..at + n]).expect("write");
                            at += n;
                        }
                    });
                    let mut reader = stream;
                    let mut back = vec![0; SIZE];
                    reader.read_exact(&mut back).expect("read echo");
                    assert!(
                        back == data,
                        "client {client} got bytes that are not its own"
                    );
                });
            });
        }
    });
    let stats = server.wait_for("all connections closed", |s| s.active == 0);
    assert_eq!(stats.accepted, CLIENTS);
    assert_eq!(stats.bytes_in, CLIENTS * SIZE as u64);
    assert_eq!(stats.bytes_out, stats.bytes_in);
}

#[test]
fn a_peer_that_does_not_read_is_held_at_the_watermark() {
    const SIZE: usize = 32 << 20;
    let config = Config::default();
    let bound = config.high_watermark + config.read_chunk;
    let server = echo_server(config);
    let data = Rng::new(7).bytes(SIZE);
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    thread::scope(|s| {
        let sent = &data;
        let sender = s.spawn(move || writer.write_all(sent).expect("write 32 MiB"));

        // The server must stop reading this peer once its backlog passes the watermark.
        let info = wait_until("backpressure on the silent peer", || {
            let conns = server.handle.connections().unwrap();
            conns.into_iter().find(|c| !c.reading)
        });
        assert!(info.pending_output > server_low_watermark(), "{info:?}");
        // Give a broken server time to keep reading, while others are served.
        for round in 0..4 {
            let mut other = server.connect();
            let msg = Rng::new(100 + round).bytes(256 << 10);
            assert!(round_trip(&mut other, &msg) == msg);
            thread::sleep(Duration::from_millis(500));
        }
        let stats = server.stats();
        assert!(
            stats.peak_pending_output <= bound,
            "backlog reached {} > {bound}",
            stats.peak_pending_output
        );
        assert!(
            stats.bytes_in < SIZE as u64,
            "the server kept reading a peer that does not read"
        );

        let mut reader = stream;
        let mut back = vec![0; SIZE];
        reader.read_exact(&mut back).expect("read 32 MiB back");
        assert!(back == data, "bytes came back altered");
        sender.join().unwrap();
    });
    assert!(server.stats().peak_pending_output <= bound);
}

fn server_low_watermark() -> usize {
    Config::default().low_watermark
}

#[test]
fn half_close_gets_everything_back_then_eof() {
    let server = echo_server(Config::default());
    let data = Rng::new(5).bytes(5 << 20);
    let back = echo_all(server.connect(), &data);
    assert_eq!(back.len(), data.len());
    assert!(back == data);
    let stats = server.wait_for("close after FIN", |s| s.closed == 1);
    assert_eq!(stats.closed_by(CloseReason::Peer), 1);
}

#[test]
fn a_reset_mid_stream_disturbs_no_one() {
    let server = echo_server(Config::default());
    let mut steady = server.connect();
    let first = Rng::new(1).bytes(64 << 10);
    assert!(round_trip(&mut steady, &first) == first);

    let mut rude = server.connect();
    rude.write_all(&Rng::new(2).bytes(1 << 20)).unwrap();
    let mut some = [0; 1024];
    rude.read_exact(&mut some).unwrap();
    // Linger 0: close sends RST instead of FIN, with echoes still unread.
    setsockopt(
        &rude,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .unwrap();
    drop(rude);

    let stats = server.wait_for("the reset connection to close", |s| s.closed == 1);
    assert_eq!(
        stats.closed_by(CloseReason::Error(ErrorKind::ConnectionReset)),
        1
    );
    let second = Rng::new(3).bytes(1 << 20);
    assert!(round_trip(&mut steady, &second) == second);
    drop(steady);
    server.wait_for("active back to 0", |s| s.active == 0);
}

#[test]
fn connections_over_the_limit_are_closed_and_the_rest_keep_working() {
    let config = Config {
        max_conns: 10,
        ..Config::default()
    };
    let server = echo_server(config);
    let mut clients: Vec<TcpStream> = (0..10).map(|_| server.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("hello from {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    let mut eleventh = server.connect();
    let mut buf = [0; 16];
    match eleventh.read(&mut buf) {
        Ok(0) => {}
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        other => panic!("the 11th connection should be closed, got {other:?}"),
    }
    let stats = server.stats();
    assert_eq!(stats.closed_by(CloseReason::Limit), 1);
    assert_eq!(stats.active, 10);
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("still here {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    for c in &clients {
        c.shutdown(Shutdown::Both).unwrap();
    }
}
