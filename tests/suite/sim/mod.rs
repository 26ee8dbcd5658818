//! A simulated operating system for the reactor: sockets as byte queues
//! over finite kernel buffers, listeners with a backlog, descriptor numbers
//! reused at once, a virtual clock, and faults injected at chosen calls.
//!
//! The world lives in a thread-local, so each test thread runs its own
//! simulation; everything in it is deterministic. The test drives the peers
//! (clients that connect, send, read, half-close or reset) and turns the
//! reactor; the reactor sees only [`Sim`], an [`Os`] like the real one.
//!
//! Faults come from a script: `(call, fault)` pairs, where `call` counts
//! every call the reactor makes into the simulation. A failing script is
//! shrunk by proptest to the few faults that matter, and replays exactly.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sockloop::sys::Addr;
use sockloop::sys::os::{
    AcceptError, Interest, Listen, ListenOptions, Os, Poll, Readiness, Register, SignalKind,
    SignalSource, SocketOptions, Spare, Splice, Stream, Wake,
};

/// What can go wrong at a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// A read or write moves at most this many bytes (at least one).
    Short(usize),
    /// A read or write finds nothing to do (`EAGAIN`); the readiness it
    /// hid is reported again, as the kernel would once it changes.
    Again,
    /// A wait returns early with nothing (`EINTR`).
    Interrupted,
    /// A wait also reports an event that nothing caused.
    Spurious,
    /// A wait reports one of its events twice.
    Duplicate,
    /// A wait reports its events in reverse order.
    Reverse,
    /// An accept fails for want of descriptors, though one is waiting.
    OutOfDescriptors,
    /// An accept finds the waiting connection reset by its peer.
    Aborted,
    /// An outgoing connect is refused.
    Refused,
    /// The clock jumps this many milliseconds at the next wait.
    Jump(u64),
    /// A new client connects to the first listener in the middle of this
    /// call, while the reactor is at work: the test adopts it from
    /// [`World::take_arrivals`].
    Arrive,
}

/// Which end of a simulated connection.
pub type EndId = usize;

/// One end of a connection: what has arrived for it, and its state.
struct End {
    peer: EndId,
    inbox: VecDeque<u8>,
    capacity: usize,
    /// The peer's FIN arrived: once `inbox` is empty, a read sees EOF.
    fin_in: bool,
    /// Our FIN went out: no more writes.
    fin_out: bool,
    /// A pending error (a reset), reported by the next read or write.
    error: Option<io::ErrorKind>,
    reset_on_close: bool,
    closed: bool,
    /// An outgoing connect not yet accepted.
    connecting: bool,
    /// The reactor's descriptor for it, if the reactor holds it.
    fd: Option<u32>,
    /// What the reactor did with it, for the checks.
    served: Served,
    /// What the last peek showed: bytes a read then takes whole, whatever
    /// the faults (a kernel returns what it has).
    peeked: usize,
}

/// What the reactor did with one end of a connection: the facts a property
/// needs to say what it owed, and when.
#[derive(Debug, Clone, Default)]
pub struct Served {
    /// Bytes the reactor read from it.
    pub read: usize,
    /// When the reactor last moved a byte in or out of it.
    pub last_io: Duration,
    /// When the reactor accepted it, and how many bytes it had read from
    /// each end by then (by [`EndId`]).
    pub accepted: Option<(Duration, Vec<usize>)>,
    /// When the reactor read its EOF or let go of it (whichever came
    /// first), and how many bytes it had read from each end by then.
    pub left: Option<(Duration, Vec<usize>)>,
    /// When the reactor let go of it (deregistered it).
    pub closed_at: Option<Duration>,
    /// The peer's address the reactor was given at accept.
    pub peer: Option<Addr>,
    /// The address of the listener it was accepted on.
    pub listener: Option<Addr>,
}

/// What a world's upstream does behind an outgoing connect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamKind {
    /// Echoes what it reads, and answers FIN with FIN.
    Echo,
    /// Refuses every connect.
    Refuse,
    /// Never answers a connect (a host that is down): only a timeout ends it.
    Silent,
    /// Echoes this many bytes, then resets the connection.
    ResetAfter(usize),
    /// Echoes this many bytes, then sends FIN and drops what it reads.
    FinAfter(usize),
    /// Accepts, then never reads or writes again.
    Stall,
}

/// A peer the test plays.
#[derive(Debug)]
pub struct Client {
    pub end: EndId,
    pub received: Vec<u8>,
    /// The server's FIN came, before any reset.
    pub eof: bool,
    pub reset: bool,
}

enum FdObj {
    Socket(EndId),
    Listener,
    Poller,
    Spare,
}

struct ListenerState {
    addr: Addr,
    backlog: VecDeque<EndId>,
    capacity: usize,
}

#[derive(Clone, Copy, Default)]
struct Flags {
    readable: bool,
    writable: bool,
    read_closed: bool,
    error: bool,
}

/// A readiness report of the simulated poller.
#[derive(Debug, Clone, Copy)]
pub struct SimEvent {
    token: u64,
    readable: bool,
    writable: bool,
    read_closed: bool,
    error: bool,
}

