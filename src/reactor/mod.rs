//! The event loop: wait for readiness, dispatch it, flush what the services
//! wrote, and do it again.
//!
//! One turn: `Poller::wait` fills the event array; each event names a
//! listener, the waker, or a connection by [`ConnId`] (slot + generation, so
//! an event for a slot that changed owner is dropped). A readable connection is
//! read until the kernel has no more or its per-turn budget is spent, in which
//! case it joins the ready list served before the next wait; its bytes go to
//! the [`Service`], and what the service wrote is sent when the callback
//! returns. Connections closed during a turn give their slot back only after
//! it, when no event of that batch can name them any more.

mod buffer;
mod handle;
mod service;
mod stats;
mod token;

use std::collections::VecDeque;
use std::io;
use std::mem;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::{debug, warn};

use crate::sys::{Event, Interest, ListenOptions, Listener, Poller, Socket, SocketOptions, Waker};
use buffer::Buffer;
use handle::Command;
pub use handle::Handle;
pub use service::{CloseReason, Context, Service};
pub use stats::{ConnInfo, Stats};
pub use token::ConnId;
use token::{Table, Token};

/// Knobs of a reactor. The defaults suit an echo server with many connections.
#[derive(Debug, Clone)]
pub struct Config {
    /// Connections beyond this many are accepted and closed at once.
    pub max_conns: usize,
    /// Stop reading a connection whose unsent output is above this many bytes...
    pub high_watermark: usize,
    /// ...until it drains to this many.
    pub low_watermark: usize,
    /// Bytes asked for by one `read`.
    pub read_chunk: usize,
    /// Bytes one connection may read per turn before others get theirs.
    pub read_budget: usize,
    /// Connections one listener may accept per turn.
    pub accept_budget: usize,
    /// Most events taken from the kernel per wait.
    pub event_capacity: usize,
    /// Options for every accepted socket.
    pub socket: SocketOptions,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_conns: usize::MAX,
            high_watermark: 1 << 20,
            low_watermark: 256 << 10,
            read_chunk: 64 << 10,
            read_budget: 256 << 10,
            accept_budget: 256,
            event_capacity: 1024,
            socket: SocketOptions::default(),
        }
    }
}

#[derive(Default)]
struct Flags {
    /// The service asked not to read for now.
    paused: bool,
    /// Output is above the high watermark: reading waits for it to drain.
    backpressured: bool,
    /// The kernel told us the peer sent FIN, maybe before we read up to it.
    peer_fin: bool,
    /// We read the FIN: no more input.
    read_closed: bool,
    close_when_flushed: bool,
    abort: Option<CloseReason>,
    /// Queued on the ready list.
    ready: bool,
    /// Queued on the touched list.
    touched: bool,
    /// Deregistered and reported to the service; the slot waits for the turn to end.
    closed: bool,
}

struct Connection {
    socket: Socket,
    peer: SocketAddr,
    opened: Instant,
    input: Buffer,
    output: Buffer,
    bytes_in: u64,
    bytes_out: u64,
    flags: Flags,
}

impl Connection {
    fn wants_read(&self) -> bool {
        let f = &self.flags;
        !(f.paused || f.backpressured || f.read_closed || f.close_when_flushed || f.abort.is_some())
    }

    fn takes_output(&self) -> bool {
        !(self.flags.close_when_flushed || self.flags.abort.is_some())
    }
}

impl Table<Connection> {
    /// `id`'s connection, unless it has been closed this turn.
    fn live(&self, id: ConnId) -> Option<&Connection> {
        self.get(id).filter(|c| !c.flags.closed)
    }

    fn live_mut(&mut self, id: ConnId) -> Option<&mut Connection> {
        self.get_mut(id).filter(|c| !c.flags.closed)
    }
}

struct ListenerSlot {
    listener: Listener,
    ready: bool,
}

/// Everything but the service and its per-connection state, so a
/// [`Context`] can lend it to the service while the reactor holds the rest.
pub(crate) struct Core {
    config: Config,
    poller: Poller,
    waker: Arc<Waker>,
    commands: mpsc::Receiver<Command>,
    command_tx: mpsc::Sender<Command>,
    listeners: Vec<ListenerSlot>,
    conns: Table<Connection>,
    /// Output of the connection being served, while it has no backlog: most
    /// replies go from here to the kernel and never touch a per-connection buffer.
    out: Vec<u8>,
    out_owner: Option<ConnId>,
    /// Connections with deferred work: output to flush, a close to carry out.
    touched: Vec<ConnId>,
    /// Connections and listeners to serve before the next wait.
    ready: VecDeque<Token>,
    /// Closed during this turn; their slots are freed after it.
    dead: Vec<ConnId>,
    stats: Stats,
    stopped: bool,
}

