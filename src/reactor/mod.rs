//! The event loop: wait for readiness, dispatch it, flush what the services
//! wrote, and do it again.
//!
//! One turn: `Poller::wait` fills the event array, with a timeout taken from
//! the nearest timer; each event names a listener, a wake-up, the signals or
//! a connection by [`ConnId`] (slot + generation, so an event for a slot that
//! changed owner is dropped). A readable connection is read until the kernel
//! has no more or its per-turn budget is spent, in which case it joins the
//! ready list served before the next wait; its bytes go to the [`Service`].
//! What the service wrote back to it is held, and the replies of a group of
//! events (`Config::hold_replies`) are sent back to back after that group's
//! reads; writes to other connections go at once. Connections
//! closed during a turn give their slot back only after it, when no event of
//! that batch can name them any more.

mod buffer;
pub(crate) mod core;
mod handle;
mod service;
mod stats;
mod timer;
mod token;

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use crate::sys::{AcceptError, Event, Interest, Listener, Poller, SignalKind, Signals, Socket};
pub use crate::sys::{ListenOptions, SocketOptions};
use core::{Core, ListenerSlot, trace_io};
use handle::Command;
pub use handle::Handle;
pub use service::{CloseReason, Context, Service};
pub use stats::{ConnInfo, Stats, format_table};
pub use timer::TimerId;
use timer::{TimerKind, Timers};
pub use token::ConnId;
use token::Token;

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
    /// Close a connection with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose peer takes none of its pending output for this long.
    pub write_timeout: Option<Duration>,
    /// Close a connection whose service has left a partial message (a frame
    /// not yet complete) unconsumed for this long since its first byte: a
    /// peer trickling bytes of a frame it never finishes (slowloris) does
    /// not keep its slot because every byte counts as traffic.
    pub frame_timeout: Option<Duration>,
    /// How long a graceful shutdown may take before the rest is closed.
    pub shutdown_timeout: Duration,
    /// How long an outgoing connect may take.
    pub connect_timeout: Duration,
    /// Log a one-line summary of the counters this often.
    pub stats_interval: Option<Duration>,
    /// One stderr line per readiness event and I/O call.
    pub trace: bool,
    /// Before sleeping in the poller, spin on non-blocking polls this long.
    pub busy_poll: Option<Duration>,
    /// How many replies to hold before sending them back to back: the sends
    /// of a group of events go out together after the group's reads. 0 or 1
    /// sends each reply as soon as its event is handled.
    pub hold_replies: usize,
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
            idle_timeout: None,
            write_timeout: None,
            frame_timeout: None,
            shutdown_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            stats_interval: None,
            trace: false,
            busy_poll: None,
            hold_replies: 32,
            socket: SocketOptions::default(),
        }
    }
}

/// After running out of file descriptors, accepting pauses this long at
/// first, doubling up to the maximum while it keeps failing.
const ACCEPT_BACKOFF_MS: (u64, u64) = (10, 1000);

/// A single-threaded reactor running one [`Service`].
pub struct Reactor<S: Service> {
    core: Core,
    service: S,
    states: Vec<Option<S::Conn>>,
    /// Shared landing zone for reads, two read chunks long; a connection
    /// keeps its own input buffer only while the service leaves a partial
    /// message in it. Reads go one after another, so echoes held until the
    /// batch ends can be sent from here.
    arena: Vec<u8>,
    /// How much of `arena` this batch has filled.
    arena_used: usize,
}

impl<S: Service> Reactor<S> {
    pub fn new(config: Config, service: S) -> io::Result<Self> {
        let poller = Poller::new(config.event_capacity, Token::Waker.to_u64())?;
        let (command_tx, commands) = mpsc::channel();
        let arena = vec![0; 2 * config.read_chunk.max(1)];
        let now = Instant::now();
        let mut timers = Timers::default();
        if let Some(every) = config.stats_interval {
            timers.add(now + every, TimerKind::StatsReport);
        }
        Ok(Reactor {
            core: Core::new(config, poller, command_tx, commands, timers, now),
            service,
            states: Vec::new(),
            arena,
            arena_used: 0,
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
            paused: false,
            backoff_ms: ACCEPT_BACKOFF_MS.0,
        });
        Ok(local)
    }