/// A service the world runs by itself behind an outgoing connect.
struct Upstream {
    addr: Addr,
    kind: UpstreamKind,
}

/// One connection the world serves as an upstream: the end it holds,
/// how it behaves, and the bytes it has echoed.
#[derive(Clone, Copy)]
struct UpstreamConn {
    end: EndId,
    kind: UpstreamKind,
    echoed: usize,
}

/// A client the world keeps sending for, at every call the reactor makes:
/// a sender that never pauses. The test owns its [`Client`] and learns
/// what was sent with [`World::take_flooded`].
#[derive(Clone, Copy)]
struct Flood {
    end: EndId,
    index: usize,
    stream: fn(usize, usize) -> u8,
    sent: usize,
    taken: usize,
    /// It stops once it has sent this much of its stream.
    limit: usize,
}

pub struct World {
    start: Instant,
    elapsed: Duration,
    ends: Vec<End>,
    fds: BTreeMap<u32, FdObj>,
    fd_limit: usize,
    listeners: HashMap<u32, ListenerState>,
    /// Each registered descriptor's poller and token: several reactors
    /// (each with its own poller) may share one world.
    registered: HashMap<u32, (u32, u64)>,
    /// Readiness not yet reported, by poller and token.
    pending: Vec<(u32, u64, Flags)>,
    /// Signals raised and not yet taken, reported with `signal_token` once
    /// the reactor takes signals.
    signals: VecDeque<SignalKind>,
    signal_token: Option<(u32, u64)>,
    upstreams: Vec<Upstream>,
    /// Ends the world serves itself (behind outgoing connects).
    echoing: Vec<UpstreamConn>,
    floods: Vec<Flood>,
    /// Clients that connected during a call ([`Fault::Arrive`]).
    arrivals: Vec<Client>,
    faults: VecDeque<(u64, Fault)>,
    calls: u64,
    /// Calls since the test last looked, to bound the work of one turn.
    pub calls_this_turn: u64,
    /// Descriptors used after they were closed, or never opened.
    pub misuse: Vec<String>,
    /// Each wait: the clock once it returned, and how much of its advance
    /// was a [`Fault::Jump`] rather than the sleep the reactor asked for.
    pub waits: Vec<(Duration, Duration)>,

    next_port: u16,
    buffer: usize,
}

thread_local! {
    static WORLD: RefCell<Option<World>> = const { RefCell::new(None) };
}

/// Runs `f` on this thread's world.
pub fn world<T>(f: impl FnOnce(&mut World) -> T) -> T {
    WORLD.with(|w| f(w.borrow_mut().as_mut().expect("a simulation is running")))
}

impl World {
    /// Starts this thread's simulation: kernel buffers of `buffer` bytes
    /// per direction, at most `fd_limit` descriptors, and `faults`.
    pub fn install(buffer: usize, fd_limit: usize, faults: Vec<(u64, Fault)>) {
        let mut faults = faults;
        faults.sort_by_key(|(at, _)| *at);
        let world = World {
            start: Instant::now(),
            elapsed: Duration::ZERO,
            ends: Vec::new(),
            fds: BTreeMap::new(),
            fd_limit,
            listeners: HashMap::new(),
            registered: HashMap::new(),
            pending: Vec::new(),
            signals: VecDeque::new(),
            signal_token: None,
            upstreams: Vec::new(),
            echoing: Vec::new(),
            floods: Vec::new(),
            arrivals: Vec::new(),
            faults: faults.into(),
            calls: 0,
            calls_this_turn: 0,
            misuse: Vec::new(),
            waits: Vec::new(),
            next_port: 40000,
            buffer,
        };
        WORLD.with(|w| *w.borrow_mut() = Some(world));
    }

    pub fn uninstall() {
        WORLD.with(|w| *w.borrow_mut() = None);
    }

    pub fn now(&self) -> Instant {
        self.start + self.elapsed
    }

    /// Calls the reactor has made, and faults still unfired.
    pub fn calls(&self) -> (u64, usize) {
        (self.calls, self.faults.len())
    }

    pub fn elapsed(&self) -> Duration {
        self.elapsed
    }

    /// Counts a call and takes the fault scripted for it, if any.
    /// Peers that act mid-turn do so here: the senders that never pause
    /// top up, and a client scripted to arrive connects.
    fn call(&mut self) -> Option<Fault> {
        self.calls += 1;
        self.calls_this_turn += 1;
        self.top_up_floods();
        let fault = match self.faults.front() {
            Some(&(at, fault)) if at <= self.calls => {
                self.faults.pop_front();
                Some(fault)
            }
            _ => None,
        };
        if fault == Some(Fault::Arrive) {
            self.arrive();
            return None;
        }
        fault
    }

    /// A client connects to the first listener, if there is one and its
    /// queue has room.
    fn arrive(&mut self) {
        let first = self.listeners.iter().min_by_key(|(fd, _)| **fd);
        let Some(addr) = first.map(|(_, l)| l.addr.clone()) else {
            return;
        };
        if let Some(client) = self.connect_client(&addr) {
            self.arrivals.push(client);
        }
    }

