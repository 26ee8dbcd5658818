//! epoll backend of the [`Poller`], and an eventfd [`Waker`].

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use super::Interest;

/// One readiness report, read straight out of the kernel's event array.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    token: u64,
    flags: EpollFlags,
}

impl Event {
    pub fn token(&self) -> u64 {
        self.token
    }

    pub fn is_readable(&self) -> bool {
        self.flags
            .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI)
    }

    pub fn is_writable(&self) -> bool {
        self.flags.contains(EpollFlags::EPOLLOUT)
    }

    /// The peer will send no more: FIN seen (RDHUP) or the socket is fully hung up.
    pub fn is_read_closed(&self) -> bool {
        self.flags
            .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP)
    }

    /// A pending socket error (a reset, say); the next read or write reports it.
    pub fn is_error(&self) -> bool {
        self.flags.contains(EpollFlags::EPOLLERR)
    }
}

/// An epoll instance plus the event array that `wait` fills and the caller
/// reads in place.
pub struct Poller {
    epoll: Epoll,
    events: Vec<EpollEvent>,
    ready: usize,
}

impl Poller {
    /// `capacity` is the most events one `wait` returns; more stay queued in
    /// the kernel for the next call.
    pub fn new(capacity: usize) -> io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        Ok(Poller {
            epoll,
            events: vec![EpollEvent::empty(); capacity.max(1)],
            ready: 0,
        })
    }

    pub fn register(&self, fd: impl AsFd, token: u64, interest: Interest) -> io::Result<()> {
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        if interest == Interest::ReadWrite {
            flags |= EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP;
        }
        self.epoll.add(fd, EpollEvent::new(flags, token))?;
        Ok(())
    }

    /// Must run before the fd is closed: the number is reused at once.
    pub fn deregister(&self, fd: impl AsFd) -> io::Result<()> {
        self.epoll.delete(fd)?;
        Ok(())
    }

    /// Waits for readiness; `None` waits for ever. A timeout below one
    /// millisecond is rounded up, never down to a busy zero. An interrupted
    /// wait returns 0 events.
    pub fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout = match timeout {
            None => EpollTimeout::NONE,
            Some(d) => {
                let ms = d.as_nanos().div_ceil(1_000_000);
                EpollTimeout::try_from(ms).unwrap_or(EpollTimeout::MAX)
            }
        };
        self.ready = match self.epoll.wait(&mut self.events, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        Ok(self.ready)
    }

    /// The `i`-th event of the last wait.
    pub fn event(&self, i: usize) -> Event {
        let ev = &self.events[..self.ready][i];
        Event {
            token: ev.data(),
            flags: ev.events(),
        }
    }
}

/// Wakes a poller from another thread (eventfd).
pub struct Waker {
    fd: EventFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        let fd = EventFd::from_flags(EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Waker { fd })
    }

    pub fn wake(&self) -> io::Result<()> {
        match self.fd.write(1) {
            // The counter is saturated: a wake-up is pending anyway.
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Clears pending wake-ups, so the next `wake` makes a new edge.
    pub fn reset(&self) -> io::Result<()> {
        match self.fd.read() {
            Ok(_) | Err(Errno::EAGAIN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

impl AsFd for Waker {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
