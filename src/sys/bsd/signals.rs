//! Signals through kqueue's `EVFILT_SIGNAL`, so no work ever runs inside a
//! signal handler.

use std::io;
use std::os::fd::OwnedFd;
use std::time::Duration;

use nix::sys::signal::{SigHandler, signal};

use super::Poller;
use super::kevent::{change, empty, kevent, kqueue, submit};
use crate::sys::os::{Interest, Register, SignalKind, SignalSource};
use crate::sys::unix::{HANDLED_SIGNALS, retry, signal_kind};

/// SIGINT, SIGTERM, SIGUSR1, SIGHUP and SIGUSR2, reported by a kqueue of their own.
///
/// `EVFILT_SIGNAL` records a signal without taking it: a signal whose action
/// is the default still ends the process. So the signals are set to be
/// ignored, process-wide, which the filter still records. They are watched
/// by their own kqueue rather than the poller's, because each report names
/// its signal and the poller merges the reports of a token; that kqueue is
/// readable, in the poller, whenever it holds a report.
pub struct Signals {
    kq: OwnedFd,
}

impl SignalSource for Signals {
    type Poller = Poller;

    // Sets the signals to be ignored, for the whole process.
    fn new(poller: &Poller, token: u64) -> io::Result<Signals> {
        let kq = kqueue()?;
        // EVFILT_SIGNAL is edge-triggered (EV_CLEAR) by nature.
        let watch = HANDLED_SIGNALS.map(|signal| {
            change(
                signal as usize,
                libc::EVFILT_SIGNAL,
                libc::EV_ADD | libc::EV_RECEIPT,
                0,
                0,
            )
        });
        submit(&kq, watch, &[])?;
        for handled in HANDLED_SIGNALS {
            // SAFETY: SIG_IGN installs no handler, so no code of ours ever
            // runs in signal context.
            unsafe { signal(handled, SigHandler::SigIgn) }?;
        }
        poller.register(&kq, token, Interest::Readable)?;
        Ok(Signals { kq })
    }

    fn next(&self) -> io::Result<Option<SignalKind>> {
        let mut report = [empty()];
        while retry(|| kevent(&self.kq, &[], &mut report, Some(Duration::ZERO)))? == 1 {
            if let Some(kind) = signal_kind(report[0].ident as libc::c_int) {
                return Ok(Some(kind));
            }
        }
        Ok(None)
    }
}
