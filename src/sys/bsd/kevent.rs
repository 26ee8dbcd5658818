//! The raw kevent(2) calls, and the one place their `unsafe` lives. The
//! `kevent` struct differs between the BSDs in its field types; built
//! through these helpers, the rest of the backend never sees that.

use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, FdFlag, fcntl};

use crate::sys::unix::retry;

/// `udata` is pointer-sized, and tokens are 64 bits (generation and slot).
const _: () = assert!(
    usize::BITS >= 64,
    "kqueue's udata must carry a 64-bit token"
);

#[cfg(not(target_os = "netbsd"))]
pub(super) type Filter = i16;
#[cfg(not(target_os = "netbsd"))]
pub(super) type Flags = u16;
#[cfg(target_os = "netbsd")]
pub(super) type Filter = u32;
#[cfg(target_os = "netbsd")]
pub(super) type Flags = u32;

/// A new kqueue, closed on exec (no BSD inherits one across fork, but all
/// would across a plain exec).
pub(super) fn kqueue() -> nix::Result<OwnedFd> {
    // SAFETY: kqueue() takes no arguments and returns a new descriptor or -1.
    let fd = Errno::result(unsafe { libc::kqueue() })?;
    // SAFETY: the descriptor is fresh and nothing else owns it.
    let kq = unsafe { OwnedFd::from_raw_fd(fd) };
    fcntl(&kq, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))?;
    Ok(kq)
}

/// An all-zero entry, for the kernel to fill.
pub(super) fn empty() -> libc::kevent {
    // SAFETY: `kevent` holds only integers and a `udata` that is an integer
    // or a raw pointer; all zeroes is a valid value for each.
    unsafe { mem::zeroed() }
}

/// A change for the changelist: `filter` on `ident`, carrying `token` back.
pub(super) fn change(
    ident: usize,
    filter: Filter,
    flags: Flags,
    fflags: u32,
    token: u64,
) -> libc::kevent {
    let mut ev = empty();
    ev.ident = ident;
    ev.filter = filter;
    ev.flags = flags;
    ev.fflags = fflags;
    ev.udata = token as _;
    ev
}

/// The token a change carried, as the kernel hands it back.
pub(super) fn token(ev: &libc::kevent) -> u64 {
    ev.udata as u64
}

/// Applies `changes`, each flagged `EV_RECEIPT`, and checks every receipt:
/// the first error that `ignore` does not list is returned.
pub(super) fn submit<const N: usize>(
    kq: &OwnedFd,
    changes: [libc::kevent; N],
    ignore: &[Errno],
) -> nix::Result<()> {
    let mut receipts = changes;
    // With EV_RECEIPT the call returns the receipts at once, never waiting.
    let n = retry(|| kevent(kq, &changes, &mut receipts, None))?;
    for receipt in &receipts[..n] {
        let errno = Errno::from_raw(receipt.data as i32);
        if receipt.flags & libc::EV_ERROR != 0 && receipt.data != 0 && !ignore.contains(&errno) {
            return Err(errno);
        }
    }
    Ok(())
}

/// kevent(2): applies `changes`, then waits up to `timeout` (`None`: for
/// ever) for events to fill `events` with.
pub(super) fn kevent(
    kq: &OwnedFd,
    changes: &[libc::kevent],
    events: &mut [libc::kevent],
    timeout: Option<Duration>,
) -> nix::Result<usize> {
    let timeout = timeout.map(|d| libc::timespec {
        // Past 68 years is for ever, and no kernel's arithmetic overflows.
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let timeout = timeout.as_ref().map_or(ptr::null(), ptr::from_ref);
    // SAFETY: the pointers and lengths come from live slices: the kernel
    // reads `changes` and writes at most `events.len()` entries. `timeout`
    // is null or points at a live timespec.
    let n = unsafe {
        libc::kevent(
            kq.as_raw_fd(),
            changes.as_ptr(),
            changes.len() as _,
            events.as_mut_ptr(),
            events.len() as _,
            timeout,
        )
    };
    Errno::result(n).map(|n| n as usize)
}
