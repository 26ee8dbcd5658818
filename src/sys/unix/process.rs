//! Process-wide resources: file descriptors, and threads that take no signals.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::thread::{self, JoinHandle};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow};

use crate::sys::os::Spare;

/// Starts a thread that blocks every signal.
///
/// On Linux, [`Signals`](crate::sys::Signals) works only while every thread
/// blocks SIGINT, SIGTERM, SIGUSR1, SIGHUP and SIGUSR2: a thread that does not would
/// take a SIGTERM the default way and end the process. A new thread inherits its
/// creator's mask, and the creator may be any thread at any time (a library
/// user's, or `main` before `Signals::new`), so the mask is set here, across
/// the spawn, rather than left to the caller.
pub fn spawn_without_signals<F, T>(name: &str, body: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let old = SigSet::all().thread_swap_mask(SigmaskHow::SIG_BLOCK)?;
    let spawned = thread::Builder::new().name(name.to_owned()).spawn(body);
    old.thread_set_mask()?;
    spawned
}

/// Raises the soft limit on open files as far as the hard limit and the
/// kernel allow; returns the limit now in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    let target = hard.min(kernel_fd_ceiling());
    if soft < target {
        setrlimit(Resource::RLIMIT_NOFILE, target, hard)?;
    }
    // Read back rather than trust `target`: some kernels clamp quietly.
    // rlim_t is signed on some BSDs, but never negative.
    let soft: libc::rlim_t = getrlimit(Resource::RLIMIT_NOFILE)?.0;
    Ok(soft as u64)
}

/// Grows this process's descriptor table to hold `n` descriptors, once,
/// before serving.
///
/// The kernel grows the table by doubling as descriptors are opened, and
/// in a process of more than one thread (the supervisor, the stderr writer,
/// the reactors) Linux makes each growth wait for an RCU grace period: 5–20
/// ms here, spent inside whichever `accept4`, `pipe2` or `socket` opened the
/// descriptor, with every connection of that reactor waiting behind it.
/// The table never shrinks, so opening descriptor `n - 1` and closing it
/// again pays for all of it up front, at 8 bytes and some bits a slot.
pub fn grow_fd_table(n: u64) -> io::Result<()> {
    let Some(top) = n.checked_sub(1) else {
        return Ok(());
    };
    let top = libc::c_int::try_from(top).unwrap_or(libc::c_int::MAX);
    let null = File::open("/dev/null")?;
    let fd = fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(top))?;
    // SAFETY: `fd` was just made by F_DUPFD_CLOEXEC and nothing else owns it;
    // the OwnedFd closes it when dropped here.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

/// How many descriptors this process has open, from the directory that
/// lists them: `/proc/self/fd` on Linux, `/dev/fd` on macOS (and on the BSDs
/// with fdescfs mounted; without it, `/dev/fd` lists only 0, 1 and 2).
pub fn open_descriptors() -> io::Result<u64> {
    let listing = std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd"))?;
    // The listing holds a descriptor of its own, which is in it.
    Ok((listing.count() as u64).saturating_sub(1))
}

/// macOS may report an unlimited hard limit, yet refuses (`EINVAL`) a soft
/// limit above `kern.maxfilesperproc`.
#[cfg(target_vendor = "apple")]
fn kernel_fd_ceiling() -> libc::rlim_t {
    /// `OPEN_MAX` of `<sys/syslimits.h>`, what setrlimit(2) advises.
    const OPEN_MAX: libc::rlim_t = 10240;
    let mut max: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is NUL-terminated, `max` is a writable c_int and
    // `len` holds its size; nothing is written (null new value, length 0).
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.maxfilesperproc".as_ptr(),
            (&raw mut max).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    match libc::rlim_t::try_from(max) {
        Ok(max) if rc == 0 && max > 0 => max,
        _ => OPEN_MAX,
    }
}

/// Elsewhere the hard limit is what the kernel grants, or it clamps quietly.
#[cfg(not(target_vendor = "apple"))]
fn kernel_fd_ceiling() -> libc::rlim_t {
    libc::RLIM_INFINITY
}

/// One file descriptor held in reserve: `/dev/null`, opened for reading.
pub struct SpareFd(Option<File>);

impl Spare for SpareFd {
    fn new() -> SpareFd {
        SpareFd(File::open("/dev/null").ok())
    }

    fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }

    fn is_held(&self) -> bool {
        self.0.is_some()
    }
}
