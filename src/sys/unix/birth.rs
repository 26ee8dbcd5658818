//! How a socket is born non-blocking, close-on-exec and free of SIGPIPE.
//!
//! Linux and the BSDs do it in the call that makes the socket
//! (`SOCK_NONBLOCK | SOCK_CLOEXEC`, `accept4`) and in each send
//! (`MSG_NOSIGNAL`). Apple has none of these: there the socket is fixed once,
//! right after it is made, with `fcntl` and `SO_NOSIGPIPE`.

use std::io;
use std::mem::{self, MaybeUninit};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockFlag};

#[cfg(not(target_vendor = "apple"))]
pub(super) const SOCKET_FLAGS: SockFlag = SockFlag::SOCK_NONBLOCK.union(SockFlag::SOCK_CLOEXEC);
#[cfg(target_vendor = "apple")]
pub(super) const SOCKET_FLAGS: SockFlag = SockFlag::empty();

#[cfg(not(target_vendor = "apple"))]
pub(super) const SEND_FLAGS: MsgFlags = MsgFlags::MSG_NOSIGNAL;
#[cfg(target_vendor = "apple")]
pub(super) const SEND_FLAGS: MsgFlags = MsgFlags::empty();

/// One `accept`, writing the peer's address into `storage`; the new socket
/// still needs [`prepare`].
pub(super) fn accept_raw(
    listener: &OwnedFd,
    storage: &mut MaybeUninit<libc::sockaddr_storage>,
) -> nix::Result<libc::c_int> {
    let (fd, addr) = (listener.as_raw_fd(), storage.as_mut_ptr().cast());
    let mut len = mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    #[cfg(not(target_vendor = "apple"))]
    // SAFETY: `addr` points at a writable sockaddr_storage and `len` holds
    // its size; the kernel writes at most `len` bytes there.
    let rc = unsafe { libc::accept4(fd, addr, &mut len, libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) };
    #[cfg(target_vendor = "apple")]
    // SAFETY: as above; plain `accept` takes the same pointers.
    let rc = unsafe { libc::accept(fd, addr, &mut len) };
    Errno::result(rc)
}

/// What the kernel left undone when it made the socket: nothing here.
#[cfg(not(target_vendor = "apple"))]
pub(super) fn prepare(_: &OwnedFd) -> io::Result<()> {
    Ok(())
}

/// What the kernel left undone when it made the socket: everything.
#[cfg(target_vendor = "apple")]
pub(super) fn prepare(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{FcntlArg, FdFlag, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    let on: libc::c_int = 1;
    // SAFETY: SO_NOSIGPIPE reads one c_int through the pointer, which points
    // at a live local of that type, and the length says so.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NOSIGPIPE,
            (&raw const on).cast(),
            mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    Errno::result(rc)?;
    Ok(())
}
