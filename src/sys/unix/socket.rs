//! Non-blocking stream sockets, TCP or Unix-domain: the listener, accepted
//! connections, and their options.

use std::fs;
use std::io;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
use nix::sys::socket::{
    self, AddressFamily, Backlog, Shutdown, SockType, SockaddrStorage, UnixAddr, sockopt,
};

use super::birth::{SEND_FLAGS, SOCKET_FLAGS, accept_raw, prepare};
use super::retry;
use super::{tcp_timers, transfer};
use crate::sys::Addr;
use crate::sys::os::{AcceptError, Listen, ListenOptions, SocketOptions, Stream};

/// A non-blocking listening socket.
pub struct Listener {
    fd: OwnedFd,
    local: Addr,
    /// A Unix-domain listener's socket file (device and inode), removed
    /// when the listener closes if it is still the one this listener made.
    file: Option<(u64, u64)>,
}

impl Listen for Listener {
    type Socket = Socket;

    // TCP: `SO_REUSEADDR` spares a restarted server the wait for
    // TIME_WAIT, and `IPV6_V6ONLY` is cleared on `[::]`, whose default
    // differs between OSes.
    fn bind(addr: &Addr, options: &ListenOptions) -> io::Result<Listener> {
        let backlog = Backlog::new(options.backlog)?;
        match addr {
            Addr::Ip(ip) => {
                let fd = ip_socket(*ip)?;
                socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
                if options.reuse_port {
                    set_reuse_port(&fd)?;
                }
                if ip.ip() == IpAddr::from([0u16; 8]) {
                    socket::setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
                }
                socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(*ip))?;
                socket::listen(&fd, backlog)?;
                let local = Addr::Ip(local_addr(&fd)?);
                Ok(Listener {
                    fd,
                    local,
                    file: None,
                })
            }
            Addr::Unix(_) if options.reuse_port => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "SO_REUSEPORT spreads TCP connections only: a Unix-domain path has one listener",
            )),
            Addr::Unix(path) => {
                remove_stale_socket(path)?;
                let fd = unix_socket()?;
                socket::bind(fd.as_raw_fd(), &UnixAddr::new(&**path)?)?;
                let meta = fs::metadata(path)?;
                socket::listen(&fd, backlog)?;
                Ok(Listener {
                    fd,
                    local: addr.clone(),
                    file: Some((meta.dev(), meta.ino())),
                })
            }
        }
    }

    fn local_addr(&self) -> &Addr {
        &self.local
    }

    // The peer's address comes with the accept: no `getpeername` call.
    fn accept(&self) -> Result<(Socket, Addr), AcceptError> {
        let mut storage = MaybeUninit::<libc::sockaddr_storage>::zeroed();
        let fd = retry(|| accept_raw(&self.fd, &mut storage)).map_err(classify)?;
        // SAFETY: the accept call succeeded, so `fd` is a fresh descriptor
        // that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        prepare(&fd).map_err(AcceptError::Other)?;
        // SAFETY: the kernel initialised the address it wrote into `storage`,
        // and the zeroed rest is a valid bit pattern for sockaddr_storage.
        let storage = unsafe { storage.assume_init_ref() };
        let peer = sockaddr_to_std(storage).map_or_else(|| self.local.clone(), Addr::Ip);
        let tcp = matches!(self.local, Addr::Ip(_));
        Ok((Socket { fd, tcp }, peer))
    }
}

