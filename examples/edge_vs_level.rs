//! Level- against edge-triggered epoll, and what a missed drain looks like.
//!
//! Run: `cargo run --release --example edge_vs_level -- [level|edge] [--drain]`
//!
//! A client sends 8 messages of 64 bytes in one write; a server socket,
//! registered with epoll for reading, is served by a loop that reads **one**
//! message (64 bytes) per readiness event and echoes it:
//!
//! - `level`: epoll reports the socket every time it is asked, as long as
//!   unread bytes remain: 8 waits, 8 reads, everything echoed.
//! - `edge` (`EPOLLET`): epoll reports a *change* — new bytes arrived —
//!   once. The loop reads 64 bytes and waits again; no new bytes come (the
//!   client waits for its echo), so no new event comes either, and 448 bytes
//!   sit in the kernel unread. The example waits one second, says it is
//!   stalled, and exits with status 1.
//! - `edge --drain`: on each event, read until the kernel says `EAGAIN`
//!   (would block: nothing left). One wait, 9 reads (8 + the EAGAIN), all
//!   echoed. This is what an edge-triggered loop must do (or remember to come
//!   back, as sockloop's reactor does for a connection whose read budget ran
//!   out).
//!
//! Linux only: it calls epoll(7) directly, with the few `unsafe` calls that
//! needs.

#![deny(unsafe_code, clippy::undocumented_unsafe_blocks)]

#[cfg(target_os = "linux")]
fn main() -> std::process::ExitCode {
    demo::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("edge_vs_level calls epoll(7) directly: it runs on Linux only");
    std::process::exit(1);
}

#[cfg(target_os = "linux")]
#[expect(
    unsafe_code,
    reason = "it calls epoll(7) directly, to show what sys/ hides"
)]
mod demo {
    use std::io::{self, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, RawFd};
    use std::process::ExitCode;
    use std::time::Duration;

    const MESSAGES: usize = 8;
    const SIZE: usize = 64;
    /// How long a wait may find nothing before the loop calls itself stalled.
    const STALL: Duration = Duration::from_secs(1);

    pub fn main() -> ExitCode {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let edge = !args.iter().any(|a| a == "level");
        let drain = args.iter().any(|a| a == "--drain");
        match run(edge, drain) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::from(1),
            Err(e) => {
                eprintln!("edge_vs_level: {e}");
                ExitCode::from(2)
            }
        }
    }

    fn run(edge: bool, drain: bool) -> io::Result<bool> {
        println!(
            "mode: {}, {} per event",
            if edge {
                "edge-triggered (EPOLLET)"
            } else {
                "level-triggered"
            },
            if drain {
                "read until EAGAIN"
            } else {
                "one read of 64 bytes"
            }
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let mut client = TcpStream::connect(listener.local_addr()?)?;
        let (mut server, _) = listener.accept()?;
        server.set_nonblocking(true)?;

        let ep = Epoll::new()?;
        let mut events = libc::EPOLLIN as u32;
        if edge {
            events |= libc::EPOLLET as u32;
        }
        ep.add(server.as_raw_fd(), events)?;

        let sent = MESSAGES * SIZE;
        let request: Vec<u8> = (0..sent).map(|i| b'a' + (i / SIZE) as u8).collect();
        client.write_all(&request)?;
        println!("client: sent {MESSAGES} messages of {SIZE} bytes ({sent} bytes) in one write");

        let (mut echoed, mut waits, mut reads) = (0, 0, 0);
        let mut buf = [0u8; SIZE];
        while echoed < sent {
            if !ep.wait(STALL)? {
                let unread = unread_bytes(server.as_raw_fd())?;
                println!(
                    "wait {}: no event for {} s, {unread} bytes still unread in the kernel",
                    waits + 1,
                    STALL.as_secs()
                );
                println!(
                    "result: stalled after echoing {echoed} of {sent} bytes \
                     (waits with an event: {waits}, reads: {reads})"
                );
                return Ok(false);
            }
            waits += 1;
            println!("wait {waits}: readable");
            loop {
                reads += 1;
                match server.read(&mut buf) {
                    Ok(0) => return Err(io::Error::other("client closed early")),
                    Ok(n) => {
                        server.write_all(&buf[..n])?;
                        echoed += n;
                        println!("  read {n}, echoed");
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        println!("  read EAGAIN: drained");
                        break;
                    }
                    Err(e) => return Err(e),
                }
                if !drain {
                    break;
                }
            }
        }
        let mut back = vec![0; sent];
        client.set_read_timeout(Some(Duration::from_secs(5)))?;
        client.read_exact(&mut back)?;
        assert_eq!(back, request, "the echo differs from what was sent");
        println!("result: all {sent} bytes echoed (waits: {waits}, reads: {reads})");
        Ok(true)
    }

    /// Bytes in the socket's receive queue (FIONREAD).
    fn unread_bytes(fd: RawFd) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
        if unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    struct Epoll(RawFd);

    impl Epoll {
        fn new() -> io::Result<Epoll> {
            // SAFETY: no pointers; the result is checked.
            let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Epoll(fd))
        }

        fn add(&self, fd: RawFd, events: u32) -> io::Result<()> {
            let mut ev = libc::epoll_event {
                events,
                u64: fd as u64,
            };
            // SAFETY: `ev` is a valid epoll_event; the kernel copies it during the call.
            if unsafe { libc::epoll_ctl(self.0, libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        }

        /// Waits up to `timeout` for one event; false if none came.
        fn wait(&self, timeout: Duration) -> io::Result<bool> {
            let mut ev = libc::epoll_event { events: 0, u64: 0 };
            loop {
                // SAFETY: room for exactly the one event asked for.
                let n = unsafe { libc::epoll_wait(self.0, &mut ev, 1, timeout.as_millis() as i32) };
                if n >= 0 {
                    return Ok(n > 0);
                }
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }

    impl Drop for Epoll {
        fn drop(&mut self) {
            // SAFETY: we own the epoll descriptor and nothing uses it after this.
            unsafe { libc::close(self.0) };
        }
    }
}
