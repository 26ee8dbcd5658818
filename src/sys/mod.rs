//! The operating system: the one place that calls it, and the one place for `unsafe`.
//!
//! The reactor sees only this small face: a [`Poller`] (register, deregister,
//! wait, events), a [`Waker`], a [`Listener`] and a [`Socket`]. The backend is
//! chosen at compile time, one file per OS, so another (kqueue, or a simulated
//! OS for fault injection) can stand in without touching the reactor.

#[cfg(target_os = "linux")]
mod epoll;
#[cfg(target_os = "linux")]
pub use epoll::{Event, Poller, Waker};

#[cfg(target_os = "linux")]
mod process;
#[cfg(target_os = "linux")]
pub use process::{SignalKind, Signals, SpareFd, raise_fd_limit, spawn_without_signals};

#[cfg(target_os = "linux")]
mod splice;
#[cfg(target_os = "linux")]
pub use splice::Pipe;

mod addr;
pub use addr::{Addr, AddrParseError};

mod socket;
pub use socket::{ListenOptions, Listener, Socket, SocketOptions};

/// What a registration asks to be told about. Registration is edge-triggered
/// and happens once per fd: there is no way to change it later, by design.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Listeners and wakers: only readability matters.
    Readable,
    /// Connections: readable, writable and peer half-close, all at once, so
    /// that a pending write never costs an extra registration call.
    ReadWrite,
}