    /// Opens a connection to `addr` (from `local`, if given) from outside any
    /// callback, as a client does before it has heard of anything; then as
    /// [`Context::connect`]: the service hears `on_connect` or `on_connect_failed`.
    pub fn connect(&mut self, addr: SocketAddr, local: Option<SocketAddr>) -> io::Result<ConnId> {
        self.core.connect(addr, local)
    }

    /// SIGINT and SIGTERM start a graceful shutdown (a second one stops at
    /// once); SIGUSR1 prints the connection table. Call it before starting
    /// any thread: on Linux it blocks those signals in the calling thread.
    pub fn handle_signals(&mut self) -> io::Result<()> {
        let signals = Signals::new(&self.core.poller, Token::Signals.to_u64())?;
        self.core.signals = Some(signals);
        Ok(())
    }

    /// A handle that other threads use to query, shut down or stop this reactor.
    pub fn handle(&self) -> Handle {
        Handle::new(self.core.poller.waker(), self.core.command_tx.clone())
    }

    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    pub fn service(&self) -> &S {
        &self.service
    }

    /// True if the last `run` ended because a second shutdown request cut
    /// the graceful one short.
    pub fn was_forced(&self) -> bool {
        self.core.forced
    }

    /// Runs until stopped, or until a graceful shutdown has closed every connection.
    pub fn run(&mut self) -> io::Result<()> {
        while !self.core.stopped {
            self.turn()?;
        }
        Ok(())
    }