    /// Every sender that never pauses sends what fits of its stream (a
    /// little at a time: it is a peer on a network, not a memcpy).
    fn top_up_floods(&mut self) {
        for i in 0..self.floods.len() {
            let Flood {
                end,
                index,
                stream,
                sent,
                limit,
                ..
            } = self.floods[i];
            let peer = self.ends[end].peer;
            let gone = self.ends[end].error.is_some() || self.ends[end].fin_out;
            if gone || self.ends[end].closed || self.ends[peer].closed || sent >= limit {
                continue;
            }
            let bytes: Vec<u8> = (sent..limit.min(sent + 97))
                .map(|at| stream(index, at))
                .collect();
            if let Ok(n) = self.send(end, &bytes, None) {
                self.floods[i].sent += n;
            }
        }
    }

    /// What the reactor has read from every end so far, and when.
    fn snapshot(&self) -> (Duration, Vec<usize>) {
        let read = self.ends.iter().map(|e| e.served.read).collect();
        (self.elapsed, read)
    }

    fn alloc_fd(&mut self, obj: FdObj) -> io::Result<u32> {
        if self.fds.len() >= self.fd_limit {
            return Err(io::Error::from_raw_os_error(libc::EMFILE));
        }
        // The lowest free number, as a kernel gives: reused at once.
        let mut fd = 3;
        while self.fds.contains_key(&fd) {
            fd += 1;
        }
        self.fds.insert(fd, obj);
        Ok(fd)
    }

    fn free_fd(&mut self, fd: u32) {
        if self.fds.remove(&fd).is_none() {
            self.misuse
                .push(format!("close of fd {fd}, which is not open"));
        }
        if self.registered.remove(&fd).is_some() {
            self.misuse
                .push(format!("fd {fd} closed while still registered"));
        }
    }

    fn new_pair(&mut self) -> (EndId, EndId) {
        let (a, b) = (self.ends.len(), self.ends.len() + 1);
        for peer in [b, a] {
            self.ends.push(End {
                peer,
                inbox: VecDeque::new(),
                capacity: self.buffer,
                fin_in: false,
                fin_out: false,
                error: None,
                reset_on_close: false,
                closed: false,
                connecting: false,
                fd: None,
                served: Served::default(),
                peeked: 0,
            });
        }
        (a, b)
    }

    /// Something changed for end `e`: if the reactor watches it, an event.
    fn raise(&mut self, e: EndId, flags: Flags) {
        if let Some(fd) = self.ends[e].fd {
            self.raise_fd(fd, flags);
        }
    }

    fn raise_fd(&mut self, fd: u32, flags: Flags) {
        let Some(&(poller, token)) = self.registered.get(&fd) else {
            return;
        };
        match self
            .pending
            .iter_mut()
            .find(|(p, t, _)| (*p, *t) == (poller, token))
        {
            Some((_, _, f)) => {
                f.readable |= flags.readable;
                f.writable |= flags.writable;
                f.read_closed |= flags.read_closed;
                f.error |= flags.error;
            }
            None => self.pending.push((poller, token, flags)),
        }
    }

