//! The operating system: the one place that calls it, and the one place for `unsafe`.
//!
//! Above this module nothing names an OS: no file descriptor flags, no errno,
//! no `cfg(target_os)`. The contract is [`os`]: traits whose doc comments
//! say what every backend guarantees, and the types they speak in.
//!
//! - [`Os`] bundles an OS's types and its clock; [`Real`] is this machine's.
//! - [`Poller`] ([`os::Poll`], [`os::Register`]): edge-triggered readiness,
//!   registered once per fd, one [`Event`] ([`os::Readiness`]) per token
//!   per wait, and its own [`Waker`] ([`os::Wake`]).
//! - [`Listener`] and [`Socket`] ([`os::Listen`], [`os::Stream`]): TCP and
//!   Unix-domain, non-blocking, close-on-exec and free of `SIGPIPE`.
//! - [`Signals`] ([`os::SignalSource`]), [`SpareFd`] ([`os::Spare`]) and
//!   [`Pipe`] ([`os::Splice`], where [`SPLICE`] says splice(2) exists).
//!
//! Outside the reactor's contract, for start-up and the load generator:
//! [`cpu_time`] of any process (Linux, macOS and FreeBSD; elsewhere it
//! fails with `Unsupported`); [`pin_thread`] to one CPU where [`PIN`] says
//! it can (Linux); [`raise_fd_limit`], [`grow_fd_table`],
//! [`open_descriptors`] and [`spawn_without_signals`]; [`somaxconn`] and
//! [`ephemeral_ports`], the kernel's cap on accept queues and its range of
//! client ports; [`take_passed_listeners`], the listening sockets a
//! parent passed (systemd's socket activation, `LISTEN_FDS`), and the
//! [`Notifier`] that tells it `READY=1` and `STOPPING=1` (`NOTIFY_SOCKET`);
//! the parent's side of both, [`spawn_with_listeners`] and
//! [`NotifyListener`], for a server that hands its sockets to a successor.
//!
//! [`Keepalive`] and the user timeout of [`SocketOptions`] are the
//! kernel's dead-peer timers; [`KEEPALIVE_TIMES`] and [`USER_TIMEOUT`] say
//! what this OS sets per socket.
//!
//! Backends, picked at compile time: `linux/` (epoll, eventfd, signalfd,
//! splice) and `bsd/` (kqueue on macOS, iOS, FreeBSD, OpenBSD, NetBSD and
//! DragonFly). What all Unixes share, sockets first, is in `unix/`.

// Every `unsafe` below says why it holds; the modules that need one allow
// it by name, the rest of the crate denies it (lib.rs).
#![deny(clippy::undocumented_unsafe_blocks)]

use std::time::Instant;

mod addr;
pub use addr::{Addr, AddrParseError};

pub mod os;
pub use os::{AcceptError, Interest, Keepalive, ListenOptions, Os, SignalKind, SocketOptions};

mod unix;
pub use unix::{
    Child, KEEPALIVE_TIMES, Notifier, NotifyListener, PassedListener, USER_TIMEOUT, is_own_address,
    open_fifo_for_writing, spawn_with_listeners, take_passed_listeners,
};
pub use unix::{
    Listener, Socket, SpareFd, ephemeral_ports, grow_fd_table, open_descriptors, raise_fd_limit,
    somaxconn, spawn_without_signals,
};

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

/// This machine's operating system: the backend of this build, and the
/// sockets all Unixes share.
pub struct Real;

impl Os for Real {
    type Poller = backend::Poller;
    type Listener = unix::Listener;
    type Socket = unix::Socket;
    type Pipe = backend::Pipe;
    type Signals = backend::Signals;
    type SpareFd = unix::SpareFd;

    const SPLICE: bool = backend::SPLICE;

    fn now() -> Instant {
        Instant::now()
    }
}

#[cfg(test)]
mod tests;
