//! Several reactors in one process (`--threads`): the kernel spreads the
//! connections over their listeners, every byte is echoed whichever took
//! it, SIGTERM drains them all, and one that fails takes the process down
//! with its name rather than leaving it half alive.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use sockloop::reactor::{Addr, Config, ConnId, Context, ListenOptions, Reactor, Service};
use sockloop::threads::{Options, Supervisor};

use crate::common::{
    IO_TIMEOUT, LogFile, Server, accepted_per_reactor, round_trip, stream_through_sigterm,
    wait_until,
};

#[test]
fn two_reactors_each_take_some_of_two_hundred_connections_and_echo_every_one() {
    const CONNS: usize = 200;
    let log = LogFile::new("threads-spread");
    let args = ["echo", "--threads", "2", "--stats-interval", "100ms"];
    let mut server = Server::start(&[], &args, log.stdio());
    let addr = server.addr();
    // All open at once, so that each reactor holds its share at the same time.
    let mut clients: Vec<TcpStream> = (0..CONNS).map(|_| server.connect()).collect();
    for (i, client) in clients.iter_mut().enumerate() {
        let message = format!("client {i} of {CONNS} at {addr}");
        assert_eq!(round_trip(client, message.as_bytes()), message.as_bytes());
    }
    // The periodic line and the SIGUSR1 table cover both reactors.
    wait_until("a stats line summed over both reactors", || {
        log.read()
            .contains(&format!("stats: active {CONNS}, accepted {CONNS},"))
            .then_some(())
    });
    server.signal(Signal::SIGUSR1);
    let table = wait_until("the connection table", || {
        let text = log.read();
        text.contains(&format!("\n{CONNS} connections"))
            .then_some(text)
    });
    for reactor in ["0/c", "1/c"] {
        assert!(
            table.lines().any(|l| l.starts_with(reactor)),
            "no row of reactor {reactor}:\n{table}"
        );
    }
    drop(clients);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", log.read());
    let text = log.read();
    let accepted = accepted_per_reactor(&text);
    assert_eq!(accepted.len(), 2, "{text}");
    assert_eq!(accepted.iter().sum::<u64>(), CONNS as u64, "{text}");
    assert!(accepted.iter().all(|&n| n > 0), "{accepted:?}");
    assert!(
        text.contains(&format!("stopped: active 0, accepted {CONNS}, ")),
        "no summed line:\n{text}"
    );
}

#[test]
fn sigterm_drains_every_reactor_and_the_process_exits_cleanly() {
    let log = LogFile::new("threads-sigterm");
    let mut server = Server::start(&[], &["echo", "--threads", "2"], log.stdio());
    let addr = server.addr();
    let status = stream_through_sigterm(&mut server, addr, 16);
    assert!(status.success(), "{status}:\n{}", log.read());
    let text = log.read();
    assert_eq!(accepted_per_reactor(&text).len(), 2, "{text}");
    assert_eq!(text.matches("shutting down:").count(), 2, "{text}");
}

#[test]
fn a_unix_listener_takes_one_reactor_and_more_are_refused_by_name() {
    let path = std::env::temp_dir().join(format!("sockloop-threads-{}.sock", std::process::id()));
    let listen = format!("unix:{}", path.display());
    let exited = Server::spawn(
        crate::common::sockloop(&[], &["echo", "--threads", "2", "--listen", &listen])
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
    )
    .finish();
    assert!(!exited.status.success());
    assert!(
        exited.stderr.contains("--threads 2 with a unix: listener"),
        "{}",
        exited.stderr
    );
    assert!(!path.exists(), "a socket file was left behind");
}

/// Takes whatever comes; if `panics`, panics at its first client instead.
struct Fragile {
    panics: bool,
}

impl Service for Fragile {
    type Conn = ();

    fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) {
        assert!(!self.panics, "fragile service met a client");
    }

    fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
        input.len()
    }
}

#[test]
fn a_reactor_that_panics_stops_the_others_and_is_named_in_the_error() {
    let any_port: Addr = "127.0.0.1:0".parse().unwrap();
    let mut reactors = Vec::new();
    let mut addrs = Vec::new();
    for panics in [false, true] {
        let service = Fragile { panics };
        let mut reactor = Reactor::new(Config::default(), service).unwrap();
        let addr = reactor
            .listen(&any_port, &ListenOptions::default())
            .unwrap();
        addrs.push(addr.ip().unwrap());
        reactors.push(reactor);
    }
    let mut healthy = TcpStream::connect(addrs[0]).unwrap();
    healthy.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let fragile: SocketAddr = addrs[1];
    let trigger = thread::spawn(move || {
        thread::sleep(Duration::from_millis(100));
        TcpStream::connect(fragile)
    });
    let started = Instant::now();
    let error = Supervisor::new()
        .and_then(|supervisor| supervisor.run(reactors, &Options::default()))
        .expect_err("a reactor panicked");
    assert!(started.elapsed() < IO_TIMEOUT);
    assert_eq!(error.kind(), io::ErrorKind::Other);
    assert!(
        error
            .to_string()
            .contains("reactor 1 panicked: fragile service met a client"),
        "{error}"
    );
    // The healthy reactor was stopped too: its client sees the end.
    let mut byte = [0; 1];
    let end = io::Read::read(&mut healthy, &mut byte);
    assert!(matches!(end, Ok(0)) || end.is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset));
    trigger.join().unwrap().unwrap();
}
