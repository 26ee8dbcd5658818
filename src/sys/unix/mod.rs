//! What every Unix shares: TCP sockets, the descriptor limit and reserve,
//! threads that take no signals, and the one place that retries `EINTR`.

#[expect(
    unsafe_code,
    reason = "taking over passed descriptors; unsetting LISTEN_* variables"
)]
mod activation;
#[expect(
    unsafe_code,
    reason = "accept(2) writes the peer's address into our buffer"
)]
mod birth;
mod fifo;
#[expect(
    unsafe_code,
    reason = "fork(2) and execve(2): LISTEN_PID is known only in the child"
)]
mod handover;
mod ifaddrs;
#[allow(unsafe_code, reason = "sysctlbyname(3), off Linux")]
mod net_limits;
mod notify;
#[expect(
    unsafe_code,
    reason = "adopting a duplicated descriptor; sysctlbyname(3) on macOS"
)]
mod process;
#[expect(
    unsafe_code,
    reason = "adopting accepted descriptors, FIONREAD, sockaddr casts"
)]
mod socket;
mod tcp_timers;
#[allow(
    unsafe_code,
    reason = "read(2) and send(2) through syscall(2), on Linux"
)]
mod transfer;

pub use activation::{PassedListener, take_passed_listeners};
pub use fifo::open_fifo_for_writing;
pub use handover::{Child, spawn_with_listeners};
pub use ifaddrs::is_own_address;
pub use net_limits::{ephemeral_ports, somaxconn};
pub use notify::{Notifier, NotifyListener};
pub use process::{
    SpareFd, grow_fd_table, open_descriptors, raise_fd_limit, spawn_without_signals,
};
pub use socket::{Listener, Socket};
pub use tcp_timers::{KEEPALIVE_TIMES, USER_TIMEOUT};

use nix::errno::Errno;
use nix::sys::signal::Signal;

use super::SignalKind;

/// The signals that [`Signals`](super::Signals) takes over.
pub(crate) const HANDLED_SIGNALS: [Signal; 5] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGHUP,
    Signal::SIGUSR2,
];

/// What the signal numbered `signo` asks for, if it is one of ours.
pub(crate) fn signal_kind(signo: libc::c_int) -> Option<SignalKind> {
    match Signal::try_from(signo) {
        Ok(Signal::SIGINT | Signal::SIGTERM) => Some(SignalKind::Terminate),
        Ok(Signal::SIGUSR1) => Some(SignalKind::Report),
        Ok(Signal::SIGHUP) => Some(SignalKind::Reload),
        Ok(Signal::SIGUSR2) => Some(SignalKind::Upgrade),
        _ => None,
    }
}

/// Calls `call` again for as long as a signal interrupts it (`EINTR`).
///
/// Every call in `sys` that a signal can cut short goes through here, except
/// the pollers' waits: an interrupted wait returns to its caller, which may
/// have timers to look at.
pub(crate) fn retry<T>(mut call: impl FnMut() -> nix::Result<T>) -> nix::Result<T> {
    loop {
        match call() {
            Err(Errno::EINTR) => continue,
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_calls_again_after_eintr_and_stops_at_anything_else() {
        let mut calls = 0;
        let result = retry(|| {
            calls += 1;
            if calls < 3 {
                Err(Errno::EINTR)
            } else {
                Ok(calls)
            }
        });
        assert_eq!(result, Ok(3));

        let mut calls = 0;
        let result: nix::Result<()> = retry(|| {
            calls += 1;
            Err(Errno::ECONNRESET)
        });
        assert_eq!((result, calls), (Err(Errno::ECONNRESET), 1));
    }
}