impl Listener {
    /// Takes over `fd`, a listening stream socket another process made
    /// (systemd, or the server this one replaces): non-blocking and
    /// close-on-exec from here on. A Unix-domain one's socket file stays
    /// when it closes: whoever made it owns it.
    pub(super) fn adopt(fd: OwnedFd) -> io::Result<Listener> {
        let listening = socket::getsockopt(&fd, sockopt::SockType)? == SockType::Stream
            && socket::getsockopt(&fd, sockopt::AcceptConn)?;
        if !listening {
            let e = "not a listening stream socket (SOCK_STREAM, listen(2) called)";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
        }
        fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
        let flags = OFlag::from_bits_retain(fcntl(&fd, FcntlArg::F_GETFL)?);
        fcntl(&fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
        prepare(&fd)?;
        let local = bound_addr(&fd)?;
        Ok(Listener {
            fd,
            local,
            file: None,
        })
    }

    /// Another descriptor of the same listening socket (close-on-exec),
    /// for another reactor to accept from: a socket made elsewhere cannot
    /// be bound again beside itself with `SO_REUSEPORT`. Only the original
    /// removes a Unix-domain socket file it made.
    pub fn try_clone(&self) -> io::Result<Listener> {
        Ok(Listener {
            fd: self.fd.try_clone()?,
            local: self.local.clone(),
            file: None,
        })
    }

    /// Leaves a Unix-domain socket file where it is when this listener
    /// closes: the socket was handed to a process that serves it on.
    pub fn leave_file(&mut self) {
        self.file = None;
    }
}

/// Lets other sockets bind the same address and port, the kernel spreading
/// connections over them.
fn set_reuse_port(fd: &OwnedFd) -> io::Result<()> {
    #[cfg(target_os = "freebsd")]
    socket::setsockopt(fd, sockopt::ReusePortLb, &true)?;
    #[cfg(not(target_os = "freebsd"))]
    socket::setsockopt(fd, sockopt::ReusePort, &true)?;
    Ok(())
}

impl Drop for Listener {
    fn drop(&mut self) {
        let (Some((dev, ino)), Addr::Unix(path)) = (self.file, &self.local) else {
            return;
        };
        // Only our own file: another server may have taken the path since.
        if fs::metadata(path).is_ok_and(|m| m.dev() == dev && m.ino() == ino) {
            let _ = fs::remove_file(path);
        }
    }
}

/// Removes the socket file at `path` if nobody answers on it any more.
fn remove_stale_socket(path: &Path) -> io::Result<()> {
    let Ok(meta) = fs::symlink_metadata(path) else {
        return Ok(());
    };
    let what = path.display();
    if !meta.file_type().is_socket() {
        let e = format!("{what} exists and is not a socket: not replacing it");
        return Err(io::Error::new(io::ErrorKind::AlreadyExists, e));
    }
    let probe = unix_socket()?;
    match socket::connect(probe.as_raw_fd(), &UnixAddr::new(path)?) {
        Err(Errno::ECONNREFUSED) => fs::remove_file(path),
        Err(Errno::ENOENT) => Ok(()),
        // Connected, or its queue is full (EAGAIN): a server is there.
        Ok(()) | Err(Errno::EAGAIN | Errno::EINPROGRESS) => {
            let e = format!("{what}: another server answers on it");
            Err(io::Error::new(io::ErrorKind::AddrInUse, e))
        }
        Err(e) => Err(e.into()),
    }
}

fn classify(errno: Errno) -> AcceptError {
    match errno {
        Errno::EAGAIN => AcceptError::WouldBlock,
        Errno::EMFILE | Errno::ENFILE => AcceptError::OutOfDescriptors(errno.into()),
        Errno::ECONNABORTED | Errno::EPROTO => AcceptError::PeerAborted,
        _ => AcceptError::Other(errno.into()),
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A connected, non-blocking stream socket.
pub struct Socket {
    fd: OwnedFd,
    /// TCP, rather than Unix-domain: only TCP has Nagle's algorithm.
    tcp: bool,
}

impl Stream for Socket {
    fn connect(addr: &Addr, local: Option<SocketAddr>) -> io::Result<Socket> {
        let (fd, connected) = match addr {
            Addr::Ip(ip) => {
                let fd = ip_socket(*ip)?;
                if let Some(local) = local {
                    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
                }
                let connected = socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(*ip));
                (fd, connected)
            }
            Addr::Unix(path) => {
                let fd = unix_socket()?;
                let connected = socket::connect(fd.as_raw_fd(), &UnixAddr::new(&**path)?);
                (fd, connected)
            }
        };
        match connected {
            Ok(()) | Err(Errno::EINPROGRESS) => Ok(Socket {
                fd,
                tcp: matches!(addr, Addr::Ip(_)),
            }),
            // A Unix-domain listener whose queue is full refuses at once.
            Err(Errno::EAGAIN) => Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                format!("{addr}: its queue of connections is full"),
            )),
            Err(e) => Err(e.into()),
        }
    }

    fn apply(&self, options: &SocketOptions) -> io::Result<()> {
        if self.tcp {
            apply_tcp(&self.fd, options)?;
        }
        if let Some(size) = options.recv_buffer {
            socket::setsockopt(&self.fd, sockopt::RcvBuf, &size)?;
        }
        if let Some(size) = options.send_buffer {
            socket::setsockopt(&self.fd, sockopt::SndBuf, &size)?;
        }
        Ok(())
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(retry(|| transfer::read(self.fd.as_raw_fd(), buf))?)
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        Ok(retry(|| {
            socket::recv(self.fd.as_raw_fd(), buf, socket::MsgFlags::MSG_PEEK)
        })?)
    }