    /// `n` bytes (at most) from end `e` into its peer's inbox.
    fn send(&mut self, e: EndId, data: &[u8], limit: Option<usize>) -> io::Result<usize> {
        let peer = self.ends[e].peer;
        if let Some(kind) = self.ends[e].error.take() {
            return Err(kind.into());
        }
        if self.ends[e].fin_out {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if self.ends[peer].closed {
            // Data to a closed socket: the kernel answers with a reset.
            self.ends[e].error = Some(io::ErrorKind::ConnectionReset);
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        let room = self.ends[peer].capacity - self.ends[peer].inbox.len();
        let n = data.len().min(room).min(limit.unwrap_or(usize::MAX));
        if n == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.ends[peer].inbox.extend(&data[..n]);
        let readable = Flags {
            readable: true,
            ..Flags::default()
        };
        self.raise(peer, readable);
        Ok(n)
    }

    fn recv(&mut self, e: EndId, buf: &mut [u8], limit: Option<usize>) -> io::Result<usize> {
        let end = &mut self.ends[e];
        // What arrived before a reset is still read first, as from a kernel.
        if end.inbox.is_empty() {
            if let Some(kind) = end.error.take() {
                return Err(kind.into());
            }
            return if end.fin_in {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        let n = buf
            .len()
            .min(end.inbox.len())
            .min(limit.unwrap_or(usize::MAX));
        for (slot, byte) in buf.iter_mut().zip(end.inbox.drain(..n)) {
            *slot = byte;
        }
        let peer = end.peer;
        let writable = Flags {
            writable: true,
            ..Flags::default()
        };
        self.raise(peer, writable);
        Ok(n)
    }

    fn fin(&mut self, e: EndId) {
        if self.ends[e].fin_out {
            return;
        }
        self.ends[e].fin_out = true;
        let peer = self.ends[e].peer;
        self.ends[peer].fin_in = true;
        let hup = Flags {
            readable: true,
            read_closed: true,
            ..Flags::default()
        };
        self.raise(peer, hup);
    }

    fn close_end(&mut self, e: EndId) {
        if self.ends[e].closed {
            return;
        }
        let unread = !self.ends[e].inbox.is_empty();
        let reset = self.ends[e].reset_on_close || unread;
        self.ends[e].closed = true;
        let peer = self.ends[e].peer;
        if reset {
            self.ends[peer].error = Some(io::ErrorKind::ConnectionReset);
            self.ends[peer].fin_in = true;
            let error = Flags {
                readable: true,
                read_closed: true,
                error: true,
                ..Flags::default()
            };
            self.raise(peer, error);
        } else {
            self.fin(e);
        }
    }

    // ---- the test's side ----

    /// A client connects to the listener at `addr`; `None` if its queue is
    /// full (the connection is refused).
    pub fn connect_client(&mut self, addr: &Addr) -> Option<Client> {
        let fd = self
            .listeners
            .iter()
            .find(|(_, l)| &l.addr == addr)
            .map(|(fd, _)| *fd)?;
        let (client, server) = self.new_pair();
        let listener = self.listeners.get_mut(&fd)?;
        if listener.backlog.len() >= listener.capacity {
            return None;
        }
        listener.backlog.push_back(server);
        let readable = Flags {
            readable: true,
            ..Flags::default()
        };
        self.raise_fd(fd, readable);
        Some(Client {
            end: client,
            received: Vec::new(),
            eof: false,
            reset: false,
        })
    }

    /// Sends what fits of `data` from `client`; returns how much that was.
    pub fn client_send(&mut self, client: &mut Client, data: &[u8]) -> usize {
        match self.send(client.end, data, None) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => {
                client.reset = true;
                0
            }
        }
    }

    /// Reads up to `max` bytes into `client.received`.
    pub fn client_read(&mut self, client: &mut Client, max: usize) {
        let mut buf = vec![0; max];
        match self.recv(client.end, &mut buf, None) {
            // After a reset, reads end as at EOF; but the stream was cut.
            Ok(0) => client.eof |= !client.reset,
            Ok(n) => client.received.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => client.reset = true,
        }
    }

    pub fn client_fin(&mut self, client: &Client) {
        self.fin(client.end);
    }

    pub fn client_reset(&mut self, client: &mut Client) {
        self.ends[client.end].reset_on_close = true;
        self.close_end(client.end);
        client.reset = true;
    }

    /// `client`, having sent `sent` bytes of its stream (`stream(index,
    /// at)` for byte `at`), sends the rest up to `limit` at every call the
    /// reactor makes from now on, as fast as it is taken, unless it says
    /// FIN or is reset.
    pub fn flood(
        &mut self,
        client: &Client,
        stream: (usize, fn(usize, usize) -> u8),
        sent: usize,
        limit: usize,
    ) {
        if self.floods.iter().any(|f| f.end == client.end) {
            return;
        }
        self.floods.push(Flood {
            end: client.end,
            index: stream.0,
            stream: stream.1,
            sent,
            taken: sent,
            limit,
        });
    }

    /// `client` sends no more by itself.
    pub fn stop_flood(&mut self, client: &Client) {
        for f in self.floods.iter_mut().filter(|f| f.end == client.end) {
            f.limit = f.sent;
        }
    }

    /// Every sender that never paused pauses now.
    pub fn stop_floods(&mut self) {
        self.floods.retain(|f| f.sent != f.taken);
        for f in &mut self.floods {
            f.limit = f.sent;
        }
    }

    /// Bytes the world sent for `client` since the last time it was asked.
    pub fn take_flooded(&mut self, client: &Client) -> usize {
        let Some(f) = self.floods.iter_mut().find(|f| f.end == client.end) else {
            return 0;
        };
        let new = f.sent - f.taken;
        f.taken = f.sent;
        new
    }

    /// Clients that connected during the reactor's calls since last asked.
    pub fn take_arrivals(&mut self) -> Vec<Client> {
        std::mem::take(&mut self.arrivals)
    }

    /// What the reactor did with its end of `client`.
    pub fn served(&self, client: &Client) -> &Served {
        &self.ends[self.ends[client.end].peer].served
    }

    /// The end the reactor holds (or held) of `client`'s connection.
    pub fn server_end(&self, client: &Client) -> EndId {
        self.ends[client.end].peer
    }

    /// Whether the reactor has closed its end of `client`.
    pub fn server_closed(&self, client: &Client) -> bool {
        self.ends[self.ends[client.end].peer].closed
    }

    /// The operator sends the process `signal`.
    pub fn raise_signal(&mut self, signal: SignalKind) {
        self.signals.push_back(signal);
    }

    /// Signals raised that the reactor has not taken.
    pub fn signals_pending(&self) -> usize {
        self.signals.len()
    }

    /// An upstream the world serves itself at `addr`: it echoes, or refuses.
    pub fn add_upstream(&mut self, addr: Addr, refuse: bool) {
        let kind = if refuse {
            UpstreamKind::Refuse
        } else {
            UpstreamKind::Echo
        };
        self.add_upstream_of(addr, kind);
    }

    /// An upstream the world serves itself at `addr`, behaving as `kind`.
    pub fn add_upstream_of(&mut self, addr: Addr, kind: UpstreamKind) {
        self.upstreams.push(Upstream { addr, kind });
    }

    /// The world's own upstreams do their work: accept, echo, FIN, reset.
    pub fn run_upstreams(&mut self) {
        for i in 0..self.echoing.len() {
            self.serve_upstream(i);
        }
    }

    fn serve_upstream(&mut self, i: usize) {
        let UpstreamConn {
            end: e,
            kind,
            mut echoed,
        } = self.echoing[i];
        let peer = self.ends[e].peer;
        if self.ends[e].closed {
            return;
        }
        if self.ends[peer].connecting {
            self.ends[peer].connecting = false;
            let up = Flags {
                writable: true,
                ..Flags::default()
            };
            self.raise(peer, up);
        }
        let limit = match kind {
            UpstreamKind::ResetAfter(n) | UpstreamKind::FinAfter(n) => n,
            UpstreamKind::Stall => return,
            _ => usize::MAX,
        };
        let mut buf = [0; 4096];
        while echoed < limit {
            let want = (limit - echoed).min(buf.len());
            let n = match self.recv(e, &mut buf[..want], None) {
                Ok(0) => {
                    self.fin(e);
                    break;
                }
                Ok(n) => n,
                Err(_) => break,
            };
            let sent = self.send(e, &buf[..n], None).unwrap_or(0);
            echoed += sent;
            if sent < n {
                // What does not fit waits in the echoing end's inbox.
                self.push_back(e, &buf[sent..n]);
                break;
            }
        }
        self.echoing[i].echoed = echoed;
        if echoed < limit {
            return;
        }
        if let UpstreamKind::ResetAfter(_) = kind {
            self.ends[e].reset_on_close = true;
            self.close_end(e);
        } else {
            self.fin(e);
            while let Ok(1..) = self.recv(e, &mut buf, None) {}
        }
    }

    fn push_back(&mut self, e: EndId, bytes: &[u8]) {
        for &b in bytes.iter().rev() {
            self.ends[e].inbox.push_front(b);
        }
    }

    /// Up to `room` of the events waiting for `poller`, oldest first.
    fn take_events(&mut self, poller: u32, room: usize) -> Vec<SimEvent> {
        let mut events = Vec::new();
        self.pending.retain(|&(p, token, f)| {
            if p != poller || events.len() >= room {
                return true;
            }
            events.push(SimEvent {
                token,
                readable: f.readable,
                writable: f.writable,
                read_closed: f.read_closed,
                error: f.error,
            });
            false
        });
        events
    }

    /// What a wait's `fault` does to the events it reports to `poller`.
    fn distort(&self, poller: u32, fault: Option<Fault>, events: &mut Vec<SimEvent>) {
        match fault {
            Some(Fault::Spurious) => {
                let mine = self.registered.values().filter(|&&(p, _)| p == poller);
                if let Some(&(_, token)) = mine.min() {
                    events.push(SimEvent {
                        readable: true,
                        writable: true,
                        ..SimEvent::only(token)
                    });
                }
            }
            Some(Fault::Duplicate) => events.extend(events.first().copied()),
            Some(Fault::Reverse) => events.reverse(),
            _ => {}
        }
    }

    /// Whether events wait to be reported.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub fn open_fds(&self) -> usize {
        self.fds.len()
    }

    /// Connections the reactor accepted and has not let go of.
    pub fn accepted_open(&self) -> usize {
        let open = |e: &&End| e.fd.is_some() && e.served.closed_at.is_none();
        self.ends
            .iter()
            .filter(open)
            .filter(|e| e.served.accepted.is_some())
            .count()
    }

    fn client_addr(&mut self) -> Addr {
        self.next_port = self.next_port.wrapping_add(1);
        Addr::Ip(SocketAddr::from(([10, 0, 0, 2], self.next_port)))
    }

    fn end_of(&mut self, fd: u32) -> Option<EndId> {
        match self.fds.get(&fd) {
            Some(FdObj::Socket(e)) => Some(*e),
            _ => {
                self.misuse
                    .push(format!("socket call on fd {fd}, not an open socket"));
                None
            }
        }
    }

    /// The end behind `fd` for I/O, which only a registered socket may do:
    /// a socket the reactor has deregistered is closed to it.
    fn live_end_of(&mut self, fd: u32, what: &str) -> Option<EndId> {
        let e = self.end_of(fd)?;
        if !self.registered.contains_key(&fd) {
            self.misuse
                .push(format!("{what} on fd {fd} after the reactor closed it"));
        }
        Some(e)
    }
}

fn ebadf() -> io::Error {
    io::Error::from_raw_os_error(libc::EBADF)
}

// ---- the Os ----

/// The simulated OS.
pub struct Sim;

pub struct SimPoller {
    fd: u32,
    wake_token: u64,
    /// Most events one wait returns: the rest stay queued, as in a kernel.
    capacity: usize,
    events: Vec<SimEvent>,
    woken: Arc<AtomicBool>,
}

#[derive(Clone)]
pub struct SimWaker(Arc<AtomicBool>);

pub struct SimListener {
    fd: u32,
    addr: Addr,
}

pub struct SimSocket {
    fd: u32,
}

/// Splicing is left out of the simulation.
pub struct SimPipe;

/// The signals the test raises ([`World::raise_signal`]).
pub struct SimSignals;

pub struct SimSpare(Option<u32>);

impl Os for Sim {
    type Poller = SimPoller;
    type Listener = SimListener;
    type Socket = SimSocket;
    type Pipe = SimPipe;
    type Signals = SimSignals;
    type SpareFd = SimSpare;

    const SPLICE: bool = false;

    fn now() -> Instant {
        world(|w| w.now())
    }
}

/// The reactor registers listeners for reading and sockets for both, and
/// the simulation reports all a socket's readiness whatever was asked.
impl Register<SimListener> for SimPoller {
    fn register(&self, l: &SimListener, token: u64, _: Interest) -> io::Result<()> {
        world(|w| {
            w.call();
            w.registered.insert(l.fd, (self.fd, token));
            if w.listeners
                .get(&l.fd)
                .is_some_and(|s| !s.backlog.is_empty())
            {
                let readable = Flags {
                    readable: true,
                    ..Flags::default()
                };
                w.raise_fd(l.fd, readable);
            }
            Ok(())
        })
    }

    fn deregister(&self, l: &SimListener) -> io::Result<()> {
        world(|w| {
            w.call();
            w.registered.remove(&l.fd);
            Ok(())
        })
    }
}

impl Register<SimSocket> for SimPoller {
    fn register(&self, s: &SimSocket, token: u64, _: Interest) -> io::Result<()> {
        world(|w| {
            w.call();
            let Some(e) = w.end_of(s.fd) else {
                return Err(ebadf());
            };
            w.registered.insert(s.fd, (self.fd, token));
            // As epoll does on registration: what is true now is reported.
            let end = &w.ends[e];
            let peer = &w.ends[end.peer];
            let flags = Flags {
                readable: !end.inbox.is_empty() || end.fin_in,
                writable: !end.connecting && peer.inbox.len() < peer.capacity,
                read_closed: end.fin_in,
                error: end.error.is_some(),
            };
            w.raise_fd(s.fd, flags);
            Ok(())
        })
    }

    fn deregister(&self, s: &SimSocket) -> io::Result<()> {
        world(|w| {
            w.call();
            if w.registered.remove(&s.fd).is_none() {
                w.misuse
                    .push(format!("deregister of fd {}, not registered", s.fd));
            }
            if let Some(e) = w.end_of(s.fd) {
                let snapshot = w.snapshot();
                let served = &mut w.ends[e].served;
                served.closed_at = Some(snapshot.0);
                served.left.get_or_insert(snapshot);
            }
            Ok(())
        })
    }
}

impl Drop for SimPoller {
    fn drop(&mut self) {
        let _ = WORLD.try_with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                w.fds.remove(&self.fd);
                w.pending.retain(|&(p, _, _)| p != self.fd);
            }
        });
    }
}

