//! The Linux backend: epoll with an eventfd wake-up, signalfd, splice(2),
//! and CPU times from /proc.

mod cpu;
mod epoll;
mod signals;
mod splice;

pub use cpu::cpu_time;
pub use epoll::{Event, Poller, Waker};
pub use signals::Signals;
pub use splice::{Pipe, SPLICE};
