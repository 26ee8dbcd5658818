//! An accept storm: 10,000 clients connect to `sockloop echo` at once, and
//! every one is accepted and served — its byte echoed — none refused, all
//! within a bounded time. The server is a child process with its default
//! backlog (4096, capped by somaxconn, as its start log says); the clients
//! are non-blocking sockets of this process, opened as fast as four threads
//! can make them, so that their SYNs arrive faster than one reactor accepts.
//!
//! A SYN that finds the accept queue full is dropped by the kernel, and its
//! client sends it again a second later (then 3 s, 7 s, ...): such a client
//! is late, never refused. The test allows for a few rounds of that.

#![deny(unsafe_code)]

mod common;

use std::net::{SocketAddr, SocketAddrV4};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::thread;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::poll::{PollFd, PollFlags, poll};
use nix::sys::resource::{Resource, getrlimit};
use nix::sys::signal::Signal;
use nix::sys::socket::{
    AddressFamily, MsgFlags, SockFlag, SockType, SockaddrIn, connect, getsockopt, recv, send,
    socket, sockopt,
};

use common::{LogFile, Server};

const CLIENTS: usize = 10_000;
const THREADS: usize = 4;
/// For the whole storm: connecting, the echo on each, and the closes. A
/// client whose SYN was dropped three times in a row is served after 7 s.
const DEADLINE: Duration = Duration::from_secs(40);

#[test]
fn ten_thousand_clients_connecting_at_once_are_all_served_none_refused() {
    let log = LogFile::new("accept-storm");
    let mut server = Server::start(&[], &["echo"], log.stdio());
    // The test process holds one descriptor per client; so does the server.
    let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    assert!(
        // rlim_t is u64 on Linux, i64 on FreeBSD.
        soft >= (CLIENTS + 100).try_into().expect("a count fits rlim_t"),
        "this test needs {} descriptors, the limit is {soft}",
        CLIENTS + 100
    );
    let SocketAddr::V4(addr) = server.addr() else {
        unreachable!("the server listens on 127.0.0.1")
    };

    let started = Instant::now();
    let deadline = started + DEADLINE;
    let per_thread = CLIENTS / THREADS;
    let clients: Vec<_> = (0..THREADS)
        .map(|t| thread::spawn(move || storm(addr, t * per_thread, per_thread, deadline)))
        .collect();
    let mut failures = Vec::new();
    let mut served = 0;
    for client in clients {
        match client.join().expect("client thread") {
            Ok(n) => served += n,
            Err(e) => failures.push(e),
        }
    }
    let took = started.elapsed();
    eprintln!("{served} clients served in {took:?}");

    let start_log = log.read();
    let stated = match sockloop::sys::somaxconn() {
        Some(cap) => format!("accept queue: backlog {} (somaxconn {cap}", cap.min(4096)),
        None => "accept queue: backlog 4096 (somaxconn unknown".to_owned(),
    };
    assert!(
        start_log.contains(&stated),
        "{stated:?} not in: {start_log}"
    );
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(served, CLIENTS);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", log.read());
}

/// Connects `n` clients (numbered from `first`) to `addr` without waiting,
/// then sends each its own byte and checks the echo; the clients close
/// when it returns. How many were served, or what went wrong.
fn storm(addr: SocketAddrV4, first: usize, n: usize, deadline: Instant) -> Result<usize, String> {
    let to = SockaddrIn::from(addr);
    let mut sockets = Vec::with_capacity(n);
    for i in first..first + n {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .and_then(|fd| fcntl(&fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map(|_| fd))
        .map_err(|e| format!("socket for client {i}: {e}"))?;
        match connect(fd.as_raw_fd(), &to) {
            Ok(()) | Err(Errno::EINPROGRESS) => sockets.push(fd),
            Err(e) => return Err(format!("client {i}: connect: {e}")),
        }
    }
    let byte = |k: usize| ((first + k) % 251) as u8;
    // Up: writable with no pending error (a refusal would show here).
    wait_all(
        &sockets,
        PollFlags::POLLOUT,
        deadline,
        "connected",
        |k, fd| {
            match getsockopt(fd, sockopt::SocketError) {
                Ok(0) => {}
                Ok(errno) => return Err(format!("refused or failed: {}", Errno::from_raw(errno))),
                Err(e) => return Err(format!("SO_ERROR: {e}")),
            }
            // The test harness ignores SIGPIPE: no MSG_NOSIGNAL needed (nor on macOS, there).
            match send(fd.as_raw_fd(), &[byte(k)], MsgFlags::empty()) {
                Ok(1) => Ok(()),
                other => Err(format!("send: {other:?}")),
            }
        },
    )
    .map_err(|(k, e)| format!("client {}: {e}", first + k))?;
    wait_all(&sockets, PollFlags::POLLIN, deadline, "echoed", |k, fd| {
        let mut buf = [0u8; 2];
        match recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
            Ok(1) if buf[0] == byte(k) => Ok(()),
            other => Err(format!("echo: {other:?}, want byte {}", byte(k))),
        }
    })
    .map_err(|(k, e)| format!("client {}: {e}", first + k))?;
    Ok(sockets.len())
}

/// Polls every socket for `event` until each has had it once and passed
/// `check`, or the deadline passes.
fn wait_all(
    sockets: &[OwnedFd],
    event: PollFlags,
    deadline: Instant,
    what: &str,
    mut check: impl FnMut(usize, &OwnedFd) -> Result<(), String>,
) -> Result<(), (usize, String)> {
    let mut waiting: Vec<usize> = (0..sockets.len()).collect();
    while !waiting.is_empty() {
        if Instant::now() > deadline {
            let e = format!("{} of {} not {what} in time", waiting.len(), sockets.len());
            return Err((waiting[0], e));
        }
        let ready: Vec<bool> = {
            let mut fds: Vec<PollFd> = waiting
                .iter()
                .map(|&k| PollFd::new(sockets[k].as_fd(), event))
                .collect();
            match poll(&mut fds, 100u16) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => return Err((waiting[0], format!("poll: {e}"))),
            }
            fds.iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect()
        };
        let mut still = Vec::with_capacity(waiting.len());
        for (&k, ready) in waiting.iter().zip(ready) {
            if ready {
                check(k, &sockets[k]).map_err(|e| (k, e))?;
            } else {
                still.push(k);
            }
        }
        waiting = still;
    }
    Ok(())
}
