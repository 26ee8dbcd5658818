//! Signals as readable events through a signalfd, so no work ever runs
//! inside a signal handler.

use std::io;

use nix::sys::signal::SigSet;
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::Poller;
use crate::sys::os::{Interest, Register, SignalKind, SignalSource};
use crate::sys::unix::{HANDLED_SIGNALS, signal_kind};

/// SIGINT, SIGTERM, SIGUSR1, SIGHUP and SIGUSR2, delivered through a file descriptor.
pub struct Signals {
    fd: SignalFd,
}

impl SignalSource for Signals {
    type Poller = Poller;

    // Blocks the signals in the calling thread: threads started later
    // inherit the mask, and a thread that does not block them would take
    // them the default way.
    fn new(poller: &Poller, token: u64) -> io::Result<Signals> {
        let mut mask = SigSet::empty();
        for signal in HANDLED_SIGNALS {
            mask.add(signal);
        }
        mask.thread_block()?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)?;
        poller.register(&fd, token, Interest::Readable)?;
        Ok(Signals { fd })
    }

    fn next(&self) -> io::Result<Option<SignalKind>> {
        while let Some(info) = self.fd.read_signal()? {
            if let Some(kind) = signal_kind(info.ssi_signo as i32) {
                return Ok(Some(kind));
            }
        }
        Ok(None)
    }
}
