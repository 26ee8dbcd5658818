//! The operating system: the one place that calls it, and the one place for `unsafe`.
//!
//! Above this module nothing names an OS: no file descriptor flags, no errno,
//! no `cfg(target_os)`. Each OS family has one backend, picked at compile
//! time, and every backend provides the same face with the same guarantees:
//!
//! - [`Poller`]: `new(capacity, wake_token)`, `register(fd, token, Interest)`,
//!   `deregister(fd)`, `wait(timeout)` and `event(i)`. It is `Send`; tokens
//!   are any `u64` the caller picks.
//!   - Registration is edge-triggered and happens once per fd; there is no
//!     `modify`. [`Interest::ReadWrite`] reports readable, writable and the
//!     peer's FIN together, so a pending write never costs a system call.
//!   - `deregister` runs before the fd closes: the number is reused at once.
//!   - `wait(None)` waits for ever; a signal that interrupts it returns 0
//!     events, never an error. After a wait, events `0..n` are read in place.
//!   - One wait reports at most one [`Event`] per token: readable, writable,
//!     read-closed and error come merged, whatever the kernel's own shape.
//!   - The poller owns its wake-up. [`Poller::waker`] hands out a [`Waker`]
//!     (`Clone + Send + Sync`) whose `wake` makes the current or next `wait`
//!     return an event whose token is `wake_token`. Wake-ups never need to
//!     be acknowledged, and many before a wait may come as one.
//! - [`Event`]: `token()`, `is_readable()`, `is_writable()`,
//!   `is_read_closed()` (the peer sent FIN, never our own shutdown) and
//!   `is_error()` (a pending socket error: the next read, write or
//!   `take_error` says which).
//! - [`Signals`]: `new(&poller, token)` takes SIGINT, SIGTERM and SIGUSR1
//!   away from their default actions; an event with `token` means
//!   [`Signals::next`] has something, and it is called until `Ok(None)`.
//!   Call `new` in `main` before any thread starts.
//! - [`Listener`] and [`Socket`]: non-blocking and close-on-exec before the
//!   caller sees them; a write to a peer that has gone is `EPIPE`, never
//!   `SIGPIPE`.
//!   [`Listener::accept`] says why it failed as an [`AcceptError`].
//! - [`Pipe`] and [`SPLICE`]: zero-copy relaying where the kernel has it; a
//!   `Pipe` type exists everywhere, and `Pipe::new` fails with
//!   [`io::ErrorKind::Unsupported`] where `SPLICE` is false.
//! - [`cpu_time`] of any process (Linux, macOS and FreeBSD; elsewhere it
//!   fails with `Unsupported`); [`pin_thread`] to one CPU where [`PIN`]
//!   says it can (Linux), [`raise_fd_limit`], [`grow_fd_table`],
//!   [`open_descriptors`], [`SpareFd`] and
//!   [`spawn_without_signals`]; [`somaxconn`] and [`ephemeral_ports`], the
//!   kernel's cap on accept queues and its range of client ports.
//!
//! Backends: `linux/` (epoll, eventfd, signalfd, splice) and `bsd/` (kqueue
//! on macOS, iOS, FreeBSD, OpenBSD, NetBSD and DragonFly). What all Unixes
//! share, sockets first, is in `unix/`.

use std::io;

mod addr;
pub use addr::{Addr, AddrParseError};

pub mod os;
pub use os::{Os, Real};

mod unix;
pub use unix::{
    ListenOptions, Listener, Socket, SocketOptions, SpareFd, ephemeral_ports, grow_fd_table,
    open_descriptors, raise_fd_limit, somaxconn, spawn_without_signals,
};
pub use unix::{is_own_address, open_fifo_for_writing};

#[cfg(target_os = "linux")]
#[path = "linux/mod.rs"]
mod backend;

#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd",
    target_os = "openbsd",
))]
#[path = "bsd/mod.rs"]
mod backend;

pub use backend::{Event, PIN, Pipe, Poller, SPLICE, Signals, Waker, cpu_time, pin_thread};

/// What a registration asks to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Listeners: only readability matters.
    Readable,
    /// Connections: readable, writable and the peer's FIN, all at once.
    ReadWrite,
}

/// What an operator asked for with a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGINT or SIGTERM.
    Terminate,
    /// SIGUSR1.
    Report,
}

/// Why [`Listener::accept`] returned no connection.
#[derive(Debug)]
pub enum AcceptError {
    /// Nobody is waiting (`EAGAIN`): the queue is drained.
    WouldBlock,
    /// The process or the system is out of file descriptors (`EMFILE`,
    /// `ENFILE`). A connection may be waiting all the same: freeing one
    /// descriptor lets it be accepted and closed.
    OutOfDescriptors(io::Error),
    /// A queued connection was reset before it was accepted
    /// (`ECONNABORTED`; `EPROTO` on some BSDs). Only that one is lost.
    PeerAborted,
    /// Anything else, kernel memory (`ENOBUFS`, `ENOMEM`) included: a spare
    /// descriptor would not help there, waiting a little might.
    Other(io::Error),
}

#[cfg(test)]
mod tests;
