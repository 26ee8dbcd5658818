//! The reactor's state apart from its service: the poller, listeners,
//! connections, timers and counters. A [`Context`](super::Context) lends it
//! to the service during a callback; what the service asks for is recorded
//! here and carried out when the callback returns.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::Instant;

use super::close::CloseReason;
use super::config::Config;
use super::conn::{Connection, Phase};
use super::handle::Command;
use super::reply::Replies;
use super::stats::Stats;
use super::timer::{TimerKind, Timers};
use super::token::{ConnId, Table, Token};
use super::trace::trace_io;
use crate::sys::{Addr, Interest, Listener, Poller, Signals, Socket, SpareFd};

pub(crate) struct ListenerSlot {
    pub(crate) listener: Listener,
    /// On the list of work to do before the next wait (its budget ran out).
    pub(crate) scheduled: bool,
    /// Out of descriptors: not accepting until a timer says to try again.
    pub(crate) paused: bool,
    pub(crate) backoff_ms: u64,
}

pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) poller: Poller,
    pub(crate) signals: Option<Signals>,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) command_tx: mpsc::Sender<Command>,
    pub(crate) listeners: Vec<ListenerSlot>,
    pub(crate) spare_fd: SpareFd,
    pub(crate) conns: Table<Connection>,
    pub(crate) replies: Replies,
    /// Connections with deferred work: output to flush, a FIN or a close to
    /// carry out once a callback has returned.
    pub(crate) deferred: Vec<ConnId>,
    /// Connections and listeners to serve before the next wait: their
    /// budget ran out, or they may hold data whose edge was reported while
    /// they were not being read.
    pub(crate) scheduled: VecDeque<Token>,
    /// Closed during this turn; their slots are freed after it.
    pub(crate) dead: Vec<ConnId>,
    pub(crate) timers: Timers,
    /// Read once per turn: precise enough for timeouts, and free for traffic.
    pub(crate) now: Instant,
    pub(crate) stats: Stats,
    pub(crate) shutting_down: bool,
    /// A second shutdown request came: stop without draining.
    pub(crate) forced: bool,
    pub(crate) stopped: bool,
}

impl State {
    pub(crate) fn new(config: Config, poller: Poller) -> State {
        let (command_tx, commands) = mpsc::channel();
        let now = Instant::now();
        let mut timers = Timers::default();
        if let Some(every) = config.stats_interval {
            timers.add(now + every, TimerKind::StatsReport);
        }
        State {
            config,
            poller,
            signals: None,
            commands,
            command_tx,
            listeners: Vec::new(),
            spare_fd: SpareFd::new(),
            conns: Table::new(),
            replies: Replies::default(),
            deferred: Vec::new(),
            scheduled: VecDeque::new(),
            dead: Vec::new(),
            timers,
            now,
            stats: Stats::default(),
            shutting_down: false,
            forced: false,
            stopped: false,
        }
    }

    /// Records that `id` has work to carry out once the callback returns.
    pub(crate) fn defer(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.deferred
        {
            conn.flags.deferred = true;
            self.deferred.push(id);
        }
    }

    /// Queues a read of `id` before the next wait: it may have data whose
    /// edge was reported while we were not reading.
    pub(crate) fn schedule_read(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id)
            && !conn.flags.scheduled
        {
            conn.flags.scheduled = true;
            self.scheduled.push_back(Token::Conn(id));
        }
    }

    /// Registers a new connection (accepted, or connecting) under a fresh id.
    pub(crate) fn add(&mut self, socket: Socket, peer: Addr, phase: Phase) -> io::Result<ConnId> {
        socket.apply(&self.config.socket)?;
        let id = self.conns.next_id();
        self.poller
            .register(&socket, Token::Conn(id).to_u64(), Interest::ReadWrite)?;
        self.stats.interest_changes += 1;
        let mut conn = Connection::new(socket, peer, phase, self.now);
        conn.flags.outbound = matches!(phase, Phase::Connecting { .. });
        conn.idle_timer = self
            .config
            .idle_timeout
            .map(|t| self.timers.add(self.now + t, TimerKind::Idle(id)));
        self.conns.insert(conn);
        self.stats.active += 1;
        Ok(id)
    }

    /// Starts connecting to `addr`; the service hears `on_connect` once the
    /// connection is up, or `on_connect_failed`.
    pub(crate) fn connect(&mut self, addr: &Addr, local: Option<SocketAddr>) -> io::Result<ConnId> {
        let connecting = Phase::Connecting {
            close_when_up: false,
        };
        let id = self.add(Socket::connect(addr, local)?, addr.clone(), connecting)?;
        self.timers.add(
            self.now + self.config.connect_timeout,
            TimerKind::Connect(id),
        );
        trace_io!(self.config.trace, "{id} connect to {addr}");
        Ok(id)
    }

    /// Bytes owed to `id`: its held reply and output buffer, plus what its
    /// splice peer has read into the pipe towards it.
    pub(crate) fn pending_output(&self, id: ConnId) -> Option<usize> {
        let conn = self.conns.live(id)?;
        if let Some(i) = conn.held_reply {
            return Some(self.replies.held[i].len());
        }
        if let Some(splice) = &conn.splice {
            let piped = self.conns.live(splice.peer).and_then(|p| p.splice.as_ref());
            return Some(conn.output.len() + piped.map_or(0, |s| s.pipe.len()));
        }
        Some(conn.output.len())
    }

    /// The service consumed `used` bytes of an input of which `left_before`
    /// were left from earlier calls: a partial message that remains started
    /// now, unless it is the one left before (then its clock runs on).
    pub(crate) fn track_partial(&mut self, id: ConnId, left_before: usize, used: usize) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        if conn.input.is_empty() {
            conn.partial_since = None;
        } else if used >= left_before || conn.partial_since.is_none() {
            conn.partial_since = Some(self.now);
            if conn.frame_timer.is_none() {
                self.arm_frame_timer(id);
            }
        }
    }

    /// One frame timer per connection, set for when its partial message is
    /// due; a message completed meanwhile leaves it to find nothing to do.
    pub(crate) fn arm_frame_timer(&mut self, id: ConnId) {
        let Some(timeout) = self.config.frame_timeout else {
            return;
        };
        if let Some(conn) = self.conns.live_mut(id)
            && let Some(since) = conn.partial_since
        {
            conn.frame_timer = Some(self.timers.add(since + timeout, TimerKind::Frame(id)));
        }
    }

    /// Closes `id` once everything queued for it is flushed.
    pub(crate) fn close_when_flushed(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.phase = match conn.phase {
                Phase::Connecting { .. } => Phase::Connecting {
                    close_when_up: true,
                },
                Phase::Open => Phase::Closing,
                other => other,
            };
            self.defer(id);
        }
    }

    /// Closes `id` once the callback returns, discarding what it has not sent.
    pub(crate) fn abort(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.phase = Phase::Aborting(reason);
            self.defer(id);
        }
    }

    /// As [`abort`](Self::abort), and the close sends RST.
    pub(crate) fn reset(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.flags.reset = true;
        }
        self.abort(id, reason);
    }
}
