//! The operating system as one type: what the reactor is generic over.
//!
//! [`Real`] is this machine's OS, through the backend of this module. A test
//! can put another [`Os`] in its place — a simulated one, with byte queues
//! for sockets, a virtual clock and faults on demand — and drive the very
//! same reactor. Dispatch is static: `Reactor<S>` means `Reactor<S, Real>`,
//! and every call below compiles to the call it stands for.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::{AcceptError, Addr, ListenOptions, SignalKind, SocketOptions};

/// An operating system: the types the reactor holds and how to make them.
pub trait Os: 'static {
    type Poller: Poll;
    type Listener: Listen<Socket = Self::Socket>;
    type Socket: Stream;
    type Pipe: Splice<Socket = Self::Socket>;
    type Signals: SignalSource;
    type SpareFd: Spare;

    /// Whether [`pipe`](Self::pipe) can work: zero-copy relaying exists.
    const SPLICE: bool;

    /// A poller whose wake-ups come as events with `wake_token`.
    fn poller(capacity: usize, wake_token: u64) -> io::Result<Self::Poller>;
    fn bind(addr: &Addr, options: &ListenOptions) -> io::Result<Self::Listener>;
    /// Starts a non-blocking connect; it is up once the socket turns
    /// writable with no pending error.
    fn connect(addr: &Addr, local: Option<SocketAddr>) -> io::Result<Self::Socket>;
    fn pipe() -> io::Result<Self::Pipe>;
    /// SIGINT, SIGTERM and SIGUSR1 as events of `poller` with `token`.
    fn signals(poller: &Self::Poller, token: u64) -> io::Result<Self::Signals>;
    fn spare_fd() -> Self::SpareFd;
    /// The clock: the reactor, its services and the load generator read
    /// time only here.
    fn now() -> Instant;

    /// Edge-triggered readability (and accept-readiness) of a listener.
    fn register_listener(poller: &Self::Poller, l: &Self::Listener, token: u64) -> io::Result<()>;
    /// Edge-triggered readability, writability and the peer's FIN.
    fn register_socket(poller: &Self::Poller, s: &Self::Socket, token: u64) -> io::Result<()>;
    fn deregister_listener(poller: &Self::Poller, l: &Self::Listener) -> io::Result<()>;
    /// Must run before the socket is dropped: its number is reused at once.
    fn deregister_socket(poller: &Self::Poller, s: &Self::Socket) -> io::Result<()>;
}

pub trait Poll {
    type Event: Readiness;
    type Waker: Wake;
    /// Waits for readiness (`None`: for ever); an interrupted wait is 0 events.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize>;
    /// The `i`-th event of the last wait.
    fn event(&self, i: usize) -> Self::Event;
    fn waker(&self) -> Self::Waker;
}

/// One readiness report: at most one per token per wait.
pub trait Readiness: Copy {
    fn token(&self) -> u64;
    fn is_readable(&self) -> bool;
    fn is_writable(&self) -> bool;
    /// The peer sent FIN (never our own shutdown).
    fn is_read_closed(&self) -> bool;
    /// A pending socket error: the next read, write or `take_error` says which.
    fn is_error(&self) -> bool;
}

/// Wakes a poller from any thread.
pub trait Wake: Clone + Send + Sync + 'static {
    fn wake(&self) -> io::Result<()>;
}

pub trait Listen {
    type Socket;
    fn accept(&self) -> Result<(Self::Socket, Addr), AcceptError>;
    fn local_addr(&self) -> &Addr;
}

/// A connected, non-blocking stream socket.
pub trait Stream {
    fn apply(&self, options: &SocketOptions) -> io::Result<()>;
    /// `Ok(0)` is the peer's FIN.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// As `read`, but what it copies stays to be read again.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// The pending socket error, clearing it.
    fn take_error(&self) -> Option<io::Error>;
    /// Bytes received and not read yet.
    fn unread_len(&self) -> io::Result<usize>;
    /// The coming close sends RST rather than FIN.
    fn reset_on_close(&self) -> io::Result<()>;
    /// Sends FIN.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// A kernel buffer between two sockets (splice(2)).
pub trait Splice {
    type Socket;
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `max` bytes from `from` into the pipe; `Ok(0)` is the peer's FIN.
    fn fill_from(&mut self, from: &Self::Socket, max: usize) -> io::Result<usize>;
    /// What the pipe holds into `to`, as far as `to` takes it.
    fn drain_into(&mut self, to: &Self::Socket) -> io::Result<usize>;
}

pub trait SignalSource {
    fn next(&self) -> io::Result<Option<SignalKind>>;
}

/// One descriptor held in reserve, for shedding connections when none are left.
pub trait Spare {
    /// Closes the reserve; false if there was none to close.
    fn release(&mut self) -> bool;
    fn restore(&mut self);
    fn is_held(&self) -> bool;
}

/// This machine's operating system.
pub struct Real;

impl Os for Real {
    type Poller = super::Poller;
    type Listener = super::Listener;
    type Socket = super::Socket;
    type Pipe = super::Pipe;
    type Signals = super::Signals;
    type SpareFd = super::SpareFd;