impl Poll for SimPoller {
    type Event = SimEvent;
    type Waker = SimWaker;

    fn new(capacity: usize, wake_token: u64) -> io::Result<SimPoller> {
        world(|w| {
            let fd = w.alloc_fd(FdObj::Poller)?;
            Ok(SimPoller {
                fd,
                wake_token,
                capacity: capacity.max(1),
                events: Vec::with_capacity(capacity),
                woken: Arc::new(AtomicBool::new(false)),
            })
        })
    }

    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        let woken = self.woken.swap(false, Ordering::AcqRel);
        let me = self.fd;
        let events = world(|w| {
            let fault = w.call();
            let jump = match fault {
                Some(Fault::Jump(ms)) => Duration::from_millis(ms),
                _ => Duration::ZERO,
            };
            w.elapsed += jump;
            let signalled = w
                .signal_token
                .filter(|&(p, _)| p == me && !w.signals.is_empty());
            let ready = w.pending.iter().any(|&(p, _, _)| p == me);
            let quiet = !ready && !woken && signalled.is_none();
            if quiet && fault != Some(Fault::Interrupted) {
                // Nothing to report: the time the caller would sleep passes.
                w.elapsed += timeout.unwrap_or(Duration::ZERO);
            }
            w.waits.push((w.elapsed, jump));
            if quiet || fault == Some(Fault::Interrupted) {
                return None;
            }
            // The wake-up and the signals first: what does not fit of the
            // rest waits for the next wait.
            let extra = usize::from(woken) + usize::from(signalled.is_some());
            let mut events = w.take_events(me, self.capacity.saturating_sub(extra));
            if woken {
                events.push(SimEvent::only(self.wake_token));
            }
            events.extend(signalled.map(|(_, token)| SimEvent::only(token)));
            w.distort(me, fault, &mut events);
            Some(events)
        });
        // A wake-up not reported stays for the next wait.
        if woken && events.is_none() {
            self.woken.store(true, Ordering::Release);
        }
        self.events = events.unwrap_or_default();
        Ok(self.events.len())
    }

    fn event(&self, i: usize) -> SimEvent {
        self.events[i]
    }

    fn waker(&self) -> SimWaker {
        SimWaker(self.woken.clone())
    }
}

