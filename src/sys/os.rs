//! The contract every backend keeps, written once: these traits and the
//! types they speak in. Their doc comments are the guarantees. `linux/`,
//! `bsd/` and `unix/` implement them directly for this machine's
//! [`Real`](super::Real); a test implements them for a simulated OS (byte
//! queues for sockets, a virtual clock, faults on demand) and drives the
//! very same reactor.
//!
//! Dispatch is static: the reactor is generic over [`Os`], `Reactor<S>`
//! means `Reactor<S, Real>`, and every call compiles to the backend's own.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::Addr;

/// An operating system: the types the reactor holds, and its clock.
pub trait Os: 'static {
    /// Readiness of listeners and sockets, and the loop's wake-up.
    type Poller: Poll + Register<Self::Listener> + Register<Self::Socket>;
    /// Where connections come from.
    type Listener: Listen<Socket = Self::Socket>;
    /// A connection, accepted or connected.
    type Socket: Stream;
    /// The zero-copy buffer between two sockets.
    type Pipe: Splice<Socket = Self::Socket>;
    /// The operator's signals.
    type Signals: SignalSource<Poller = Self::Poller>;
    /// The descriptor held in reserve.
    type SpareFd: Spare;

    /// Whether zero-copy relaying exists: [`Splice::new`] can succeed.
    const SPLICE: bool;

    /// The clock: the reactor, its services and the load generator read
    /// time only here.
    fn now() -> Instant;
}

/// A readiness poller (epoll, kqueue) with its own wake-up; the events of
/// its last wait are read in place.
pub trait Poll: Sized + Send {
    /// One token's readiness.
    type Event: Readiness;
    /// What wakes this poller from another thread.
    type Waker: Wake;

    /// A poller whose [`wait`](Self::wait) returns at most `capacity`
    /// events (more stay queued in the kernel for the next one), and whose
    /// wake-ups come as events with `wake_token`.
    fn new(capacity: usize, wake_token: u64) -> io::Result<Self>;

    /// Waits for readiness (`None`: for ever; a timeout is never rounded
    /// down to a busy zero) and says how many events came. A signal that
    /// interrupts the wait is 0 events, never an error. One wait reports at
    /// most one event per token: readable, writable, read-closed and error
    /// come merged, whatever the kernel's own shape.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize>;

    /// The `i`-th event of the last wait, `i` below what it returned.
    fn event(&self, i: usize) -> Self::Event;

    /// A handle whose [`wake`](Wake::wake) makes the current or next wait
    /// return an event with the wake token.
    fn waker(&self) -> Self::Waker;
}

/// How a poller is told about `S`, a listener or a socket: the one way to
/// register.
pub trait Register<S: ?Sized> {
    /// From now on, reports the readiness of `source` as events with
    /// `token` (any `u64` but the wake token). Edge-triggered and once per
    /// source, with no `modify`: an event comes when something new
    /// happened, and what is already true comes at the next wait.
    fn register(&self, source: &S, token: u64, interest: Interest) -> io::Result<()>;

    /// Stops reporting `source`. It must run before the source is closed:
    /// the descriptor's number is reused at once.
    fn deregister(&self, source: &S) -> io::Result<()>;
}

/// What a registration asks to be told about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Interest {
    /// Listeners: only readability matters.
    Readable,
    /// Connections: readable, writable and the peer's FIN, all at once, so
    /// that a pending write never costs a system call to ask for.
    ReadWrite,
}

/// One readiness report of one token.
pub trait Readiness: Copy {
    /// The token its source was registered with.
    fn token(&self) -> u64;
    /// Bytes, a FIN or a connection waiting to be read or accepted.
    fn is_readable(&self) -> bool;
    /// Room in the send buffer, or a connect that finished.
    fn is_writable(&self) -> bool;
    /// The peer sent FIN, or the connection is gone: never our own shutdown.
    fn is_read_closed(&self) -> bool;
    /// A pending socket error: the next read, write or
    /// [`take_error`](Stream::take_error) says which.
    fn is_error(&self) -> bool;
}

