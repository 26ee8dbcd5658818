//! The Linux backend: epoll with an eventfd wake-up, signalfd, splice(2),
//! and CPU times from /proc.

#[expect(
    unsafe_code,
    reason = "sched_getaffinity(2) and sched_setaffinity(2) on a cpu_set_t"
)]
mod cpu;
mod epoll;
mod signals;
mod splice;

pub use cpu::{PIN, cpu_time, pin_thread};
pub use epoll::{Event, Poller, Waker};
pub use signals::Signals;
pub use splice::{Pipe, SPLICE};
