//! `relay --upstreams-file FILE`, read again on SIGHUP: new clients go to
//! the new set, pairs already open keep their upstream, and a file with a
//! bad line keeps the set there is and says which line.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::Stdio;

use nix::sys::signal::Signal;

use crate::common::{IO_TIMEOUT, LogFile, LogLines, Server, round_trip, sockloop, wait_until};
use crate::metrics::{scrape, value, with_metrics};

/// An upstream the test plays itself: it sees which connections reach it.
struct Upstream {
    listener: TcpListener,
    addr: String,
}

impl Upstream {
    fn new() -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        Upstream { listener, addr }
    }

    /// The connection the relay opened to this upstream (bounded wait).
    fn accept(&self) -> TcpStream {
        let what = format!("a connection at upstream {}", self.addr);
        let stream = wait_until(&what, || match self.listener.accept() {
            Ok((stream, _)) => Some(stream),
            Err(e) if e.kind() == ErrorKind::WouldBlock => None,
            Err(e) => panic!("accept at {}: {e}", self.addr),
        });
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// Whether a connection is waiting here.
    fn has_waiting(&self) -> bool {
        match self.listener.accept() {
            Ok(_) => true,
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => panic!("accept at {}: {e}", self.addr),
        }
    }
}

/// `message` from one end to the other, read in full there.
fn carries(from: &mut TcpStream, to: &mut TcpStream, message: &[u8]) {
    from.write_all(message).unwrap();
    let mut got = vec![0; message.len()];
    to.read_exact(&mut got).unwrap();
    assert_eq!(got, message);
}

/// A client of the relay, and the upstream end of its pair at `upstream`;
/// both directions checked.
fn pair_through(relay: &Server, upstream: &Upstream) -> (TcpStream, TcpStream) {
    let mut client = relay.connect();
    let mut far = upstream.accept();
    carries(&mut client, &mut far, b"hello upstream");
    carries(&mut far, &mut client, upstream.addr.as_bytes());
    (client, far)
}

#[test]
fn sighup_sends_new_clients_to_the_new_upstreams_and_a_bad_file_keeps_them() {
    let (a, b) = (Upstream::new(), Upstream::new());
    let file = LogFile::new("upstreams");
    std::fs::write(file.path(), format!("# the first set\n\n  {}  \n", a.addr)).unwrap();
    let path = file.path().to_str().unwrap();
    let (relay, metrics, mut log) = with_metrics(&["relay", "--upstreams-file", path]);
    let (mut old_client, mut old_far) = pair_through(&relay, &a);
    assert_eq!(
        value(&scrape(&metrics), "sockloop_upstreams_generation"),
        1.0
    );

    std::fs::write(file.path(), format!("{}\n", b.addr)).unwrap();
    relay.signal(Signal::SIGHUP);
    let taken = log.wait_for("upstreams of generation 2");
    assert!(taken.contains(&b.addr), "{taken}");
    let new_pair = pair_through(&relay, &b);
    assert!(
        !a.has_waiting(),
        "a client after the reload went to the old upstream"
    );
    // The pair opened before the reload still talks to its upstream.
    carries(&mut old_client, &mut old_far, b"still here");
    carries(&mut old_far, &mut old_client, b"and here");

    std::fs::write(file.path(), format!("{}\nnot-an-address:99\n", a.addr)).unwrap();
    relay.signal(Signal::SIGHUP);
    let refused = log.wait_for("line 2");
    assert!(refused.contains("WARN"), "{refused}");
    assert!(refused.contains(path), "the file is not named: {refused}");
    assert!(refused.contains("`not-an-address:99`"), "{refused}");
    assert!(
        refused.contains("keeping the upstreams of generation 2"),
        "{refused}"
    );
    let kept = pair_through(&relay, &b);
    assert!(!a.has_waiting(), "the refused file's upstream was used");

    let samples = wait_until("reactor 0 on generation 2", || {
        let samples = scrape(&metrics);
        (value(&samples, "sockloop_upstreams_generation") == 2.0).then_some(samples)
    });
    assert_eq!(
        value(&samples, "sockloop_upstreams_reloads_rejected_total"),
        1.0
    );
    let down = |upstream: &str| format!("sockloop_upstream_down{{upstream=\"{upstream}\"}}");
    assert_eq!(value(&samples, &down(&b.addr)), 0.0);
    assert!(
        !samples.contains_key(&down(&a.addr)),
        "the old set is still shown"
    );
    drop((new_pair, kept, old_client, old_far, relay));
}

#[test]
fn with_several_reactors_every_one_takes_the_new_upstreams() {
    let (a, b) = (Upstream::new(), Upstream::new());
    let file = LogFile::new("upstreams");
    std::fs::write(file.path(), format!("{}\n", a.addr)).unwrap();
    let path = file.path().to_str().unwrap();
    let args = ["relay", "--upstreams-file", path, "--threads", "2"];
    let mut relay = Server::start(&[], &args, Stdio::piped());
    let mut log = LogLines::new(relay.take_stderr());
    let (mut old_client, mut old_far) = pair_through(&relay, &a);
    std::fs::write(file.path(), format!("{}\n", b.addr)).unwrap();
    relay.signal(Signal::SIGHUP);
    log.wait_for("upstreams of generation 2");
    // The kernel spreads clients over the reactors by their ports: of
    // eight, each reactor almost always gets some (not asserted).
    let new_pairs: Vec<_> = (0..8).map(|_| pair_through(&relay, &b)).collect();
    assert!(
        !a.has_waiting(),
        "a client after the reload went to the old upstream"
    );
    carries(&mut old_client, &mut old_far, b"still here");
    carries(&mut old_far, &mut old_client, b"and here");
    drop((new_pairs, old_client, old_far, relay));
}