    /// One wait and everything it reported.
    pub fn turn(&mut self) -> io::Result<()> {
        let timeout = if self.core.ready.is_empty() {
            self.core
                .timers
                .next_deadline()
                .map(|at| at.saturating_duration_since(Instant::now()))
        } else {
            Some(Duration::ZERO)
        };
        let n = self.wait(timeout)?;
        self.core.now = Instant::now();
        self.core.stats.events += n as u64;
        for i in 0..n {
            let event = self.core.poller.event(i);
            self.dispatch(event);
            if self.core.held.len() >= self.core.config.hold_replies {
                self.flush_held();
            }
        }
        self.run_timers();
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
                    if let Some(slot) = self.core.listeners.get_mut(i) {
                        slot.ready = false;
                        self.accept(i);
                    }
                }
                Some(Token::Waker | Token::Signals) | None => {}
            }
        }
        self.flush_held();
        if !self.core.dead.is_empty() {
            for id in self.core.dead.drain(..) {
                self.core.conns.remove(id);
            }
            // Descriptors were freed: take the spare back if an earlier
            // attempt found none.
            self.core.spare_fd.restore();
        }
        if self.core.shutting_down && self.core.stats.active == 0 {
            self.core.stopped = true;
        }
        Ok(())
    }

    /// Waits for events. With `busy_poll`, first spins on zero-timeout waits
    /// for up to that long: a reply then costs no sleep and wake-up, at the
    /// price of a busy core.
    fn wait(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        if let Some(spin) = self.core.config.busy_poll
            && timeout != Some(Duration::ZERO)
        {
            let until = Instant::now() + timeout.map_or(spin, |t| t.min(spin));
            loop {
                self.core.stats.polls += 1;
                let n = self.core.poller.wait(Some(Duration::ZERO))?;
                if n > 0 {
                    return Ok(n);
                }
                if Instant::now() >= until {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        self.core.stats.polls += 1;
        self.core.poller.wait(timeout)
    }

    fn dispatch(&mut self, event: Event) {
        match Token::from_u64(event.token()) {
            Token::Conn(id) => self.on_conn_event(id, event),
            Token::Listener(i) => self.accept(i),
            Token::Waker => self.on_wake(),
            Token::Signals => self.on_signal(),
        }
    }

    fn on_conn_event(&mut self, id: ConnId, event: Event) {
        let Some(conn) = self.core.conns.live_mut(id) else {
            self.core.stats.stale_events += 1;
            return;
        };
        trace_io!(
            self.core.config.trace,
            "{id} event{}{}{}{}",
            if event.is_readable() { " readable" } else { "" },
            if event.is_writable() { " writable" } else { "" },
            if event.is_read_closed() { " hup" } else { "" },
            if event.is_error() { " error" } else { "" },
        );
        if conn.flags.connecting && !self.finish_connect(id, &event) {
            return;
        }
        let Some(conn) = self.core.conns.live_mut(id) else {
            return;
        };
        if event.is_error() {
            // A reset or similar: nothing more can be sent or received.
            let kind = conn
                .socket
                .take_error()
                .map_or(io::ErrorKind::ConnectionReset, |e| e.kind());
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
        if event.is_writable()
            && let Some(peer) = self
                .core
                .conns
                .live(id)
                .and_then(|c| c.splice.as_ref())
                .map(|s| s.peer)
        {
            self.pump(peer);
        }
        if event.is_readable() || event.is_read_closed() {
            self.read(id);
        }
    }

    fn pump(&mut self, src: ConnId) {
        if let Err((dst, e)) = self.core.pump(src) {
            self.close(dst, CloseReason::Error(e.kind()));
        }
        self.settle();
    }

    /// The spliced read path: socket → pipe → peer socket, never through
    /// user space. The pipe is only filled when empty, so an EAGAIN from the
    /// fill means the socket, not the pipe, has nothing more.
    fn splice_read(&mut self, id: ConnId) {
        let mut budget = self.core.config.read_budget;
        let chunk = self.core.config.read_chunk;
        loop {
            let trace = self.core.config.trace;
            let Some(conn) = self.core.conns.live_mut(id) else {
                return;
            };
            let Some(pipe_len) = conn.splice.as_ref().map(|s| s.pipe.len()) else {
                return;
            };
            if pipe_len > 0 {
                self.pump(id);
                if self
                    .core
                    .conns
                    .live(id)
                    .is_none_or(|c| c.flags.backpressured)
                {
                    return;
                }
                continue;
            }
            if !conn.wants_read() {
                return;
            }
            let Some(splice) = conn.splice.as_mut() else {
                return;
            };
            // While shutting down, take no more than what had arrived.
            let max = conn.drain_left.map_or(chunk, |left| left.min(chunk));
            self.core.stats.reads += 1;
            match splice.pipe.fill_from(&conn.socket, max) {
                Ok(0) => {
                    trace_io!(trace, "{id} splice EOF");
                    conn.flags.read_closed = true;
                    self.read_closed(id);
                    return;
                }
                Ok(n) => {
                    trace_io!(trace, "{id} splice {n} into pipe");
                    conn.received(n, self.core.now);
                    self.core.stats.bytes_in += n as u64;
                    if let Some(left) = &mut conn.drain_left {
                        *left -= n;
                        if *left == 0 {
                            self.pump(id);
                            self.end_input(id);
                            return;
                        }
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.pump(id);
                        self.core.schedule_read(id);
                        return;
                    }
                }
                Err(e) => return self.read_failed(id, "splice", e),
            }
        }
    }

    fn accept(&mut self, i: usize) {
        if self.core.listeners.get(i).is_none_or(|slot| slot.paused) {
            return;
        }
        for _ in 0..self.core.config.accept_budget {
            match self.core.listeners[i].listener.accept() {
                Ok((socket, peer)) => {
                    self.core.listeners[i].backoff_ms = ACCEPT_BACKOFF_MS.0;
                    self.admit(socket, peer);
                }
                Err(AcceptError::WouldBlock) => return,
                // The peer gave up while queued: only that connection is lost.
                Err(AcceptError::PeerAborted) => {}
                // The kernel looks for a free descriptor before it looks at
                // the queue, so this comes even when nobody is waiting.
                Err(AcceptError::OutOfDescriptors(e)) => match self.shed(i) {
                    Ok(()) => {}
                    Err(AcceptError::WouldBlock) => return,
                    Err(_) => {
                        self.pause_accept(i, &e);
                        return;
                    }
                },
                Err(AcceptError::Other(e)) => {
                    self.pause_accept(i, &e);
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

    /// Out of descriptors: frees the spare to accept one waiting connection
    /// and close it at once, so the queue drains instead of the listener
    /// staying readable and spinning the loop. `WouldBlock` if nobody was waiting.
    fn shed(&mut self, i: usize) -> Result<(), AcceptError> {
        let core = &mut self.core;
        if !core.spare_fd.release() {
            return Err(AcceptError::Other(io::Error::other("no spare descriptor")));
        }
        // The accepted socket closes at the end of this statement, before the
        // spare is taken back.
        let shed = core.listeners[i].listener.accept().map(|(_, peer)| peer);
        core.spare_fd.restore();
        if let Ok(peer) = shed {
            core.stats.accepted += 1;
            core.stats.closed += 1;
            core.stats.closed_by[CloseReason::Limit.slot()] += 1;
            if core.stats.closed_by(CloseReason::Limit).is_power_of_two() {
                let n = core.stats.closed_by(CloseReason::Limit);
                let s = if n == 1 { "" } else { "s" };
                warn!(
                    "out of file descriptors: {n} new connection{s} closed at once so far \
                     (last from {peer})"
                );
            }
        }
        shed.map(drop)
    }

    fn pause_accept(&mut self, i: usize, err: &io::Error) {
        let slot = &mut self.core.listeners[i];
        warn!(
            "accept failed: {err}; pausing accepts for {} ms",
            slot.backoff_ms
        );
        slot.paused = true;
        let at = self.core.now + Duration::from_millis(slot.backoff_ms);
        slot.backoff_ms = (slot.backoff_ms * 2).min(ACCEPT_BACKOFF_MS.1);
        self.core.timers.add(at, TimerKind::ResumeAccept(i));
    }

    fn admit(&mut self, socket: Socket, peer: SocketAddr) {
        let core = &mut self.core;
        core.stats.accepted += 1;
        if core.stats.active as usize >= core.config.max_conns {
            core.stats.closed += 1;
            core.stats.closed_by[CloseReason::Limit.slot()] += 1;
            debug!(
                "rejected {peer}: at the limit of {} connections",
                core.config.max_conns
            );
            return;
        }
        let id = match core.add(socket, peer) {
            Ok(id) => id,
            Err(e) => {
                warn!("setting up {peer}: {e}");
                return;
            }
        };
        debug!("accepted {id} from {peer}");
        trace_io!(core.config.trace, "{id} accept from {peer}");
        self.open(id, peer);
    }

    /// A connection is up: the service makes its state, then its output goes.
    fn open(&mut self, id: ConnId, peer: SocketAddr) {
        let core = &mut self.core;
        core.begin_serving(id);
        let state = self
            .service
            .on_connect(&mut Context::new(core, &self.arena), id, peer);
        if self.states.len() <= id.index() {
            self.states.resize_with(id.index() + 1, || None);
        }
        self.states[id.index()] = Some(state);
        self.core.touch(id);
        self.settle();
    }

    /// Completes or fails an outgoing connect; true once it is up.
    fn finish_connect(&mut self, id: ConnId, event: &Event) -> bool {
        let Some(conn) = self.core.conns.live_mut(id) else {
            return false;
        };
        if !(event.is_writable() || event.is_error() || event.is_read_closed()) {
            return false;
        }
        match conn.socket.take_error() {
            None => {
                conn.flags.connecting = false;
                let peer = conn.peer;
                self.core.stats.connected += 1;
                trace_io!(self.core.config.trace, "{id} connected to {peer}");
                self.open(id, peer);
                true
            }
            Some(error) => {
                self.connect_failed(id, error);
                false
            }
        }
    }

    fn connect_failed(&mut self, id: ConnId, error: io::Error) {
        self.core.stats.connect_failed += 1;
        trace_io!(self.core.config.trace, "{id} connect failed: {error}");
        self.close_with(id, CloseReason::Error(error.kind()), Some(error));
        self.settle();
    }

    /// Reads `id` until the kernel is drained, the budget is spent, or the
    /// connection stops wanting input.
    fn read(&mut self, id: ConnId) {
        let mut budget = self.core.config.read_budget;
        loop {
            let trace = self.core.config.trace;
            let room = self.arena_room();
            let Some(conn) = self.core.conns.live_mut(id) else {
                return;
            };
            if conn.flags.linger {
                return self.discard(id);
            }
            if conn.splice.is_some() && conn.input.is_empty() {
                return self.splice_read(id);
            }
            if !conn.wants_read() {
                return;
            }
            // While shutting down, read no further than what had arrived.
            let max = conn
                .drain_left
                .map_or(room.len(), |left| left.min(room.len()));
            let result = conn
                .socket
                .read(&mut self.arena[room.start..room.start + max]);
            self.core.stats.reads += 1;
            match result {
                Ok(0) => {
                    trace_io!(trace, "{id} read EOF");
                    conn.flags.read_closed = true;
                    self.read_closed(id);
                    return;
                }
                Ok(n) => {
                    trace_io!(trace, "{id} read {n}");
                    let peer_fin = conn.flags.peer_fin;
                    conn.received(n, self.core.now);
                    self.core.stats.bytes_in += n as u64;
                    if let Some(left) = &mut conn.drain_left {
                        *left -= n;
                    }
                    self.deliver(id, room.start..room.start + n);
                    if self.core.conns.live(id).and_then(|c| c.drain_left) == Some(0) {
                        self.end_input(id);
                        return;
                    }
                    // A short read emptied the socket; edge-triggering reports
                    // the next bytes, so another read would only say EAGAIN.
                    // Unless a FIN is queued: that read is how we see it.
                    if n < max && !peer_fin {
                        return;
                    }
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.core.schedule_read(id);
                        return;
                    }
                }
                Err(e) => return self.read_failed(id, "read", e),
            }
        }
    }

    /// A read or splice that failed: EAGAIN means the socket is drained;
    /// anything else ends the connection.
    fn read_failed(&mut self, id: ConnId, op: &str, e: io::Error) {
        if e.kind() == io::ErrorKind::WouldBlock {
            trace_io!(self.core.config.trace, "{id} {op} EAGAIN");
            self.core.stats.eagain_reads += 1;
            return;
        }
        trace_io!(self.core.config.trace, "{id} {op} error: {e}");
        self.close(id, CloseReason::Error(e.kind()));
        self.settle();
    }

    /// Shutting down, after the service's last input: reads and drops
    /// whatever the peer still sends, within the same per-turn budget as any
    /// read, until it closes too.
    fn discard(&mut self, id: ConnId) {
        let trace = self.core.config.trace;
        let mut budget = self.core.config.read_budget;
        loop {
            let room = self.arena_room();
            let Some(conn) = self.core.conns.live_mut(id) else {
                return;
            };
            self.core.stats.reads += 1;
            match conn.socket.read(&mut self.arena[room]) {
                Ok(0) => {
                    trace_io!(trace, "{id} read EOF (shutting down)");
                    conn.flags.read_closed = true;
                    if conn.flags.write_closed {
                        self.close(id, CloseReason::Shutdown);
                    } else {
                        // Output may still be owed; the close follows its flush.
                        self.core.touch(id);
                    }
                    self.settle();
                    return;
                }
                Ok(n) => {
                    trace_io!(trace, "{id} read {n} (discarded)");
                    conn.bytes_in += n as u64;
                    self.core.stats.bytes_in += n as u64;
                    budget = budget.saturating_sub(n);
                    if budget == 0 {
                        self.core.schedule_read(id);
                        return;
                    }
                }
                Err(e) => return self.read_failed(id, "read", e),
            }
        }
    }

    /// Where the next read into the arena goes: a read chunk of room, made
    /// by sending the held replies if the batch has filled the arena.
    fn arena_room(&mut self) -> Range<usize> {
        let chunk = self.core.config.read_chunk.max(1);
        if self.arena.len() - self.arena_used < chunk {
            self.flush_held();
        }
        self.arena_used..self.arena_used + chunk
    }

    /// Sends the replies held back during this batch, oldest first.
    fn flush_held(&mut self) {
        let mut i = 0;
        // Closing a connection may run callbacks, but none of them holds a reply.
        while let Some(held) = self.core.held.get(i) {
            let id = held.id;
            if let Err(e) = self.core.send_held(id, &self.arena) {
                self.close(id, CloseReason::Error(e.kind()));
            }
            i += 1;
        }
        self.core.held.clear();
        self.core.out.clear();
        self.arena_used = 0;
        self.settle();
    }

    /// Hands the bytes just read into `range` of the arena to the service
    /// and keeps what it leaves; what it writes back is held until the batch
    /// ends. Memory for a partial message is what was received of it: the
    /// arena is shared, and only leftovers are copied out of it.
    fn deliver(&mut self, id: ConnId, range: Range<usize>) {
        let Some(state) = self.states.get_mut(id.index()).and_then(Option::as_mut) else {
            return;
        };
        let core = &mut self.core;
        let Some(conn) = core.conns.live_mut(id) else {
            return;
        };
        let left_before = conn.input.len();
        let used = if left_before == 0 {
            // Held echoes may point into these bytes: the next read goes after them.
            self.arena_used = range.end;
            let input = &self.arena[range.clone()];
            core.begin_serving(id);
            let ctx = &mut Context::with_input(core, &self.arena, range);
            let used = self.service.on_data(ctx, id, state, input);
            if let Some(conn) = core.conns.live_mut(id) {
                conn.input.extend(&input[used.min(input.len())..]);
            }
            used
        } else {
            conn.input.extend(&self.arena[range]);
            let mut input = mem::take(&mut conn.input);
            core.begin_serving(id);
            let ctx = &mut Context::new(core, &self.arena);
            let used = self.service.on_data(ctx, id, state, input.as_slice());
            input.consume(used);
            if let Some(conn) = core.conns.live_mut(id) {
                conn.input = input;
            }
            used
        };
        self.core.track_partial(id, left_before, used);
        self.settle();
    }

    fn read_closed(&mut self, id: ConnId) {
        debug!("{id}: peer sent FIN");
        self.input_ended(id);
    }

    /// The service hears that `id`'s input has ended, with what it left
    /// unconsumed.
    fn input_ended(&mut self, id: ConnId) {
        if let (Some(state), Some(conn)) = (
            self.states.get_mut(id.index()).and_then(Option::as_mut),
            self.core.conns.live_mut(id),
        ) {
            let input = mem::take(&mut conn.input);
            let core = &mut self.core;
            core.begin_serving(id);
            self.service.on_read_closed(
                &mut Context::new(core, &self.arena),
                id,
                state,
                input.as_slice(),
            );
        }
        self.settle();
        // Both directions are done: nothing is left for this socket.
        if self
            .core
            .conns
            .live(id)
            .is_some_and(|c| c.flags.write_closed && !c.flags.linger)
        {
            self.close(id, CloseReason::Peer);
            self.settle();
        }
    }

    /// Shutting down: the service has had every byte that arrived before
    /// the shutdown, and hears the end of input as if the peer had sent
    /// FIN. What the peer sends from now on is dropped, and closing waits
    /// for its own close, so that unread input does not turn into RST.
    fn end_input(&mut self, id: ConnId) {
        if let Some(conn) = self.core.conns.live_mut(id) {
            conn.drain_left = None;
            conn.flags.linger = true;
        }
        self.input_ended(id);
        self.core.schedule_read(id);
    }

    /// Carries out what callbacks deferred: sends output, performs closes.
    fn settle(&mut self) {
        if let Some(id) = self.core.out_owner
            && let Err(e) = self.core.hold_reply(id, &self.arena)
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
            if let Err(e) = self.core.flush(id, &self.arena) {
                self.close(id, CloseReason::Error(e.kind()));
                continue;
            }
            if self.core.pending_output(id) != Some(0) {
                continue;
            }
            let Some(conn) = self.core.conns.live_mut(id) else {
                continue;
            };
            // A FIN now would abort the connect: it waits until it is up
            // (`open` touches the connection again).
            if conn.flags.connecting {
                continue;
            }
            let f = &conn.flags;
            // Shutting down, the peer may still be sending: FIN first, then
            // read until it closes, so unread input does not turn into RST.
            let linger = f.close_when_flushed && f.linger && !f.read_closed;
            if (f.shut_write_when_flushed || linger) && !f.write_closed {
                trace_io!(self.core.config.trace, "{id} shutdown(write)");
                if let Err(e) = conn.socket.shutdown_write() {
                    self.close(id, CloseReason::Error(e.kind()));
                    continue;
                }
                conn.flags.write_closed = true;
                if linger {
                    self.core.schedule_read(id);
                } else if conn.flags.read_closed {
                    self.close(id, CloseReason::Peer);
                    continue;
                }
            }
            let Some(conn) = self.core.conns.live_mut(id) else {
                continue;
            };
            let f = &conn.flags;
            if f.close_when_flushed && !linger {
                let reason = if f.linger {
                    CloseReason::Shutdown
                } else if f.read_closed {
                    CloseReason::Peer
                } else {
                    CloseReason::Local
                };
                self.close(id, reason);
            }
        }
    }

    fn close(&mut self, id: ConnId, reason: CloseReason) {
        self.close_with(id, reason, None);
    }

    /// Deregisters `id` at once and tells the service: `on_close`, or, for a
    /// connect that never completed, `on_connect_failed` with `error` (or
    /// with why it was abandoned). The fd closes when the slot is freed at
    /// the end of the turn.
    fn close_with(&mut self, id: ConnId, reason: CloseReason, error: Option<io::Error>) {
        let core = &mut self.core;
        let Some(conn) = core.conns.live_mut(id) else {
            return;
        };
        if let Err(e) = core.poller.deregister(&conn.socket) {
            warn!("{id}: deregister: {e}");
        }
        if conn.flags.reset
            && let Err(e) = conn.socket.reset_on_close()
        {
            warn!("{id}: SO_LINGER: {e}");
        }
        core.stats.interest_changes += 1;
        // The slot (and so the fd number) stays taken until the turn ends, so
        // no event of this batch can reach a new owner.
        conn.flags.closed = true;
        conn.input.release();
        conn.output.release();
        for timer in [
            conn.idle_timer.take(),
            conn.write_timer.take(),
            conn.frame_timer.take(),
        ]
        .into_iter()
        .flatten()
        {
            core.timers.cancel(timer);
        }
        let connecting = conn.flags.connecting;
        core.stats.active -= 1;
        core.stats.closed += 1;
        core.stats.closed_by[reason.slot()] += 1;
        core.dead.push(id);
        debug!("closed {id} ({}): {reason}", conn.peer);
        trace_io!(core.config.trace, "{id} close: {reason}");
        let ctx = &mut Context::new(core, &self.arena);
        if let Some(state) = self.states.get_mut(id.index()).and_then(Option::take) {
            self.service.on_close(ctx, id, state, reason);
        } else if connecting {
            let error = error.unwrap_or_else(|| {
                let why = format!("connect abandoned: {reason}");
                io::Error::new(io::ErrorKind::ConnectionAborted, why)
            });
            self.service.on_connect_failed(ctx, id, error);
        }
    }

    fn run_timers(&mut self) {
        let now = self.core.now;
        while let Some((timer, kind)) = self.core.timers.pop_due(now) {
            match kind {
                TimerKind::Idle(id) => {
                    let Some(conn) = self.core.conns.live_mut(id) else {
                        continue;
                    };
                    let (Some(timeout), true) = (
                        self.core.config.idle_timeout,
                        conn.idle_timer == Some(timer),
                    ) else {
                        continue;
                    };
                    let due = conn.last_active + timeout;
                    if due <= now {
                        conn.idle_timer = None;
                        self.close(id, CloseReason::Idle);
                    } else {
                        conn.idle_timer = Some(self.core.timers.add(due, TimerKind::Idle(id)));
                    }
                }
                TimerKind::Write(id) => {
                    let Some(conn) = self.core.conns.live_mut(id) else {
                        continue;
                    };
                    let (Some(timeout), true) = (
                        self.core.config.write_timeout,
                        conn.write_timer == Some(timer),
                    ) else {
                        continue;
                    };
                    conn.write_timer = None;
                    if conn.output.is_empty() {
                        continue;
                    }
                    let due = conn.last_write + timeout;
                    if due <= now {
                        self.close(id, CloseReason::WriteTimeout);
                    } else {
                        conn.write_timer = Some(self.core.timers.add(due, TimerKind::Write(id)));
                    }
                }
                TimerKind::Frame(id) => self.frame_timer_fired(id),
                TimerKind::Connect(id) => {
                    if self.core.conns.live(id).is_some_and(|c| c.flags.connecting) {
                        let error = io::Error::new(io::ErrorKind::TimedOut, "connect timed out");
                        self.connect_failed(id, error);
                    }
                }
                TimerKind::Service(id, tag) => {
                    if let (Some(state), true) = (
                        self.states.get_mut(id.index()).and_then(Option::as_mut),
                        self.core.conns.live(id).is_some(),
                    ) {
                        let core = &mut self.core;
                        self.service
                            .on_timer(&mut Context::new(core, &self.arena), id, state, tag);
                    }
                }
                TimerKind::ResumeAccept(i) => {
                    if let Some(slot) = self.core.listeners.get_mut(i) {
                        slot.paused = false;
                        self.accept(i);
                    }
                }
                TimerKind::ShutdownDeadline => {
                    let open: Vec<ConnId> = self.live_ids();
                    if !open.is_empty() {
                        warn!("shutdown timeout: closing {} connections", open.len());
                    }
                    for id in open {
                        self.close(id, CloseReason::Shutdown);
                    }
                    self.core.stopped = true;
                }
                TimerKind::StatsReport => {
                    info!("stats: {}", self.core.stats);
                    if let Some(every) = self.core.config.stats_interval {
                        self.core.timers.add(now + every, TimerKind::StatsReport);
                    }
                }
            }
            self.settle();
        }
    }

    /// A frame still incomplete `Config::frame_timeout` after its first
    /// byte closes its connection. The clock restarts while we are the ones
    /// not reading (paused or backpressured).
    fn frame_timer_fired(&mut self, id: ConnId) {
        let now = self.core.now;
        let Some(conn) = self.core.conns.live_mut(id) else {
            return;
        };
        conn.frame_timer = None;
        let (Some(timeout), Some(since)) = (self.core.config.frame_timeout, conn.partial_since)
        else {
            return;
        };
        if !conn.wants_read() {
            conn.partial_since = Some(now);
            self.core.arm_frame_timer(id);
        } else if since + timeout <= now {
            warn!(
                "{id} from {}: frame still incomplete {timeout:?} after its first byte; closing",
                conn.peer
            );
            self.close(id, CloseReason::FrameTimeout);
        } else {
            self.core.arm_frame_timer(id);
        }
    }

    fn live_ids(&self) -> Vec<ConnId> {
        self.core
            .conns
            .iter()
            .filter(|(_, c)| !c.flags.closed)
            .map(|(id, _)| id)
            .collect()
    }

    /// Stops accepting, lets every connection finish with what it had sent
    /// before now, and ends `run` when the last one closes or the shutdown
    /// timeout passes. A second call stops at once.
    pub fn shutdown(&mut self) {
        let core = &mut self.core;
        if core.shutting_down {
            info!("second shutdown request: stopping now");
            core.forced = true;
            core.stopped = true;
            return;
        }
        core.shutting_down = true;
        info!("shutting down: {} connections to finish", core.stats.active);
        for slot in core.listeners.drain(..) {
            if let Err(e) = core.poller.deregister(&slot.listener) {
                warn!("deregister listener: {e}");
            }
        }
        core.timers.add(
            core.now + core.config.shutdown_timeout,
            TimerKind::ShutdownDeadline,
        );
        for id in self.live_ids() {
            let Some(conn) = self.core.conns.live_mut(id) else {
                continue;
            };
            let f = &conn.flags;
            // Connections we opened (a relay's upstreams) end with those
            // they serve; the others may be finishing on their own already.
            if f.outbound || f.read_closed || f.linger || f.close_when_flushed || f.abort.is_some()
            {
                continue;
            }
            match conn.socket.unread_len() {
                Ok(0) | Err(_) => self.end_input(id),
                Ok(unread) => {
                    conn.drain_left = Some(unread);
                    self.core.schedule_read(id);
                }
            }
        }
        if self.core.stats.active == 0 {
            self.core.stopped = true;
        }
    }

    fn on_wake(&mut self) {
        while let Ok(command) = self.core.commands.try_recv() {
            match command {
                Command::Stop => self.core.stopped = true,
                Command::Shutdown => self.shutdown(),
                Command::Stats(reply) => {
                    let _ = reply.send(self.core.stats);
                }
                Command::Connections(reply) => {
                    let _ = reply.send(self.connections());
                }
            }
        }
    }

    fn on_signal(&mut self) {
        loop {
            let next = match &self.core.signals {
                Some(signals) => signals.next(),
                None => return,
            };
            match next {
                Ok(Some(SignalKind::Terminate)) => self.shutdown(),
                Ok(Some(SignalKind::Report)) => {
                    crate::stderr::line(format_args!("{}", format_table(&self.connections())));
                }
                Ok(None) => return,
                Err(e) => {
                    warn!("reading signals: {e}");
                    return;
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
                pending_output: self.core.pending_output(id).unwrap_or(0),
                reading: c.wants_read(),
                state: c.state(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;

    /// Takes every byte and says nothing.
    struct Sink;

    impl Service for Sink {
        type Conn = ();

        fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: SocketAddr) {}

        fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
            input.len()
        }
    }

    #[test]
    fn the_spare_descriptor_comes_back_after_a_turn_that_freed_one() {
        let mut reactor = Reactor::new(Config::default(), Sink).unwrap();
        let addr = reactor
            .listen("127.0.0.1:0".parse().unwrap(), &ListenOptions::default())
            .unwrap();
        // As if taking it back had failed once, when the descriptor freed
        // for shedding went to someone else first.
        reactor.core.spare_fd.release();
        drop(TcpStream::connect(addr).unwrap());
        for _ in 0..100 {
            if reactor.stats().closed == 1 {
                break;
            }
            reactor.turn().unwrap();
        }
        assert_eq!(reactor.stats().closed, 1);
        assert!(reactor.core.spare_fd.is_held());
    }
}
