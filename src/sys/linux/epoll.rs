//! The epoll [`Poller`], with an eventfd as its [`Waker`].

use std::io;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};

use crate::sys::os::{Interest, Poll, Readiness, Register, Wake};

/// One readiness report, read straight out of the kernel's event array.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    token: u64,
    flags: EpollFlags,
}

impl Readiness for Event {
    fn token(&self) -> u64 {
        self.token
    }

    fn is_readable(&self) -> bool {
        self.flags
            .intersects(EpollFlags::EPOLLIN | EpollFlags::EPOLLPRI)
    }

    fn is_writable(&self) -> bool {
        self.flags.contains(EpollFlags::EPOLLOUT)
    }

    // The peer will send no more: FIN seen (RDHUP) or the socket is fully hung up.
    fn is_read_closed(&self) -> bool {
        self.flags
            .intersects(EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP)
    }

    fn is_error(&self) -> bool {
        self.flags.contains(EpollFlags::EPOLLERR)
    }
}

/// An epoll instance, its wake-up, and the event array that `wait` fills and
/// the caller reads in place. epoll reports one entry per fd, so each token
/// comes at most once per wait without any merging.
pub struct Poller {
    epoll: Epoll,
    waker: Waker,
    events: Vec<EpollEvent>,
    ready: usize,
}

impl Poll for Poller {
    type Event = Event;
    type Waker = Waker;

    fn new(capacity: usize, wake_token: u64) -> io::Result<Poller> {
        let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)?;
        let waker = Waker {
            fd: Arc::new(EventFd::from_flags(
                EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC,
            )?),
        };
        // Edge-triggered, every write to the counter is a new edge, so the
        // counter is never read and a wake-up needs no acknowledging.
        let flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        epoll.add(&*waker.fd, EpollEvent::new(flags, wake_token))?;
        Ok(Poller {
            epoll,
            waker,
            events: vec![EpollEvent::empty(); capacity.max(1)],
            ready: 0,
        })
    }

    // A timeout below one millisecond, epoll's unit, is rounded up.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
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

    fn event(&self, i: usize) -> Event {
        let ev = &self.events[..self.ready][i];
        Event {
            token: ev.data(),
            flags: ev.events(),
        }
    }

    fn waker(&self) -> Waker {
        self.waker.clone()
    }
}

impl<S: AsFd> Register<S> for Poller {
    fn register(&self, source: &S, token: u64, interest: Interest) -> io::Result<()> {
        let mut flags = EpollFlags::EPOLLIN | EpollFlags::EPOLLET;
        if interest == Interest::ReadWrite {
            flags |= EpollFlags::EPOLLOUT | EpollFlags::EPOLLRDHUP;
        }
        self.epoll.add(source, EpollEvent::new(flags, token))?;
        Ok(())
    }

    fn deregister(&self, source: &S) -> io::Result<()> {
        self.epoll.delete(source)?;
        Ok(())
    }
}

/// Wakes its [`Poller`] from any thread: adds one to the eventfd's counter.
#[derive(Clone)]
pub struct Waker {
    fd: Arc<EventFd>,
}

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        match self.fd.write(1) {
            Ok(_) => Ok(()),
            // The counter is saturated (after 2^64 - 2 unread wake-ups):
            // empty it and add again, which is a new edge.
            Err(Errno::EAGAIN) => {
                self.fd.read()?;
                self.fd.write(1)?;
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }
}