#[test]
fn a_reload_that_names_the_relay_itself_is_refused() {
    let a = Upstream::new();
    let file = LogFile::new("upstreams");
    std::fs::write(file.path(), format!("{}\n", a.addr)).unwrap();
    let path = file.path().to_str().unwrap();
    let mut relay = Server::start(&[], &["relay", "--upstreams-file", path], Stdio::piped());
    let mut log = LogLines::new(relay.take_stderr());
    std::fs::write(file.path(), format!("127.0.0.1:{}\n", relay.port)).unwrap();
    relay.signal(Signal::SIGHUP);
    let refused = log.wait_for("is this relay itself");
    assert!(
        refused.contains("keeping the upstreams of generation 1"),
        "{refused}"
    );
    pair_through(&relay, &a);
}

#[test]
fn a_relay_refuses_to_start_on_an_upstreams_file_with_a_bad_line() {
    let file = LogFile::new("upstreams");
    std::fs::write(file.path(), "127.0.0.1:7001\n\n127.0.0.1:7002 7003\n").unwrap();
    let path = file.path().to_str().unwrap();
    let mut command = sockloop(
        &[],
        &["relay", "--upstreams-file", path, "--listen", "127.0.0.1:0"],
    );
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let exited = Server::spawn(&mut command).finish_or_stop();
    assert_eq!(exited.status.code(), Some(2), "{}", exited.stderr);
    let named = format!("--upstreams-file {path}: line 3 `127.0.0.1:7002 7003`: ");
    assert!(exited.stderr.contains(&named), "{}", exited.stderr);
}

#[test]
fn sighup_to_a_server_with_nothing_to_reload_is_logged_and_ignored() {
    let mut echo = Server::start(&[], &["echo"], Stdio::piped());
    let mut log = LogLines::new(echo.take_stderr());
    log.wait_for("serving on");
    echo.signal(Signal::SIGHUP);
    let line = log.wait_for("SIGHUP");
    assert!(line.contains("INFO") && line.contains("ignored"), "{line}");
    let mut client = echo.connect();
    assert_eq!(round_trip(&mut client, b"alive"), b"alive");
}

/// The simulated OS: a relay whose set is reloaded (and a SIGHUP its
/// reactor takes itself) in virtual time, every step checked.
mod simulated {
    use std::sync::Arc;

    use sockloop::app::relay::{CurrentUpstreams, Relay};
    use sockloop::reactor::{Addr, Config, ListenOptions, Reactor};
    use sockloop::sys::SignalKind;

    use crate::sim::{Client, Sim, World, world};

    const LISTEN: &str = "10.0.0.1:80";
    const A: &str = "10.0.0.9:7";
    const B: &str = "10.0.0.10:7";

    /// Turns until `client` has `message` back from its echoing upstream.
    fn echoed(reactor: &mut Reactor<Relay, Sim>, client: &mut Client, message: &[u8]) {
        world(|w| w.client_send(client, message));
        for _ in 0..50 {
            reactor.turn().unwrap();
            world(|w| {
                w.run_upstreams();
                w.client_read(client, 4096);
            });
            if client.received.ends_with(message) {
                return;
            }
        }
        panic!("{message:?} never came back: {:?}", client.received);
    }

    /// The upstream address of each pair, sorted.
    fn upstreams_in_use(reactor: &Reactor<Relay, Sim>) -> Vec<String> {
        let mut peers: Vec<String> = reactor
            .connections()
            .iter()
            .map(|c| c.peer.to_string())
            .filter(|peer| peer == A || peer == B)
            .collect();
        peers.sort();
        peers
    }

    #[test]
    fn a_reloaded_set_takes_new_clients_and_sighup_to_the_reactor_ends_nothing() {
        World::install(4096, 64, Vec::new());
        let (listen, a, b): (Addr, Addr, Addr) = (
            LISTEN.parse().unwrap(),
            A.parse().unwrap(),
            B.parse().unwrap(),
        );
        world(|w| {
            w.add_upstream(a.clone(), false);
            w.add_upstream(b.clone(), false);
        });
        let current = Arc::new(CurrentUpstreams::new(vec![a]));
        let relay = Relay::new(current.latest().addrs.clone()).with_reloads(current.clone());
        let mut reactor = Reactor::<Relay, Sim>::with_os(Config::default(), relay).unwrap();
        reactor.handle_signals().unwrap();
        reactor.listen(&listen, &ListenOptions::default()).unwrap();
        let mut old = world(|w| w.connect_client(&listen)).unwrap();
        echoed(&mut reactor, &mut old, b"first");

        assert_eq!(current.reload(Ok::<_, ()>(vec![b])), Ok(2));
        reactor.handle().wake().unwrap();
        world(|w| w.raise_signal(SignalKind::Reload));
        let mut new = world(|w| w.connect_client(&listen)).unwrap();
        echoed(&mut reactor, &mut new, b"second");
        echoed(&mut reactor, &mut old, b"third");
        let mut both = [A, B];
        both.sort();
        assert_eq!(upstreams_in_use(&reactor), both);
        assert_eq!(world(|w| w.signals_pending()), 0, "SIGHUP was never taken");
        assert!(reactor.is_running(), "SIGHUP ended the reactor");
        assert_eq!(reactor.service().open_pairs(), 2);
        drop(reactor);
        World::uninstall();
    }
}
