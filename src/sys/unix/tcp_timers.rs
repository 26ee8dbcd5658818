//! The kernel's dead-peer timers of a TCP connection: keepalive probes and
//! the user timeout, each under the name its OS gives it. Linux, FreeBSD
//! and DragonFly say `TCP_KEEPIDLE`, Apple `TCP_KEEPALIVE`; the interval
//! (`TCP_KEEPINTVL`) and count (`TCP_KEEPCNT`) are named alike; OpenBSD
//! and NetBSD set keepalive times system-wide only. `TCP_USER_TIMEOUT` is
//! Linux's alone.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};

use crate::sys::os::Keepalive;

/// Whether keepalive times are set per socket here: elsewhere only
/// `SO_KEEPALIVE` is, and the times are the system's.
pub const KEEPALIVE_TIMES: bool = cfg!(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple",
));

/// Whether [`SocketOptions::user_timeout`](crate::sys::SocketOptions::user_timeout)
/// can be set here (`TCP_USER_TIMEOUT`: Linux).
pub const USER_TIMEOUT: bool = cfg!(target_os = "linux");

/// Turns keepalive probes on, with `keepalive`'s times where the OS takes
/// them per socket.
pub(super) fn set_keepalive(fd: &OwnedFd, keepalive: &Keepalive) -> io::Result<()> {
    setsockopt(fd, sockopt::KeepAlive, &true)?;
    set_keepalive_times(fd, keepalive)
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
))]
fn set_keepalive_times(fd: &OwnedFd, keepalive: &Keepalive) -> io::Result<()> {
    setsockopt(fd, sockopt::TcpKeepIdle, &whole_seconds(keepalive.idle))?;
    set_probes(fd, keepalive)
}

#[cfg(target_vendor = "apple")]
fn set_keepalive_times(fd: &OwnedFd, keepalive: &Keepalive) -> io::Result<()> {
    setsockopt(fd, sockopt::TcpKeepAlive, &whole_seconds(keepalive.idle))?;
    set_probes(fd, keepalive)
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple",
)))]
fn set_keepalive_times(_: &OwnedFd, _: &Keepalive) -> io::Result<()> {
    Ok(()) // the system's times hold (OpenBSD, NetBSD: sysctl net.inet.tcp)
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_vendor = "apple",
))]
fn set_probes(fd: &OwnedFd, keepalive: &Keepalive) -> io::Result<()> {
    if let Some((interval, count)) = keepalive.probes {
        setsockopt(fd, sockopt::TcpKeepInterval, &whole_seconds(interval))?;
        setsockopt(fd, sockopt::TcpKeepCount, &count)?;
    }
    Ok(())
}

/// The kernel counts keepalive times in seconds: a part of one counts as one.
fn whole_seconds(time: Duration) -> u32 {
    let rounded_up = time.as_secs() + u64::from(time.subsec_nanos() > 0);
    u32::try_from(rounded_up.max(1)).unwrap_or(u32::MAX)
}

/// Sets `TCP_USER_TIMEOUT` (milliseconds).
#[cfg(target_os = "linux")]
pub(super) fn set_user_timeout(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
    setsockopt(fd, sockopt::TcpUserTimeout, &ms)?;
    Ok(())
}

#[cfg(not(target_os = "linux"))]
pub(super) fn set_user_timeout(_: &OwnedFd, _: Duration) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "TCP_USER_TIMEOUT is Linux's: this OS has no such option",
    ))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::net::TcpStream;
    use std::thread;
    use std::time::Instant;

    use nix::sys::socket::{getsockopt, sockopt};

    use super::*;
    use crate::sys::os::{Listen, ListenOptions, SocketOptions, Stream};
    use crate::sys::{AcceptError, Listener};

    #[test]
    fn the_dead_peer_timers_asked_for_are_what_the_kernel_holds() {
        let listener =
            Listener::bind(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default()).unwrap();
        let _client = TcpStream::connect(listener.local_addr().ip().unwrap()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let socket = loop {
            match listener.accept() {
                Ok((socket, _)) => break socket,
                Err(AcceptError::WouldBlock) if Instant::now() < deadline => thread::yield_now(),
                Err(e) => panic!("accept: {e:?}"),
            }
        };
        assert!(!getsockopt(&socket, sockopt::KeepAlive).unwrap());
        socket
            .apply(&SocketOptions {
                keepalive: Some(Keepalive {
                    idle: Duration::from_secs(7),
                    probes: Some((Duration::from_millis(2500), 4)),
                }),
                user_timeout: Some(Duration::from_millis(1500)),
                ..SocketOptions::default()
            })
            .unwrap();
        assert!(getsockopt(&socket, sockopt::KeepAlive).unwrap());
        assert_eq!(getsockopt(&socket, sockopt::TcpKeepIdle).unwrap(), 7);
        assert_eq!(getsockopt(&socket, sockopt::TcpKeepInterval).unwrap(), 3);
        assert_eq!(getsockopt(&socket, sockopt::TcpKeepCount).unwrap(), 4);
        assert_eq!(getsockopt(&socket, sockopt::TcpUserTimeout).unwrap(), 1500);
    }
}
