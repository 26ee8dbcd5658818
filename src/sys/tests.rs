//! The contract of this module, checked on whichever backend the build has:
//! each test here must pass on every OS.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use super::os::{Listen, Poll, Readiness, Register, Splice, Stream, Wake};
use super::*;

const WAKE: u64 = u64::MAX;
const CONN: u64 = 9;
/// Long enough for anything that should happen; waits end sooner when it does.
const BOUND: Duration = Duration::from_secs(5);

fn listener() -> Listener {
    let addr = "127.0.0.1:0".parse().unwrap();
    Listener::bind(&addr, &ListenOptions::default()).unwrap()
}

/// A connected pair: our accepted socket, and the client end.
fn pair(listener: &Listener) -> (Socket, TcpStream) {
    let client = TcpStream::connect(listener.local_addr().ip().unwrap()).unwrap();
    client.set_read_timeout(Some(BOUND)).unwrap();
    let start = Instant::now();
    loop {
        match listener.accept() {
            Ok((socket, _)) => return (socket, client),
            Err(AcceptError::WouldBlock) if start.elapsed() < BOUND => thread::yield_now(),
            Err(e) => panic!("accept: {e:?}"),
        }
    }
}

/// The events of one wait of at most `timeout`.
fn wait(poller: &mut Poller, timeout: Duration) -> Vec<Event> {
    let n = poller.wait(Some(timeout)).unwrap();
    (0..n).map(|i| poller.event(i)).collect()
}

fn tokens(events: &[Event]) -> Vec<u64> {
    events.iter().map(Event::token).collect()
}

/// The one event of the next wait, which must be `token`'s.
fn only_event(poller: &mut Poller, token: u64) -> Event {
    let events = wait(poller, BOUND);
    assert_eq!(tokens(&events), [token]);
    events[0]
}

#[test]
fn a_wake_from_another_thread_ends_a_wait_and_needs_no_acknowledging() {
    let mut poller = Poller::new(8, WAKE).unwrap();
    for _ in 0..2 {
        let waker = poller.waker();
        let thread = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            waker.wake()
        });
        let start = Instant::now();
        only_event(&mut poller, WAKE);
        assert!(start.elapsed() < BOUND, "no wake-up");
        thread.join().unwrap().unwrap();
    }
}

#[test]
fn a_wake_up_comes_with_its_own_token_and_only_once() {
    let mut poller = Poller::new(8, WAKE).unwrap();
    let listener = listener();
    poller
        .register(&listener, CONN, Interest::Readable)
        .unwrap();
    let waker = poller.waker();
    waker.wake().unwrap();
    waker.wake().unwrap();
    only_event(&mut poller, WAKE);

    let _client = TcpStream::connect(listener.local_addr().ip().unwrap()).unwrap();
    assert!(only_event(&mut poller, CONN).is_readable());
    poller.deregister(&listener).unwrap();
}

#[test]
fn readable_and_writable_come_as_one_event() {
    let mut poller = Poller::new(8, WAKE).unwrap();
    let listener = listener();
    let (socket, mut client) = pair(&listener);
    client.write_all(b"ping").unwrap();
    let start = Instant::now();
    while socket.unread_len().unwrap() < 4 {
        assert!(start.elapsed() < BOUND, "the bytes never arrived");
        thread::yield_now();
    }
    poller.register(&socket, CONN, Interest::ReadWrite).unwrap();
    let event = only_event(&mut poller, CONN);
    assert!(event.is_readable() && event.is_writable());
    assert!(!event.is_read_closed() && !event.is_error());
    poller.deregister(&socket).unwrap();
}

#[test]
fn our_own_shutdown_is_not_the_peers_fin() {
    let mut poller = Poller::new(8, WAKE).unwrap();
    let listener = listener();
    let (socket, mut client) = pair(&listener);
    poller.register(&socket, CONN, Interest::ReadWrite).unwrap();
    wait(&mut poller, BOUND);

    socket.shutdown_write().unwrap();
    assert_eq!(
        client.read(&mut [0; 1]).unwrap(),
        0,
        "the peer sees our FIN"
    );
    let events = wait(&mut poller, Duration::from_millis(100));
    assert!(events.iter().all(|e| !e.is_read_closed()), "{events:?}");

    client.shutdown(Shutdown::Write).unwrap();
    let event = only_event(&mut poller, CONN);
    assert!(event.is_read_closed() && !event.is_error());
    assert_eq!(socket.read(&mut [0; 1]).unwrap(), 0);
    poller.deregister(&socket).unwrap();
}

#[test]
fn accept_with_nobody_waiting_would_block() {
    let listener = listener();
    assert!(matches!(listener.accept(), Err(AcceptError::WouldBlock)));
    let (socket, _client) = pair(&listener);
    let error = socket.read(&mut [0; 1]).unwrap_err();
    assert_eq!(
        error.kind(),
        io::ErrorKind::WouldBlock,
        "accepted sockets block"
    );
}

#[test]
fn a_pipe_exists_exactly_where_splice_does() {
    match Pipe::new() {
        Ok(pipe) => assert!(SPLICE && pipe.is_empty()),
        Err(e) => assert!(!SPLICE && e.kind() == io::ErrorKind::Unsupported, "{e}"),
    }
}

#[test]
fn the_fd_limit_can_always_be_raised() {
    let limit = raise_fd_limit().unwrap();
    assert!(limit >= 256, "limit {limit}");
    assert_eq!(raise_fd_limit().unwrap(), limit);
}

#[test]
#[cfg_attr(
    not(any(target_os = "linux", target_os = "macos", target_os = "freebsd")),
    ignore = "cpu_time is not implemented on this OS"
)]
fn own_cpu_time_is_readable_and_grows() {
    let before = cpu_time(std::process::id()).unwrap();
    let start = Instant::now();
    let mut x = 0u64;
    while start.elapsed() < Duration::from_millis(50) {
        x = std::hint::black_box(x.wrapping_add(1));
    }
    assert!(cpu_time(std::process::id()).unwrap() >= before);
    assert!(cpu_time(u32::MAX).is_err());
}