    // `SEND_FLAGS` keep SIGPIPE away where the socket itself does not.
    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        Ok(retry(|| {
            transfer::send(self.fd.as_raw_fd(), buf, SEND_FLAGS)
        })?)
    }

    fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        Ok(retry(|| {
            socket::sendmsg::<()>(self.fd.as_raw_fd(), bufs, &[], SEND_FLAGS, None)
        })?)
    }

    fn take_error(&self) -> Option<io::Error> {
        match socket::getsockopt(&self.fd, sockopt::SocketError) {
            Ok(0) => None,
            Ok(code) => Some(io::Error::from_raw_os_error(code)),
            Err(e) => Some(e.into()),
        }
    }

    fn unread_len(&self) -> io::Result<usize> {
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int through the pointer, which points
        // at a live local of that type.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), libc::FIONREAD, &mut n) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n.max(0) as usize)
    }

    // `SO_LINGER` on, with a zero timeout.
    fn reset_on_close(&self) -> io::Result<()> {
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        socket::setsockopt(&self.fd, sockopt::Linger, &linger)?;
        Ok(())
    }

    fn shutdown_write(&self) -> io::Result<()> {
        socket::shutdown(self.fd.as_raw_fd(), Shutdown::Write)?;
        Ok(())
    }
}

/// The options only TCP has: Nagle's algorithm and the dead-peer timers.
fn apply_tcp(fd: &OwnedFd, options: &SocketOptions) -> io::Result<()> {
    if options.nodelay {
        socket::setsockopt(fd, sockopt::TcpNoDelay, &true)?;
    }
    if let Some(keepalive) = &options.keepalive {
        tcp_timers::set_keepalive(fd, keepalive)?;
    }
    if let Some(timeout) = options.user_timeout {
        tcp_timers::set_user_timeout(fd, timeout)?;
    }
    Ok(())
}

impl AsFd for Socket {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A non-blocking, close-on-exec TCP socket of `addr`'s family.
fn ip_socket(addr: SocketAddr) -> io::Result<OwnedFd> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    stream_socket(family)
}

fn unix_socket() -> io::Result<OwnedFd> {
    stream_socket(AddressFamily::Unix)
}

fn stream_socket(family: AddressFamily) -> io::Result<OwnedFd> {
    let fd = socket::socket(family, SockType::Stream, SOCKET_FLAGS, None)?;
    prepare(&fd)?;
    Ok(fd)
}

fn local_addr(fd: &OwnedFd) -> io::Result<SocketAddr> {
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    if let Some(v4) = addr.as_sockaddr_in() {
        Ok(SocketAddr::V4((*v4).into()))
    } else if let Some(v6) = addr.as_sockaddr_in6() {
        Ok(SocketAddr::V6((*v6).into()))
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "local address is not IP",
        ))
    }
}

/// The address a socket made elsewhere is bound to, TCP or Unix-domain
/// (Linux's abstract names written `@name`, as systemd writes them).
fn bound_addr(fd: &OwnedFd) -> io::Result<Addr> {
    let addr: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    let Some(unix) = addr.as_unix_addr() else {
        return local_addr(fd).map(Addr::Ip);
    };
    if let Some(path) = unix.path() {
        return Ok(Addr::Unix(path.into()));
    }
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if let Some(name) = unix.as_abstract() {
        let name = format!("@{}", String::from_utf8_lossy(name));
        return Ok(Addr::Unix(Path::new(&name).into()));
    }
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        "a Unix-domain socket with no name: nobody can connect to it",
    ))
}

fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match libc::c_int::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, which is
            // smaller than and aligned within sockaddr_storage.
            let sin =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = u32::from_be(sin.sin_addr.s_addr).into();
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let sin6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            Some(SocketAddr::V6(SocketAddrV6::new(
                sin6.sin6_addr.s6_addr.into(),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accept_errors_are_sorted_by_what_helps() {
        assert!(matches!(classify(Errno::EAGAIN), AcceptError::WouldBlock));
        for errno in [Errno::EMFILE, Errno::ENFILE] {
            let class = classify(errno);
            assert!(
                matches!(class, AcceptError::OutOfDescriptors(_)),
                "{class:?}"
            );
        }
        for errno in [Errno::ECONNABORTED, Errno::EPROTO] {
            assert!(matches!(classify(errno), AcceptError::PeerAborted));
        }
        for errno in [Errno::ENOBUFS, Errno::ENOMEM, Errno::EINVAL] {
            assert!(matches!(classify(errno), AcceptError::Other(_)));
        }
    }
}