impl SimEvent {
    fn only(token: u64) -> SimEvent {
        SimEvent {
            token,
            readable: false,
            writable: false,
            read_closed: false,
            error: false,
        }
    }
}

impl Readiness for SimEvent {
    fn token(&self) -> u64 {
        self.token
    }
    fn is_readable(&self) -> bool {
        self.readable
    }
    fn is_writable(&self) -> bool {
        self.writable
    }
    fn is_read_closed(&self) -> bool {
        self.read_closed
    }
    fn is_error(&self) -> bool {
        self.error
    }
}

impl Wake for SimWaker {
    fn wake(&self) -> io::Result<()> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

impl Listen for SimListener {
    type Socket = SimSocket;

    fn bind(addr: &Addr, options: &ListenOptions) -> io::Result<SimListener> {
        world(|w| {
            let fd = w.alloc_fd(FdObj::Listener)?;
            let capacity = options.backlog.max(1) as usize;
            let state = ListenerState {
                addr: addr.clone(),
                backlog: VecDeque::new(),
                capacity,
            };
            w.listeners.insert(fd, state);
            Ok(SimListener {
                fd,
                addr: addr.clone(),
            })
        })
    }

    fn accept(&self) -> Result<(SimSocket, Addr), AcceptError> {
        world(|w| {
            let fault = w.call();
            let waiting = w
                .listeners
                .get(&self.fd)
                .is_some_and(|l| !l.backlog.is_empty());
            if fault == Some(Fault::OutOfDescriptors) || (waiting && w.fds.len() >= w.fd_limit) {
                let e = io::Error::from_raw_os_error(libc::EMFILE);
                return Err(AcceptError::OutOfDescriptors(e));
            }
            let Some(end) = w
                .listeners
                .get_mut(&self.fd)
                .and_then(|l| l.backlog.pop_front())
            else {
                return Err(AcceptError::WouldBlock);
            };
            if fault == Some(Fault::Aborted) {
                w.ends[end].reset_on_close = true;
                w.close_end(end);
                return Err(AcceptError::PeerAborted);
            }
            let fd = w
                .alloc_fd(FdObj::Socket(end))
                .map_err(AcceptError::OutOfDescriptors)?;
            w.ends[end].fd = Some(fd);
            let snapshot = w.snapshot();
            w.ends[end].served.accepted = Some(snapshot);
            let peer = w.client_addr();
            w.ends[end].served.peer = Some(peer.clone());
            w.ends[end].served.listener = Some(self.addr.clone());
            Ok((SimSocket { fd }, peer))
        })
    }