/// Wakes a poller from any thread.
pub trait Wake: Clone + Send + Sync + 'static {
    /// Wakes the poller. Wake-ups never need acknowledging, and many before
    /// a wait may come as one event.
    fn wake(&self) -> io::Result<()>;
}

/// A non-blocking listening stream socket, TCP or Unix-domain.
pub trait Listen: Sized {
    /// What [`accept`](Self::accept) hands out.
    type Socket;

    /// Binds `addr` and listens. TCP: the address is reusable at once (no
    /// wait for TIME_WAIT), and `[::]` takes IPv4 clients too. Unix-domain:
    /// a socket file nobody answers on any more is replaced, one that
    /// answers is `AddrInUse`, and a file that is not a socket is never
    /// touched; the listener removes its own file when it closes.
    fn bind(addr: &Addr, options: &ListenOptions) -> io::Result<Self>;

    /// One pending connection, with its peer's address (a Unix-domain peer
    /// is named by this listener's path: its own end has no name).
    fn accept(&self) -> Result<(Self::Socket, Addr), AcceptError>;

    /// The address bound: the real port when `bind` asked for port 0.
    fn local_addr(&self) -> &Addr;
}

/// Why [`Listen::accept`] returned no connection.
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

/// A connected stream socket, non-blocking and close-on-exec before the
/// caller sees it. A write to a peer that has gone is `EPIPE`, never a
/// process-killing `SIGPIPE`, and a read, peek or write never returns
/// `EINTR`: one a signal interrupts is made again.
pub trait Stream: Sized {
    /// Starts a connect to `addr`, from `local` if given (to spread clients
    /// over source addresses); it is up once the socket turns writable with
    /// no pending error.
    fn connect(addr: &Addr, local: Option<SocketAddr>) -> io::Result<Self>;
    /// Sets `options` on the socket.
    fn apply(&self, options: &SocketOptions) -> io::Result<()>;
    /// What has arrived, as much as fits; `Ok(0)` is the peer's FIN.
    fn read(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// As `read`, but what it copies stays to be read again.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
    /// What the kernel takes now.
    fn write(&self, buf: &[u8]) -> io::Result<usize>;
    /// As `write`, from `bufs` in order, in one call where the OS has one
    /// (by default, the first buffer that is not empty).
    fn write_vectored(&self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(buf) => self.write(buf),
            None => Ok(0),
        }
    }
    /// The pending socket error, clearing it.
    fn take_error(&self) -> Option<io::Error>;
    /// Bytes received and not read yet.
    fn unread_len(&self) -> io::Result<usize>;
    /// The coming close sends RST rather than FIN: the peer sees the stream
    /// cut short, not complete.
    fn reset_on_close(&self) -> io::Result<()>;
    /// Sends FIN: the peer reads EOF once it has everything written before.
    fn shutdown_write(&self) -> io::Result<()>;
}

/// Options for a listening socket.
#[derive(Debug, Clone)]
pub struct ListenOptions {
    /// Length of the kernel's queue of completed connections not yet accepted
    /// (capped by the kernel: `net.core.somaxconn` on Linux,
    /// `kern.ipc.somaxconn` on the BSDs).
    pub backlog: i32,
    /// `SO_REUSEPORT` (TCP only): several listeners, one per reactor, may
    /// bind the same address and port, and the kernel spreads incoming
    /// connections over them (Linux hashes each connection's addresses;
    /// FreeBSD does so with `SO_REUSEPORT_LB`, which is what is set there;
    /// macOS lets them bind but gives each connection to one of them).
    pub reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> Self {
        ListenOptions {
            backlog: 1024,
            reuse_port: false,
        }
    }
}

