//! Process-wide resources: signals as readable events (signalfd, so no work
//! ever runs inside a signal handler), and file descriptors.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::thread::{self, JoinHandle};

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// What an operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGINT or SIGTERM.
    Terminate,
    /// SIGUSR1.
    Report,
}

/// SIGINT, SIGTERM and SIGUSR1, delivered through a file descriptor.
pub struct Signals {
    fd: SignalFd,
}

impl Signals {
    /// Blocks the signals in the calling thread and opens a signalfd for them.
    /// Call it before any thread starts: threads inherit the mask, and a
    /// thread that does not block them would take them the default way.
    pub fn new() -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for signal in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGUSR1] {
            mask.add(signal);
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        Ok(Signals { fd })
    }

    /// The next pending signal, if any.
    pub fn next(&self) -> io::Result<Option<SignalKind>> {
        while let Some(info) = self.fd.read_signal()? {
            match Signal::try_from(info.ssi_signo as i32) {
                Ok(Signal::SIGINT | Signal::SIGTERM) => return Ok(Some(SignalKind::Terminate)),
                Ok(Signal::SIGUSR1) => return Ok(Some(SignalKind::Report)),
                _ => {}
            }
        }
        Ok(None)
    }
}

impl AsFd for Signals {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Starts a thread that blocks every signal.
///
/// [`Signals`] works only while every thread blocks SIGINT, SIGTERM and
/// SIGUSR1: a thread that does not would take a SIGTERM the default way and
/// end the process. A new thread inherits its creator's mask, and the creator
/// may be any thread at any time (a library user's, or `main` before
/// [`Signals::new`]), so the mask is set here, across the spawn, rather than
/// left to the caller.
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

/// Raises the soft limit on open files to the hard limit; returns the new limit.
pub fn raise_fd_limit() -> io::Result<u64> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// One file descriptor held in reserve. When `accept` fails for lack of
/// descriptors, releasing it makes room to accept the waiting connection and
/// close it at once; otherwise that connection would stay queued and keep the
/// listener readable for ever.
pub struct SpareFd(Option<File>);

impl SpareFd {
    pub fn new() -> SpareFd {
        SpareFd(File::open("/dev/null").ok())
    }

    /// Closes the reserve; false if there was none to close.
    pub fn release(&mut self) -> bool {
        self.0.take().is_some()
    }

    /// Whether the reserve is held.
    pub fn is_held(&self) -> bool {
        self.0.is_some()
    }

    /// Takes the reserve back, if a descriptor is free again.
    pub fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = File::open("/dev/null").ok();
        }
    }
}

impl Default for SpareFd {
    fn default() -> Self {
        SpareFd::new()
    }
}
