//! The floor: a minimal edge-triggered epoll echo server on raw `libc`.
//!
//! Run: `cargo run --release --example echo_epoll_floor -- [ADDR]`
//!
//! One thread, one `epoll` set, no runtime and no abstraction: the whole
//! mechanism of a readiness reactor on one page, and the speed that a reactor
//! with abstractions should come within a hair of.
//!
//! - Every socket is registered once for IN|OUT|RDHUP, edge-triggered, and
//!   never modified again: no `epoll_ctl` per write.
//! - Edge-triggered means the kernel reports a *change* (new data, new room
//!   to send) once. We must drain what we were told about, or remember to come
//!   back, because nobody will tell us again.
//! - One 64 KiB read buffer serves all connections: data goes straight back
//!   out, so an idle connection costs no user-space memory at all.
//! - If the peer does not read fast enough, the unsent tail waits in a
//!   per-connection `Vec` and we stop reading that connection until EPOLLOUT
//!   lets us flush it. A peer that never reads stalls only itself, and its
//!   memory stays bounded by one buffer.

#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    floor::main()
}

/// epoll is Linux's own; elsewhere the example says so and stops.
#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("echo_epoll_floor calls epoll(7) directly: it runs on Linux only");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "the floor calls epoll and sockets through raw libc, which is its point"
)]
mod floor {
    use std::env;
    use std::io::{self, Write};
    use std::net::TcpListener;
    use std::os::fd::{AsRawFd, RawFd};
    use std::ptr;