impl Core {
    fn touch(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.touched
        {
            conn.flags.touched = true;
            self.touched.push(id);
        }
    }

    /// Queues a read of `id` before the next wait: it may have data whose
    /// edge was reported while we were not reading.
    fn schedule_read(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.ready
        {
            conn.flags.ready = true;
            self.ready.push_back(Token::Conn(id));
        }
    }

    fn output_for(&mut self, id: ConnId) -> Option<&mut Vec<u8>> {
        let conn = self.conns.live_mut(id)?;
        if !conn.takes_output() {
            return None;
        }
        if self.out_owner == Some(id) && conn.output.is_empty() {
            return Some(&mut self.out);
        }
        if !conn.flags.touched {
            conn.flags.touched = true;
            self.touched.push(id);
        }
        Some(conn.output.tail_mut())
    }

    /// Writes `id`'s backlog until it is empty or the kernel is full.
    fn flush(&mut self, id: ConnId) -> io::Result<()> {
        let Some(conn) = self.conns.live_mut(id) else {
            return Ok(());
        };
        while !conn.output.is_empty() {
            match conn.socket.write(conn.output.as_slice()) {
                Ok(n) => {
                    self.stats.writes += 1;
                    self.stats.bytes_out += n as u64;
                    conn.bytes_out += n as u64;
                    conn.output.consume(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        self.after_write(id);
        Ok(())
    }

    /// Sends the shared output buffer for its owner; what the kernel does not
    /// take becomes that connection's backlog.
    fn flush_out(&mut self, id: ConnId) -> io::Result<()> {
        self.out_owner = None;
        let Some(conn) = self.conns.live_mut(id) else {
            self.out.clear();
            return Ok(());
        };
        let mut sent = 0;
        let result = loop {
            if sent == self.out.len() {
                break Ok(());
            }
            match conn.socket.write(&self.out[sent..]) {
                Ok(n) => {
                    self.stats.writes += 1;
                    sent += n;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.stats.bytes_out += sent as u64;
        conn.bytes_out += sent as u64;
        if result.is_ok() {
            conn.output.extend(&self.out[sent..]);
        }
        self.out.clear();
        self.after_write(id);
        result
    }

    /// Backpressure: stop reading above the high watermark, resume below the low one.
    fn after_write(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        let pending = conn.output.len();
        self.stats.peak_pending_output = self.stats.peak_pending_output.max(pending);
        if pending > self.config.high_watermark {
            conn.flags.backpressured = true;
        } else if conn.flags.backpressured && pending <= self.config.low_watermark {
            conn.flags.backpressured = false;
            self.schedule_read(id);
        }
    }
}

/// A single-threaded reactor running one [`Service`].
pub struct Reactor<S: Service> {
    core: Core,
    service: S,
    states: Vec<Option<S::Conn>>,
    /// Shared landing zone for reads; a connection keeps its own input buffer
    /// only while the service leaves a partial message in it.
    rbuf: Vec<u8>,
}

impl<S: Service> Reactor<S> {
    pub fn new(config: Config, service: S) -> io::Result<Self> {
        let poller = Poller::new(config.event_capacity)?;
        let waker = Arc::new(Waker::new()?);
        poller.register(&*waker, Token::Waker.to_u64(), Interest::Readable)?;
        let (command_tx, commands) = mpsc::channel();
        let rbuf = vec![0; config.read_chunk.max(1)];
        Ok(Reactor {
            core: Core {
                config,
                poller,
                waker,
                commands,
                command_tx,
                listeners: Vec::new(),
                conns: Table::new(),
                out: Vec::new(),
                out_owner: None,
                touched: Vec::new(),
                ready: VecDeque::new(),
                dead: Vec::new(),
                stats: Stats::default(),
                stopped: false,
            },
            service,
            states: Vec::new(),
            rbuf,
        })
    }

    /// Starts listening on `addr`; returns the address actually bound
    /// (the real port when `addr` asks for port 0).
    pub fn listen(&mut self, addr: SocketAddr, options: &ListenOptions) -> io::Result<SocketAddr> {
        let listener = Listener::bind(addr, options)?;
        let token = Token::Listener(self.core.listeners.len());
        self.core
            .poller
            .register(&listener, token.to_u64(), Interest::Readable)?;
        let local = listener.local_addr();
        self.core.listeners.push(ListenerSlot {
            listener,
            ready: false,
        });
        Ok(local)
    }

    /// A handle that other threads use to query or stop this reactor.
    pub fn handle(&self) -> Handle {
        Handle::new(self.core.waker.clone(), self.core.command_tx.clone())
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    /// Runs until a [`Handle::stop`].
    pub fn run(&mut self) -> io::Result<()> {
        while !self.core.stopped {
            self.turn()?;
        }
        Ok(())
    }

    /// One wait and everything it reported.
    pub fn turn(&mut self) -> io::Result<()> {
        let timeout = if self.core.ready.is_empty() {
            None
        } else {
            Some(Duration::ZERO)
        };
        let n = self.core.poller.wait(timeout)?;
        self.core.stats.polls += 1;
        self.core.stats.events += n as u64;
        for i in 0..n {
            let event = self.core.poller.event(i);
            self.dispatch(event);
        }
        // Only what was queued before this point: newcomers wait one turn, so
        // a connection that refills its budget cannot starve the poller.
        for _ in 0..self.core.ready.len() {
            match self.core.ready.pop_front() {
                Some(Token::Conn(id)) => {
                    if let Some(conn) = self.core.conns.live_mut(id) {
                        conn.flags.ready = false;
                        self.read(id);
                    }
                }
                Some(Token::Listener(i)) => {
                    self.core.listeners[i].ready = false;
                    self.accept(i);
                }
                Some(Token::Waker) | None => {}
            }
        }
        for id in self.core.dead.drain(..) {
            self.core.conns.remove(id);
        }
        Ok(())
    }

    fn dispatch(&mut self, event: Event) {
        match Token::from_u64(event.token()) {
            Token::Conn(id) => self.on_conn_event(id, event),
            Token::Listener(i) => self.accept(i),
            Token::Waker => self.on_wake(),
        }
    }

    fn on_conn_event(&mut self, id: ConnId, event: Event) {
        let Some(conn) = self.core.conns.live_mut(id) else {
            self.core.stats.stale_events += 1;
            return;
        };
        if event.is_error() {
            // A reset or similar: nothing more can be sent or received.
            let err = conn.socket.take_error();
            let kind = err.map_or(io::ErrorKind::ConnectionReset, |e| e.kind());
            self.close(id, CloseReason::Error(kind));
            self.settle();
            return;
        }
        if event.is_read_closed() {
            conn.flags.peer_fin = true;
        }
        if event.is_writable() && !conn.output.is_empty() {
            self.core.touch(id);
            self.settle();
        }
        if event.is_readable() || event.is_read_closed() {
            self.read(id);
        }
    }

    fn accept(&mut self, i: usize) {
        for _ in 0..self.core.config.accept_budget {
            match self.core.listeners[i].listener.accept() {
                Ok((socket, peer)) => self.admit(socket, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                // The peer gave up while queued: only that connection is lost.
                Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => {
                    warn!("accept failed: {e}");
                    return;
                }
            }
        }
        let slot = &mut self.core.listeners[i];
        if !slot.ready {
            slot.ready = true;
            self.core.ready.push_back(Token::Listener(i));
        }
    }

    fn admit(&mut self, socket: Socket, peer: SocketAddr) {
        let core = &mut self.core;
        if core.conns.len() - core.dead.len() >= core.config.max_conns {
            core.stats.rejected += 1;
            debug!(
                "rejected {peer}: at the limit of {} connections",
                core.config.max_conns
            );
            return;
        }
        if let Err(e) = socket.apply(&core.config.socket) {
            warn!("socket options for {peer}: {e}");
            return;
        }
        let id = core.conns.next_id();
        if let Err(e) = core
            .poller
            .register(&socket, Token::Conn(id).to_u64(), Interest::ReadWrite)
        {
            warn!("register {peer}: {e}");
            return;
        }
        core.conns.insert(Connection {
            socket,
            peer,
            opened: Instant::now(),
            input: Buffer::default(),
            output: Buffer::default(),
            bytes_in: 0,
            bytes_out: 0,
            flags: Flags::default(),
        });
        core.stats.accepted += 1;
        core.stats.active += 1;
        debug!("accepted {id} from {peer}");
        core.out_owner = Some(id);
        let state = self.service.on_connect(&mut Context { core }, id, peer);
        if self.states.len() <= id.index() {
            self.states.resize_with(id.index() + 1, || None);
        }
        self.states[id.index()] = Some(state);
        self.settle();
    }

    /// Reads `id` until the kernel is drained, the budget is spent, or the
    /// connection stops wanting input.
    fn read(&mut self, id: ConnId) {
        let chunk = self.rbuf.len();
        let mut budget = self.core.config.read_budget;
        loop {
            let Some(conn) = self.core.conns.live_mut(id) else {
                return;
            };
            if !conn.wants_read() {
                return;
            }
            let into_rbuf = conn.input.is_empty();
            let result = if into_rbuf {
                conn.socket.read(&mut self.rbuf)
            } else {
                conn.input.read_from(&conn.socket, chunk)
            };
            self.core.stats.reads += 1;
            match result {
                Ok(0) => {
                    conn.flags.read_closed = true;
                    self.read_closed(id);
                    return;
                }
                Ok(n) => {
                    let peer_fin = conn.flags.peer_fin;
                    conn.bytes_in += n as u64;
                    self.core.stats.bytes_in += n as u64;
                    self.deliver(id, n, into_rbuf);
                    // A short read emptied the socket; edge-triggering reports
                    // the next bytes, so another read would only say EAGAIN.
                    // Unless a FIN is queued: that read is how we see it.
                    if n < chunk && !peer_fin {
                        return;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.core.schedule_read(id);
                        return;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.core.stats.eagain_reads += 1;
                    return;
                }
                Err(e) => {
                    self.close(id, CloseReason::Error(e.kind()));
                    self.settle();
                    return;
                }
            }
        }
    }

    /// Hands `n` new bytes to the service, keeps what it leaves, sends what it wrote.
    fn deliver(&mut self, id: ConnId, n: usize, in_rbuf: bool) {
        let Some(state) = self.states.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        let core = &mut self.core;
        core.out_owner = Some(id);
        if in_rbuf {
            let input = &self.rbuf[..n];
            let used = self
                .service
                .on_data(&mut Context { core }, id, state, input);
            if let Some(conn) = core.conns.live_mut(id) {
                conn.input.extend(&input[used.min(n)..]);
            }
        } else if let Some(conn) = core.conns.live_mut(id) {
            let mut input = mem::take(&mut conn.input);
            let used = self
                .service
                .on_data(&mut Context { core }, id, state, input.as_slice());
            input.consume(used);
            if let Some(conn) = core.conns.live_mut(id) {
                conn.input = input;
            }
        }
        self.settle();
    }

    fn read_closed(&mut self, id: ConnId) {
        debug!("{id}: peer sent FIN");
        if let (Some(state), Some(conn)) = (
            self.states.get_mut(id.index()).and_then(Option::as_mut),
            self.core.conns.live_mut(id),
        ) {
            let input = mem::take(&mut conn.input);
            let core = &mut self.core;
            core.out_owner = Some(id);
            self.service
                .on_read_closed(&mut Context { core }, id, state, input.as_slice());
        }
        self.settle();
    }

    /// Carries out what callbacks deferred: sends output, performs closes.
    fn settle(&mut self) {
        if let Some(id) = self.core.out_owner
            && let Err(e) = self.core.flush_out(id)
        {
            self.close(id, CloseReason::Error(e.kind()));
        }
        while let Some(id) = self.core.touched.pop() {
            let Some(conn) = self.core.conns.live_mut(id) else {
                continue;
            };
            conn.flags.touched = false;
            if let Some(reason) = conn.flags.abort {
                self.close(id, reason);
                continue;
            }
            if let Err(e) = self.core.flush(id) {
                self.close(id, CloseReason::Error(e.kind()));
                continue;
            }
            let Some(conn) = self.core.conns.live_mut(id) else {
                continue;
            };
            if conn.flags.close_when_flushed && conn.output.is_empty() {
                let reason = if conn.flags.read_closed {
                    CloseReason::Peer
                } else {
                    CloseReason::Local
                };
                self.close(id, reason);
            }
        }
    }

    /// Deregisters and closes `id` at once, and tells the service.
    fn close(&mut self, id: ConnId, reason: CloseReason) {
        let core = &mut self.core;
        let Some(conn) = core.conns.live_mut(id) else {
            return;
        };
        if let Err(e) = core.poller.deregister(&conn.socket) {
            warn!("{id}: deregister: {e}");
        }
        // The slot (and so the fd number) stays taken until the turn ends, so
        // no event of this batch can reach a new owner.
        conn.flags.closed = true;
        conn.input.release();
        conn.output.release();
        core.stats.active -= 1;
        core.stats.closed += 1;
        core.stats.closed_by[reason.slot()] += 1;
        core.dead.push(id);
        debug!("closed {id} ({}): {reason}", conn.peer);
        if let Some(state) = self.states.get_mut(id.index()).and_then(Option::take) {
            self.service
                .on_close(&mut Context { core }, id, state, reason);
        }
    }

    fn on_wake(&mut self) {
        if let Err(e) = self.core.waker.reset() {
            warn!("waker reset: {e}");
        }
        while let Ok(command) = self.core.commands.try_recv() {
            match command {
                Command::Stop => self.core.stopped = true,
                Command::Stats(reply) => {
                    let _ = reply.send(self.core.stats);
                }
                Command::Connections(reply) => {
                    let _ = reply.send(self.connections());
                }
            }
        }
    }

    /// A snapshot of every open connection.
    pub fn connections(&self) -> Vec<ConnInfo> {
        let now = Instant::now();
        self.core
            .conns
            .iter()
            .filter(|(_, c)| !c.flags.closed)
            .map(|(id, c)| ConnInfo {
                id,
                peer: c.peer,
                age: now.duration_since(c.opened),
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                pending_output: c.output.len(),
                reading: c.wants_read(),
            })
            .collect()
    }
}
