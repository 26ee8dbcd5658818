//! The two calls every message makes: `read(2)` and `send(2)`.
//!
//! glibc makes both cancellation points: in a process with more than one
//! thread (every server here has its supervisor) each call is bracketed by
//! `__pthread_enable_asynccancel`/`__pthread_disable_asynccancel`, some 60
//! instructions per round trip measured under cachegrind. sockloop never
//! cancels a thread, so on Linux they go straight to syscall(2), which is
//! no cancellation point; elsewhere through nix as any other call.

use std::os::fd::RawFd;

use nix::sys::socket::MsgFlags;

/// `read(2)` of `fd` into `buf`.
#[cfg(target_os = "linux")]
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> nix::Result<usize> {
    // SAFETY: the pointer and length come from a live, writable slice, and
    // read(2) writes at most that many bytes into it.
    let n = unsafe { libc::syscall(libc::SYS_read, fd, buf.as_mut_ptr(), buf.len()) };
    nix::errno::Errno::result(n).map(|n| n as usize)
}

/// `send(2)` of `buf` on `fd` with `flags`.
#[cfg(target_os = "linux")]
pub(super) fn send(fd: RawFd, buf: &[u8], flags: MsgFlags) -> nix::Result<usize> {
    let null = std::ptr::null::<libc::sockaddr>();
    // SAFETY: the pointer and length come from a live slice that sendto(2)
    // only reads; no address is given (null, length 0), as send(2) does.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendto,
            fd,
            buf.as_ptr(),
            buf.len(),
            flags.bits(),
            null,
            0,
        )
    };
    nix::errno::Errno::result(n).map(|n| n as usize)
}

/// `read(2)` of `fd` into `buf`.
#[cfg(not(target_os = "linux"))]
pub(super) fn read(fd: RawFd, buf: &mut [u8]) -> nix::Result<usize> {
    nix::sys::socket::recv(fd, buf, MsgFlags::empty())
}

/// `send(2)` of `buf` on `fd` with `flags`.
#[cfg(not(target_os = "linux"))]
pub(super) fn send(fd: RawFd, buf: &[u8], flags: MsgFlags) -> nix::Result<usize> {
    nix::sys::socket::send(fd, buf, flags)
}