    const BUF_SIZE: usize = 64 * 1024;
    const MAX_EVENTS: usize = 1024;
    const INTEREST: u32 =
        (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32;
    /// Peer closed (its side or both) or the socket failed.
    const HANGUP: u32 = (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) as u32;

    pub fn main() -> io::Result<()> {
        let addr = env::args()
            .nth(1)
            .unwrap_or_else(|| "127.0.0.1:7878".into());
        // std does socket + SO_REUSEADDR + bind + listen; that part is no different here.
        let listener = TcpListener::bind(&addr)?;
        listener.set_nonblocking(true)?;
        let lfd = listener.as_raw_fd();
        // std's accept queue holds 128; a burst of connects would overflow it and
        // wait for SYN retries. Listening again on a listening socket resizes it.
        // SAFETY: a plain syscall on a socket we own; the result is checked.
        cvt(unsafe { libc::listen(lfd, libc::SOMAXCONN) })?;
        println!("listening on {}", listener.local_addr()?);
        io::stdout().flush()?;

        // SAFETY: a plain syscall without pointers; the result is checked.
        let ep = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        register(ep, lfd)?;

        let mut buf = vec![0u8; BUF_SIZE];
        // Unsent tails, indexed by fd. An empty `Vec` owns no heap memory, so only
        // connections that are actually behind cost anything.
        let mut pending: Vec<Vec<u8>> = Vec::new();
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];

        loop {
            // SAFETY: `events` has room for MAX_EVENTS entries, the most the kernel writes.
            let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), MAX_EVENTS as i32, -1) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for ev in &events[..n as usize] {
                // The fd itself is our token; copy the fields out (the struct is packed).
                let (fd, ready) = (ev.u64 as RawFd, ev.events);
                if fd == lfd {
                    accept_all(ep, lfd, &mut pending);
                } else {
                    let tail = &mut pending[fd as usize];
                    // A failing peer costs its own connection, never the server.
                    if !matches!(on_ready(fd, ready, &mut buf, tail), Ok(true)) {
                        *tail = Vec::new();
                        close(fd);
                    }
                }
            }
        }
    }

    /// Accepts until the backlog is empty: one edge may stand for many clients.
    fn accept_all(ep: RawFd, lfd: RawFd, pending: &mut Vec<Vec<u8>>) {
        loop {
            let flags = libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
            // SAFETY: null address pointers are allowed: we don't ask for the peer address.
            let fd = unsafe { libc::accept4(lfd, ptr::null_mut(), ptr::null_mut(), flags) };
            if fd < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return, // drained (EWOULDBLOCK is EAGAIN on Linux)
                    Some(libc::EINTR | libc::ECONNABORTED) => continue,
                    // EMFILE and friends: give up for now; the next client's edge retries.
                    _ => return eprintln!("accept: {e}"),
                }
            }
            if let Err(e) = set_nodelay(fd).and_then(|()| register(ep, fd)) {
                eprintln!("setup: {e}");
                close(fd);
                continue;
            }
            if pending.len() <= fd as usize {
                pending.resize_with(fd as usize + 1, Vec::new);
            }
        }
    }

    /// Handles one readiness event for a connection. `Ok(false)`: close it.
    fn on_ready(fd: RawFd, ready: u32, buf: &mut [u8], tail: &mut Vec<u8>) -> io::Result<bool> {
        if !tail.is_empty() {
            // Reading is paused until the tail is out; only room to send helps.
            if ready & (libc::EPOLLOUT as u32 | HANGUP) == 0 {
                return Ok(true);
            }
            let sent = send_some(fd, tail)?;
            if sent < tail.len() {
                tail.drain(..sent);
                return Ok(true); // Still full: wait for the next EPOLLOUT.
            }
            // Free the tail, don't just clear it. Input may have arrived while we
            // were not reading, and its edge is gone: read now, even without EPOLLIN.
            *tail = Vec::new();
        } else if ready & (libc::EPOLLIN as u32 | HANGUP) == 0 {
            return Ok(true); // Writable, but there is nothing to send.
        }
        echo(fd, buf, tail, ready & HANGUP != 0)
    }

    /// Reads and writes straight back until the socket is drained or the peer
    /// stops keeping up. Returns `Ok(false)` once the peer has closed.
    fn echo(fd: RawFd, buf: &mut [u8], tail: &mut Vec<u8>, hangup: bool) -> io::Result<bool> {
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
            if n == 0 {
                return Ok(false); // FIN, and everything before it was echoed.
            }
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => return Ok(true),
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            let n = n as usize;
            let sent = send_some(fd, &buf[..n])?;
            if sent < n {
                // The send buffer is full: keep the rest and stop reading.
                tail.extend_from_slice(&buf[sent..n]);
                return Ok(true);
            }
            // A short read means the receive queue is empty, and the read that
            // would say EAGAIN is a syscall saved. Not after a hang-up, though:
            // its edge was this event, so read on until the kernel returns 0.
            if n < buf.len() && !hangup {
                return Ok(true);
            }
        }
    }

    /// Sends as much of `data` as the socket takes now; returns how much that was.
    fn send_some(fd: RawFd, data: &[u8]) -> io::Result<usize> {
        let mut sent = 0;
        while sent < data.len() {
            let rest = &data[sent..];
            // MSG_NOSIGNAL: writing to a reset peer returns EPIPE instead of
            // raising SIGPIPE, which would kill the whole server.
            // SAFETY: the pointer and length describe the live slice `rest`.
            let n = unsafe { libc::send(fd, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::WouldBlock => break,
                    io::ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            sent += n as usize;
        }
        Ok(sent)
    }

    fn register(ep: RawFd, fd: RawFd) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: INTEREST,
            u64: fd as u64,
        };
        // SAFETY: `ev` is a valid epoll_event; the kernel copies it during the call.
        cvt(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
    }

    fn set_nodelay(fd: RawFd) -> io::Result<()> {
        let one: libc::c_int = 1;
        let len = size_of::<libc::c_int>() as libc::socklen_t;
        let opt = (&raw const one).cast();
        // SAFETY: `opt` points to a c_int that outlives the call, and `len` is its size.
        cvt(unsafe { libc::setsockopt(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, opt, len) })
            .map(drop)
    }

    fn close(fd: RawFd) {
        // Closing the last descriptor of a socket also takes it out of the epoll
        // set, so no EPOLL_CTL_DEL. The fd number may be reused by the next
        // accept, but no stale event can reach the newcomer: epoll reports an fd
        // at most once per wait, and this one's event is the one we just handled.
        // SAFETY: we own `fd`, and nothing uses it after this.
        unsafe { libc::close(fd) };
    }

    fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret)
        }
    }
}