/// Options applied to every accepted connection.
#[derive(Debug, Clone)]
pub struct SocketOptions {
    /// Disable Nagle's algorithm, so small replies leave at once.
    pub nodelay: bool,
    /// `SO_RCVBUF`, when set; the kernel applies its own limits (Linux
    /// doubles it for bookkeeping).
    pub recv_buffer: Option<usize>,
    /// `SO_SNDBUF`, when set.
    pub send_buffer: Option<usize>,
    /// Keepalive probes (TCP only), when set: the kernel asks a peer that
    /// has been silent for a while whether it is still there, and ends the
    /// connection (`ETIMEDOUT`) when nobody answers. A live peer's kernel
    /// answers for it, however stuck its application.
    pub keepalive: Option<Keepalive>,
    /// `TCP_USER_TIMEOUT` (TCP only, where [`USER_TIMEOUT`](super::USER_TIMEOUT)
    /// says the OS has it), when set: data sent and not acknowledged for
    /// this long ends the connection (`ETIMEDOUT`). A peer that is gone
    /// goes; so does a live one whose receive window stayed shut that long.
    pub user_timeout: Option<Duration>,
}

/// When the kernel probes an idle TCP connection, and how long it waits
/// for an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Silence before the first probe; the kernel counts whole seconds.
    pub idle: Duration,
    /// The time between probes and how many go unanswered before the
    /// connection ends; `None` leaves both to the kernel (Linux: 75 s, 9).
    pub probes: Option<(Duration, u32)>,
}

impl Default for SocketOptions {
    fn default() -> Self {
        SocketOptions {
            nodelay: true,
            recv_buffer: None,
            send_buffer: None,
            keepalive: None,
            user_timeout: None,
        }
    }
}

/// A kernel buffer between two sockets (splice(2)): payload bytes never
/// enter user space. The type exists on every OS; where [`Os::SPLICE`] is
/// false, `new` fails with [`io::ErrorKind::Unsupported`].
pub trait Splice: Sized {
    /// What it moves bytes between.
    type Socket;
    /// An empty pipe.
    fn new() -> io::Result<Self>;
    /// Bytes it holds, not yet passed on.
    fn len(&self) -> usize;
    /// Whether it holds nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Up to `max` bytes from `from` into the pipe; `Ok(0)` is the peer's FIN.
    fn fill_from(&mut self, from: &Self::Socket, max: usize) -> io::Result<usize>;
    /// What the pipe holds into `to`, as far as `to` takes it.
    fn drain_into(&mut self, to: &Self::Socket) -> io::Result<usize>;
}

/// SIGINT, SIGTERM, SIGUSR1, SIGHUP and SIGUSR2 as events of a poller, so that no work ever
/// runs inside a signal handler.
pub trait SignalSource: Sized {
    /// The poller that reports them.
    type Poller;
    /// Takes the signals away from their default actions and has `poller`
    /// report them as an event with `token`. Call it in `main` before any
    /// thread starts: threads inherit what it sets.
    fn new(poller: &Self::Poller, token: u64) -> io::Result<Self>;
    /// The next pending signal; after an event, call it until `Ok(None)`.
    fn next(&self) -> io::Result<Option<SignalKind>>;
}

/// What an operator asked for with a signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalKind {
    /// SIGINT or SIGTERM.
    Terminate,
    /// SIGUSR1.
    Report,
    /// SIGHUP: re-read what can be re-read (a relay's upstreams file).
    Reload,
    /// SIGUSR2: start the new build installed where this one was started
    /// from, hand it the listening sockets, and drain once it serves.
    Upgrade,
}

/// One descriptor held in reserve. When an accept fails for want of
/// descriptors, releasing it makes room to accept the waiting connection
/// and close it at once; otherwise that connection would stay queued and
/// keep the listener readable for ever.
pub trait Spare: Sized {
    /// Takes the reserve, if a descriptor is free.
    fn new() -> Self;
    /// Closes the reserve; false if there was none to close.
    fn release(&mut self) -> bool;
    /// Takes the reserve back, if a descriptor is free again.
    fn restore(&mut self);
    /// Whether the reserve is held.
    fn is_held(&self) -> bool;
}
