//! One reactor holds 9,000 concurrent connections, both ends in this
//! process (18,000 descriptors): each echoes one message, every echo is
//! checked, and all close cleanly, the server's connection count back to 0.
//! The count is sized from the descriptor limit; under a lower limit the
//! test holds fewer, and says so.
//!
//! Alone in its file: the tests of one file share one process, and so its
//! descriptor limit.

#![deny(unsafe_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::resource::{Resource, getrlimit};

use sockloop::app::echo::Echo;
use sockloop::reactor::{CloseReason, Config, ListenOptions, Reactor};

const WANTED: usize = 9_000;
/// Descriptors left for the test harness, the poller, the waker and the listener.
const RESERVE: usize = 64;
/// For the connection count to come back to 0 after the clients close.
const CLOSE_DEADLINE: Duration = Duration::from_secs(20);

#[test]
fn nine_thousand_connections_echo_once_and_close_cleanly() {
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    let fit = usize::try_from(soft)
        .unwrap_or(usize::MAX)
        .saturating_sub(RESERVE)
        / 2;
    let n = WANTED.min(fit);
    if n < WANTED {
        println!(
            "descriptor limit {soft}: holding {n} connections, not {WANTED} (two descriptors each)"
        );
    }
    assert!(
        n >= 100,
        "descriptor limit {soft} leaves room for {n} connections"
    );

    // The timers every connection carries in a real server: idle and write.
    let config = Config {
        idle_timeout: Some(Duration::from_secs(60)),
        write_timeout: Some(Duration::from_secs(30)),
        ..Config::default()
    };
    let (tx, rx) = mpsc::channel();
    let server = thread::spawn(move || -> std::io::Result<()> {
        let mut reactor = Reactor::new(config, Echo)?;
        let addr = reactor.listen(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default())?;
        tx.send((addr, reactor.handle())).unwrap();
        reactor.run()
    });
    let (addr, handle) = rx.recv().expect("the reactor starts");
    let addr = addr.ip().expect("a TCP address");

    let mut clients: Vec<TcpStream> = (0..n)
        .map(|i| {
            let client = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {i}: {e}"));
            client
                .set_read_timeout(Some(Duration::from_secs(10)))
                .unwrap();
            client
        })
        .collect();
    let message = |i: usize| format!("message {i:05} of {n}\n");
    for (i, client) in clients.iter_mut().enumerate() {
        client.write_all(message(i).as_bytes()).unwrap();
    }
    let mut echoed = 0;
    for (i, client) in clients.iter_mut().enumerate() {
        let expected = message(i);
        let mut got = vec![0; expected.len()];
        client
            .read_exact(&mut got)
            .unwrap_or_else(|e| panic!("echo on connection {i}: {e}"));
        assert_eq!(
            got,
            expected.as_bytes(),
            "connection {i} got another's bytes"
        );
        echoed += 1;
    }
    assert_eq!(echoed, n);

    let stats = handle.stats().expect("stats");
    assert_eq!(
        (stats.accepted, stats.active),
        (n as u64, n as u64),
        "every connection accepted and open at once"
    );
    assert_eq!(stats.bytes_out, stats.bytes_in);

    drop(clients);
    let deadline = Instant::now() + CLOSE_DEADLINE;
    let stats = loop {
        let stats = handle.stats().expect("stats");
        if stats.active == 0 || Instant::now() > deadline {
            break stats;
        }
        thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(stats.active, 0, "connections left open: {stats:?}");
    assert_eq!(
        stats.closed_by(CloseReason::Peer),
        n as u64,
        "each closed on its peer's FIN"
    );
    handle.stop().expect("stop");
    server.join().expect("reactor thread").expect("reactor");
    println!("{n} connections held, echoed and closed");
}