    fn local_addr(&self) -> &Addr {
        &self.addr
    }
}

impl Drop for SimListener {
    fn drop(&mut self) {
        let _ = WORLD.try_with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                // As a kernel does: connections never accepted are reset.
                let queued = w.listeners.remove(&self.fd).map(|l| l.backlog);
                for end in queued.into_iter().flatten() {
                    w.ends[end].reset_on_close = true;
                    w.close_end(end);
                }
                w.free_fd(self.fd);
            }
        });
    }
}

/// The fault for a read or write: a limit on the bytes it may move, or
/// none at all. Either way the readiness it hides is reported again, as a
/// kernel does: a stream socket reads or writes short only when it has no
/// more just then, and what comes after makes a new edge.
fn io_fault(w: &mut World, e: EndId, again: Flags) -> Result<Option<usize>, ()> {
    let fault = w.call();
    if matches!(fault, Some(Fault::Short(_) | Fault::Again)) {
        w.raise(e, again);
    }
    match fault {
        Some(Fault::Short(n)) => Ok(Some(n.max(1))),
        Some(Fault::Again) => Err(()),
        _ => Ok(None),
    }
}

impl Stream for SimSocket {
    fn connect(addr: &Addr, _local: Option<SocketAddr>) -> io::Result<SimSocket> {
        world(|w| {
            if let Some(Fault::Refused) = w.call() {
                return Err(io::ErrorKind::ConnectionRefused.into());
            }
            let Some(kind) = w.upstreams.iter().find(|u| &u.addr == addr).map(|u| u.kind) else {
                return Err(io::ErrorKind::ConnectionRefused.into());
            };
            let (ours, theirs) = w.new_pair();
            let fd = w.alloc_fd(FdObj::Socket(ours))?;
            w.ends[ours].fd = Some(fd);
            match kind {
                UpstreamKind::Refuse => {
                    w.ends[ours].error = Some(io::ErrorKind::ConnectionRefused);
                    w.ends[theirs].closed = true;
                }
                // Nobody answers: the connect stays in progress.
                UpstreamKind::Silent => w.ends[ours].connecting = true,
                _ => {
                    w.ends[ours].connecting = true;
                    w.echoing.push(UpstreamConn {
                        end: theirs,
                        kind,
                        echoed: 0,
                    });
                }
            }
            Ok(SimSocket { fd })
        })
    }

    fn apply(&self, _: &SocketOptions) -> io::Result<()> {
        Ok(())
    }

    fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        world(|w| {
            let e = w.live_end_of(self.fd, "read").ok_or_else(ebadf)?;
            let again = Flags {
                readable: true,
                ..Flags::default()
            };
            let peeked = std::mem::take(&mut w.ends[e].peeked);
            let read = match io_fault(w, e, again) {
                Ok(limit) => w.recv(e, buf, limit.map(|n| n.max(peeked))),
                Err(()) if peeked > 0 => w.recv(e, buf, None),
                Err(()) => Err(io::ErrorKind::WouldBlock.into()),
            };
            match read {
                Ok(0) => {
                    let snapshot = w.snapshot();
                    w.ends[e].served.left.get_or_insert(snapshot);
                }
                Ok(n) => {
                    w.ends[e].served.read += n;
                    w.ends[e].served.last_io = w.elapsed;
                }
                Err(_) => {}
            }
            read
        })
    }

    /// What has arrived, left in place; no faults are scripted for it.
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        world(|w| {
            let e = w.live_end_of(self.fd, "peek").ok_or_else(ebadf)?;
            let end = &w.ends[e];
            if end.inbox.is_empty() {
                return match end.error {
                    Some(kind) => Err(kind.into()),
                    None if end.fin_in => Ok(0),
                    None => Err(io::ErrorKind::WouldBlock.into()),
                };
            }
            let n = buf.len().min(end.inbox.len());
            for (slot, byte) in buf.iter_mut().zip(end.inbox.iter()) {
                *slot = *byte;
            }
            w.ends[e].peeked = n;
            Ok(n)
        })
    }

    fn write(&self, buf: &[u8]) -> io::Result<usize> {
        world(|w| {
            let e = w.live_end_of(self.fd, "write").ok_or_else(ebadf)?;
            if w.ends[e].connecting {
                w.misuse.push(format!(
                    "write to fd {} before its connect completed",
                    self.fd
                ));
            }
            let again = Flags {
                writable: true,
                ..Flags::default()
            };
            let wrote = match io_fault(w, e, again) {
                Ok(limit) => w.send(e, buf, limit),
                Err(()) => Err(io::ErrorKind::WouldBlock.into()),
            };
            if let Ok(1..) = wrote {
                w.ends[e].served.last_io = w.elapsed;
            }
            wrote
        })
    }

    fn take_error(&self) -> Option<io::Error> {
        world(|w| {
            w.call();
            let e = w.end_of(self.fd)?;
            w.ends[e].error.take().map(io::Error::from)
        })
    }

    fn unread_len(&self) -> io::Result<usize> {
        world(|w| {
            w.call();
            let e = w.end_of(self.fd).ok_or_else(ebadf)?;
            Ok(w.ends[e].inbox.len())
        })
    }

    fn reset_on_close(&self) -> io::Result<()> {
        world(|w| {
            w.call();
            let e = w.end_of(self.fd).ok_or_else(ebadf)?;
            w.ends[e].reset_on_close = true;
            Ok(())
        })
    }

    fn shutdown_write(&self) -> io::Result<()> {
        world(|w| {
            w.call();
            let e = w.live_end_of(self.fd, "shutdown").ok_or_else(ebadf)?;
            if w.ends[e].connecting {
                w.misuse.push(format!(
                    "FIN on fd {} before its connect completed",
                    self.fd
                ));
            }
            w.fin(e);
            Ok(())
        })
    }
}

impl Drop for SimSocket {
    fn drop(&mut self) {
        let _ = WORLD.try_with(|w| {
            if let Some(w) = w.borrow_mut().as_mut() {
                if let Some(FdObj::Socket(e)) = w.fds.get(&self.fd) {
                    let e = *e;
                    // One never registered (refused at once) closes here.
                    let snapshot = w.snapshot();
                    let served = &mut w.ends[e].served;
                    served.closed_at.get_or_insert(snapshot.0);
                    served.left.get_or_insert(snapshot);
                    w.ends[e].fd = None;
                    w.close_end(e);
                }
                w.free_fd(self.fd);
            }
        });
    }
}

impl Splice for SimPipe {
    type Socket = SimSocket;

    fn new() -> io::Result<SimPipe> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn len(&self) -> usize {
        0
    }

    fn fill_from(&mut self, _: &SimSocket, _: usize) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    fn drain_into(&mut self, _: &SimSocket) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl SignalSource for SimSignals {
    type Poller = SimPoller;

    fn new(poller: &SimPoller, token: u64) -> io::Result<SimSignals> {
        world(|w| w.signal_token = Some((poller.fd, token)));
        Ok(SimSignals)
    }

    fn next(&self) -> io::Result<Option<SignalKind>> {
        Ok(world(|w| w.signals.pop_front()))
    }
}

impl Spare for SimSpare {
    fn new() -> SimSpare {
        SimSpare(world(|w| w.alloc_fd(FdObj::Spare).ok()))
    }

    fn release(&mut self) -> bool {
        match self.0.take() {
            Some(fd) => {
                world(|w| w.free_fd(fd));
                true
            }
            None => false,
        }
    }

    fn restore(&mut self) {
        if self.0.is_none() {
            self.0 = world(|w| w.alloc_fd(FdObj::Spare).ok());
        }
    }

    fn is_held(&self) -> bool {
        self.0.is_some()
    }
}
