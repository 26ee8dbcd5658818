//! The kqueue backend, for macOS, iOS, FreeBSD, OpenBSD, NetBSD and DragonFly:
//! kqueue with an `EVFILT_USER` wake-up, signals through `EVFILT_SIGNAL`, and
//! no splice(2).

#[allow(unsafe_code, reason = "proc_pidinfo on macOS, sysctl(3) on FreeBSD")]
mod cpu;
#[expect(unsafe_code, reason = "kqueue(2) and kevent(2) on raw kevent structs")]
mod kevent;
#[expect(
    unsafe_code,
    reason = "Send for a poller whose kevents carry tokens as pointers"
)]
mod kqueue;
mod pipe;
#[expect(unsafe_code, reason = "signal(3) to ignore the signals kqueue records")]
mod signals;

pub use cpu::{PIN, cpu_time, pin_thread};
pub use kqueue::{Event, Poller, Waker};
pub use pipe::{Pipe, SPLICE};
pub use signals::Signals;