    const SPLICE: bool = super::SPLICE;

    fn poller(capacity: usize, wake_token: u64) -> io::Result<super::Poller> {
        super::Poller::new(capacity, wake_token)
    }

    fn bind(addr: &Addr, options: &ListenOptions) -> io::Result<super::Listener> {
        super::Listener::bind(addr, options)
    }

    fn connect(addr: &Addr, local: Option<SocketAddr>) -> io::Result<super::Socket> {
        super::Socket::connect(addr, local)
    }

    fn pipe() -> io::Result<super::Pipe> {
        super::Pipe::new()
    }

    fn signals(poller: &super::Poller, token: u64) -> io::Result<super::Signals> {
        super::Signals::new(poller, token)
    }

    fn spare_fd() -> super::SpareFd {
        super::SpareFd::new()
    }

    fn now() -> Instant {
        Instant::now()
    }

    fn register_listener(p: &super::Poller, l: &super::Listener, token: u64) -> io::Result<()> {
        p.register(l, token, super::Interest::Readable)
    }

    fn register_socket(p: &super::Poller, s: &super::Socket, token: u64) -> io::Result<()> {
        p.register(s, token, super::Interest::ReadWrite)
    }

    fn deregister_listener(p: &super::Poller, l: &super::Listener) -> io::Result<()> {
        p.deregister(l)
    }

    fn deregister_socket(p: &super::Poller, s: &super::Socket) -> io::Result<()> {
        p.deregister(s)
    }
}

impl Poll for super::Poller {
    type Event = super::Event;
    type Waker = super::Waker;

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        super::Poller::wait(self, timeout)
    }

    fn event(&self, i: usize) -> super::Event {
        super::Poller::event(self, i)
    }

    fn waker(&self) -> super::Waker {
        super::Poller::waker(self)
    }
}

impl Readiness for super::Event {
    fn token(&self) -> u64 {
        super::Event::token(self)
    }

    fn is_readable(&self) -> bool {
        super::Event::is_readable(self)
    }

    fn is_writable(&self) -> bool {
        super::Event::is_writable(self)
    }

    fn is_read_closed(&self) -> bool {
        super::Event::is_read_closed(self)
    }

    fn is_error(&self) -> bool {
        super::Event::is_error(self)
    }
}

impl Wake for super::Waker {
    fn wake(&self) -> io::Result<()> {
        super::Waker::wake(self)
    }
}

impl Listen for super::Listener {
    type Socket = super::Socket;

    fn accept(&self) -> Result<(super::Socket, Addr), AcceptError> {
        super::Listener::accept(self)
    }

    fn local_addr(&self) -> &Addr {
        super::Listener::local_addr(self)
    }
}

impl Stream for super::Socket {
    fn apply(&self, options: &SocketOptions) -> io::Result<()> {
        super::Socket::apply(self, options)
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        super::Socket::read(self, buf)
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        super::Socket::peek(self, buf)
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        super::Socket::write(self, buf)
    }

    fn take_error(&self) -> Option<io::Error> {
        super::Socket::take_error(self)
    }

    fn unread_len(&self) -> io::Result<usize> {
        super::Socket::unread_len(self)
    }

    fn reset_on_close(&self) -> io::Result<()> {
        super::Socket::reset_on_close(self)
    }

    fn shutdown_write(&self) -> io::Result<()> {
        super::Socket::shutdown_write(self)
    }
}

impl Splice for super::Pipe {
    type Socket = super::Socket;

    fn len(&self) -> usize {
        super::Pipe::len(self)
    }

    fn fill_from(&mut self, from: &super::Socket, max: usize) -> io::Result<usize> {
        super::Pipe::fill_from(self, from, max)
    }

    fn drain_into(&mut self, to: &super::Socket) -> io::Result<usize> {
        super::Pipe::drain_into(self, to)
    }
}

impl SignalSource for super::Signals {
    fn next(&self) -> io::Result<Option<SignalKind>> {
        super::Signals::next(self)
    }
}

impl Spare for super::SpareFd {
    fn release(&mut self) -> bool {
        super::SpareFd::release(self)
    }

    fn restore(&mut self) {
        super::SpareFd::restore(self)
    }

    fn is_held(&self) -> bool {
        super::SpareFd::is_held(self)
    }
}
