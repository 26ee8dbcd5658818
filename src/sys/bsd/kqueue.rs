//! The kqueue [`Poller`], with an `EVFILT_USER` event as its [`Waker`].
//!
//! kqueue keeps one filter per (fd, direction): a socket registered for
//! both has a read and a write filter, each reporting on its own. Both are
//! added once with `EV_CLEAR`, which makes them edge-triggered like the epoll
//! backend: a filter reports again only after something new happened.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::Duration;

use nix::errno::Errno;

use super::kevent::{change, empty, kevent, kqueue, submit, token};
use crate::sys::os::{Interest, Poll, Readiness, Register, Wake};

/// The one user event of each kqueue: its wake-up.
const WAKE_IDENT: usize = 0;

const READABLE: u8 = 1;
const WRITABLE: u8 = 2;
const READ_CLOSED: u8 = 4;
const ERROR: u8 = 8;

/// One token's readiness in one wait: what its read and write filters
/// reported, merged.
#[derive(Debug, Clone, Copy)]
pub struct Event {
    token: u64,
    readiness: u8,
}

impl Readiness for Event {
    fn token(&self) -> u64 {
        self.token
    }

    fn is_readable(&self) -> bool {
        self.readiness & READABLE != 0
    }

    fn is_writable(&self) -> bool {
        self.readiness & WRITABLE != 0
    }

    // The peer sent FIN: `EV_EOF` on the read filter.
    fn is_read_closed(&self) -> bool {
        self.readiness & READ_CLOSED != 0
    }

    fn is_error(&self) -> bool {
        self.readiness & ERROR != 0
    }
}

impl Event {
    fn from_kevent(ev: &libc::kevent) -> Event {
        let eof = ev.flags & libc::EV_EOF != 0;
        let mut readiness = match ev.filter {
            libc::EVFILT_READ if eof => READABLE | READ_CLOSED,
            libc::EVFILT_READ | libc::EVFILT_USER => READABLE,
            // EV_EOF here means only that nothing more can be sent, which
            // our own shutdown causes too: it is not the peer's FIN.
            libc::EVFILT_WRITE => WRITABLE,
            _ => 0,
        };
        // With EV_EOF, `fflags` holds the socket's pending error, if any.
        if ev.flags & libc::EV_ERROR != 0 || (eof && ev.fflags != 0) {
            readiness |= ERROR;
        }
        Event {
            token: token(ev),
            readiness,
        }
    }
}

/// A kqueue, the array that `wait` has the kernel fill, and the events made
/// of it: one per token.
pub struct Poller {
    kq: Arc<OwnedFd>,
    wake_token: u64,
    raw: Vec<libc::kevent>,
    events: Vec<Event>,
}

// SAFETY: the only pointers in a `kevent` are `udata`, which carry tokens
// (integers) and are never dereferenced.
unsafe impl Send for Poller {}

impl Poll for Poller {
    type Event = Event;
    type Waker = Waker;

    // `capacity` counts filters, as the kernel reports them: a token whose
    // read and write filters both fire takes two.
    fn new(capacity: usize, wake_token: u64) -> io::Result<Poller> {
        let kq = Arc::new(kqueue()?);
        let flags = libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT;
        let wake = change(WAKE_IDENT, libc::EVFILT_USER, flags, 0, wake_token);
        submit(&kq, [wake], &[])?;
        let capacity = capacity.max(1);
        Ok(Poller {
            kq,
            wake_token,
            raw: vec![empty(); capacity],
            events: Vec::with_capacity(capacity),
        })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let n = match kevent(&self.kq, &[], &mut self.raw, timeout) {
            Ok(n) => n,
            Err(Errno::EINTR) => 0,
            Err(e) => return Err(e.into()),
        };
        self.merge(n);
        Ok(self.events.len())
    }

    fn event(&self, i: usize) -> Event {
        self.events[i]
    }

    fn waker(&self) -> Waker {
        Waker {
            kq: Arc::clone(&self.kq),
            token: self.wake_token,
        }
    }
}

impl Poller {
    /// Folds the first `n` kernel reports into one event per token, so that
    /// a connection's read and write are handled together, in the reactor's
    /// order, as on epoll. Sorting by token puts each token's reports side
    /// by side; it works in place, so a wait allocates nothing.
    fn merge(&mut self, n: usize) {
        let raw = &mut self.raw[..n];
        raw.sort_unstable_by_key(token);
        self.events.clear();
        for ev in raw.iter() {
            let next = Event::from_kevent(ev);
            match self.events.last_mut() {
                Some(last) if last.token == next.token => last.readiness |= next.readiness,
                _ => self.events.push(next),
            }
        }
    }
}

impl<S: AsFd> Register<S> for Poller {
    fn register(&self, source: &S, token: u64, interest: Interest) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd() as usize;
        let flags = libc::EV_ADD | libc::EV_CLEAR | libc::EV_RECEIPT;
        let read = change(fd, libc::EVFILT_READ, flags, 0, token);
        match interest {
            Interest::Readable => submit(&self.kq, [read], &[])?,
            Interest::ReadWrite => {
                let write = change(fd, libc::EVFILT_WRITE, flags, 0, token);
                submit(&self.kq, [read, write], &[])?;
            }
        }
        Ok(())
    }

    // Closing the fd would remove its filters too; this keeps the contract
    // the same as epoll's, where it must run first.
    fn deregister(&self, source: &S) -> io::Result<()> {
        let fd = source.as_fd().as_raw_fd() as usize;
        let flags = libc::EV_DELETE | libc::EV_RECEIPT;
        let read = change(fd, libc::EVFILT_READ, flags, 0, 0);
        let write = change(fd, libc::EVFILT_WRITE, flags, 0, 0);
        // A listener has no write filter to delete.
        submit(&self.kq, [read, write], &[Errno::ENOENT])?;
        Ok(())
    }
}

/// Wakes its [`Poller`] from any thread by triggering its user event.
#[derive(Clone)]
pub struct Waker {
    kq: Arc<OwnedFd>,
    token: u64,
}

impl Wake for Waker {
    fn wake(&self) -> io::Result<()> {
        let flags = libc::EV_RECEIPT;
        let trigger = change(
            WAKE_IDENT,
            libc::EVFILT_USER,
            flags,
            libc::NOTE_TRIGGER,
            self.token,
        );
        submit(&self.kq, [trigger], &[])?;
        Ok(())
    }
}
