//! The kqueue backend, for macOS, iOS, FreeBSD, OpenBSD, NetBSD and DragonFly:
//! kqueue with an `EVFILT_USER` wake-up, signals through `EVFILT_SIGNAL`, and
//! no splice(2).

mod cpu;
mod kevent;
mod kqueue;
mod pipe;
mod signals;

pub use cpu::{PIN, cpu_time, pin_thread};
pub use kqueue::{Event, Poller, Waker};
pub use pipe::{Pipe, SPLICE};
pub use signals::Signals;
