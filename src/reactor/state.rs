//! The reactor's books apart from its service and the OS: connections,
//! timers, counters, replies on their way out. A [`Context`](super::Context)
//! lends it to the service during a callback; what the service asks for is
//! recorded here and carried out when the callback returns — even a
//! connect or a splice, which need the OS.

use std::collections::VecDeque;
use std::fmt;
use std::io;

use std::net::SocketAddr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::close::CloseReason;
use super::config::Config;
use super::conn::{About, Connection, Phase};
use super::handle::Command;
use super::reply::Replies;
use super::sources::{Refusal, Sources};
use super::stats::{ConnInfo, Stats};
use super::timer::{ConnTimer, Stamp, TimerKind, Timers};
use super::tls::Tls;
use super::token::{ConnId, Table, Token};
use super::trace::trace_io;
use crate::sys::Addr;

/// A connect a service asked for, to make once its callback has returned.
pub(crate) struct ConnectRequest {
    pub(crate) id: ConnId,
    pub(crate) addr: Addr,
    pub(crate) local: Option<SocketAddr>,
    /// TLS to start once it is connected.
    pub(crate) tls: Option<Tls>,
}

/// What new connections are admitted against beside `Config::max_conns`,
/// and what is owed to the log about those refused.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Metrics connections open: a budget of their own, not counted against
    /// `max_conns`.
    pub(crate) metrics_open: usize,
    /// Connections refused since the last line about them, by what for
    /// ([`Over::slot`]).
    pub(crate) unreported: [u64; Over::COUNT],
    /// When that line was written, while its report timer is set.
    pub(crate) reported_at: Option<Instant>,
}

/// What a new connection was refused for, as the refusal lines say.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Over {
    MaxConns,
    Source(Refusal),
}

impl Over {
    pub(crate) const COUNT: usize = 4;

    pub(crate) const ALL: [Over; Over::COUNT] = [
        Over::MaxConns,
        Over::Source(Refusal::Conns),
        Over::Source(Refusal::Rate),
        Over::Source(Refusal::TableFull),
    ];

    pub(crate) fn slot(self) -> usize {
        match self {
            Over::MaxConns => 0,
            Over::Source(Refusal::Conns) => 1,
            Over::Source(Refusal::Rate) => 2,
            Over::Source(Refusal::TableFull) => 3,
        }
    }

    /// `over --max-conns 10`, and so on.
    pub(crate) fn describe(self, config: &Config) -> String {
        let limits = config.per_source.as_ref().map(Sources::limits);
        let (max, rate, capacity) =
            limits.map_or((None, None, 0), |l| (l.max_conns, l.rate, l.capacity));
        let shown = |n: Option<u32>| n.map_or("-".to_string(), |n| n.to_string());
        match self {
            Over::MaxConns => format!("over --max-conns {}", config.max_conns),
            Over::Source(Refusal::Conns) => {
                format!("over --max-conns-per-source {}", shown(max))
            }
            Over::Source(Refusal::Rate) => {
                format!("over --conn-rate-per-source {}/s", shown(rate))
            }
            Over::Source(Refusal::TableFull) => format!(
                "from a new source: all {capacity} sources of the per-source table have connections open"
            ),
        }
    }
}

/// What the warning about connections paused for the output budget
/// (`budget.rs`) has not said yet: it is said at most once in a while.
#[derive(Debug, Default)]
pub(crate) struct PauseWarning {
    quiet_until: Stamp,
    unreported: u64,
}

impl PauseWarning {
    /// Counts one more pause. When the warning is due, returns how many
    /// pauses before this one it has not told of, and keeps quiet for
    /// `every` from `now`.
    pub(crate) fn due(&mut self, now: Stamp, every: Duration) -> Option<u64> {
        self.unreported += 1;
        if now < self.quiet_until {
            return None;
        }
        let untold = self.unreported - 1;
        *self = PauseWarning {
            quiet_until: now.after(every),
            unreported: 0,
        };
        Some(untold)
    }
}

pub(crate) struct State {
    pub(crate) config: Config,
    /// The OS's clock.
    pub(crate) clock: fn() -> Instant,
    pub(crate) commands: mpsc::Receiver<Command>,
    pub(crate) command_tx: mpsc::Sender<Command>,
    pub(crate) conns: Table<Connection>,
    /// Each connection's [`About`], by slot: what only setup and the
    /// connection table read.
    about: Vec<Option<About>>,
    /// Connects and splices asked for during a callback, not made yet.
    pub(crate) connects: Vec<ConnectRequest>,
    pub(crate) splices: Vec<(ConnId, ConnId)>,
    /// Why connects failed, for their `on_connect_failed`: kept from the
    /// failure until the close that reports it.
    connect_errors: Vec<(ConnId, io::Error)>,
    /// Whether the OS can splice at all.
    pub(crate) splice_supported: bool,
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
    /// Connections whose service asked to hear when their backlog drains
    /// ([`Context::watch_drain`](super::Context::watch_drain)), and those
    /// that have, to report at the end of the turn.
    pub(crate) drain_watch: Vec<ConnId>,
    pub(crate) drained: Vec<ConnId>,
    pub(crate) timers: Timers,
    /// Read once per turn: precise enough for timeouts, and free for traffic.
    pub(crate) now: Instant,
    /// `now` as a connection keeps it.
    pub(crate) stamp: Stamp,
    pub(crate) stats: Stats,
    pub(crate) admission: Admission,
    /// What the warning about connections paused for the output budget
    /// has yet to say.
    pub(crate) pause_warning: PauseWarning,
    pub(crate) shutting_down: bool,
    /// A second shutdown request came: stop without draining.
    pub(crate) forced: bool,
    pub(crate) stopped: bool,
}

impl State {
    pub(crate) fn new(config: Config, clock: fn() -> Instant, splice_supported: bool) -> State {
        let (command_tx, commands) = mpsc::channel();
        let now = clock();
        let mut timers = Timers::new(now);
        if let Some(every) = config.stats_interval {
            timers.add(now + every, TimerKind::StatsReport);
        }
        State {
            config,
            clock,
            commands,
            command_tx,
            conns: Table::new(),
            about: Vec::new(),
            connects: Vec::new(),
            splices: Vec::new(),
            connect_errors: Vec::new(),
            splice_supported,
            replies: Replies::default(),
            deferred: Vec::new(),
            scheduled: VecDeque::new(),
            dead: Vec::new(),
            drain_watch: Vec::new(),
            drained: Vec::new(),
            stamp: timers.stamp(now),
            timers,
            now,
            stats: Stats::default(),
            admission: Admission::default(),
            pause_warning: PauseWarning::default(),
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

    /// `id`'s turn on the list of reads before the next wait came: true if
    /// it is still there to read.
    pub(crate) fn take_turn(&mut self, id: ConnId) -> bool {
        let Some(conn) = self.conns.live_mut(id) else {
            return false;
        };
        conn.flags.scheduled = false;
        true
    }

    /// The time of this turn, read once per turn.
    pub(crate) fn set_now(&mut self, now: Instant) {
        self.now = now;
        self.stamp = self.timers.stamp(now);
    }

    /// Books a new connection (accepted, or connecting) under a fresh id;
    /// its socket is the caller's to attach.
    pub(crate) fn insert(&mut self, peer: Addr, phase: Phase) -> ConnId {
        let id = self.conns.next_id();
        let mut conn = Connection::new(phase, self.stamp);
        conn.flags.outbound = matches!(phase, Phase::Connecting { .. });
        self.conns.insert(conn);
        if self.about.len() <= id.index() {
            self.about.resize_with(id.index() + 1, || None);
        }
        self.about[id.index()] = Some(About {
            peer,
            opened: self.stamp,
        });
        if let Some(timeout) = self.config.idle_timeout {
            self.add_conn_timer(self.stamp.after(timeout), id, ConnTimer::Idle);
        }
        self.stats.active += 1;
        id
    }

    /// Frees `id`'s slot, at the end of the turn in which it closed.
    pub(crate) fn remove(&mut self, id: ConnId) {
        if self.conns.remove(id).is_some()
            && let Some(about) = self.about.get_mut(id.index())
        {
            *about = None;
        }
    }

    /// `id`'s peer and age, while its slot is taken (still in `on_close`).
    pub(crate) fn about(&self, id: ConnId) -> Option<&About> {
        self.conns.get(id)?;
        self.about.get(id.index())?.as_ref()
    }

    pub(crate) fn peer(&self, id: ConnId) -> Option<&Addr> {
        self.about(id).map(|a| &a.peer)
    }

    /// Makes `peer` the peer of `id` (the client a PROXY header names);
    /// the one it replaces.
    pub(crate) fn set_peer(&mut self, id: ConnId, peer: Addr) -> Option<Addr> {
        self.conns.get(id)?;
        let about = self.about.get_mut(id.index())?.as_mut()?;
        Some(std::mem::replace(&mut about.peer, peer))
    }

    /// `id`'s peer for a log line: `from ADDR` for a connection we
    /// accepted, `to ADDR` for one we opened (`?` once its slot is free);
    /// a client a PROXY header named comes with the balancer it came
    /// through (`from 1.3.3.7:31337 via 10.0.0.5:41000`), then `as "NAME"`
    /// for a client whose certificate named it.
    pub(crate) fn peer_label(&self, id: ConnId) -> impl fmt::Display + '_ {
        struct Label<'a> {
            direction: &'static str,
            peer: Option<&'a Addr>,
            via: Option<&'a Addr>,
            identity: Option<&'a str>,
        }
        impl fmt::Display for Label<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let Some(peer) = self.peer else {
                    return f.write_str("?");
                };
                write!(f, "{} {peer}", self.direction)?;
                if let Some(via) = self.via {
                    write!(f, " via {via}")?;
                }
                match self.identity {
                    Some(identity) => write!(f, " as {identity:?}"),
                    None => Ok(()),
                }
            }
        }
        let conn = self.conns.get(id);
        let outbound = conn.is_some_and(|c| c.flags.outbound);
        Label {
            direction: if outbound { "to" } else { "from" },
            peer: self.peer(id),
            via: conn.and_then(Connection::via),
            identity: conn.and_then(Connection::identity),
        }
    }

    /// Sets `id`'s timer `what` for `at`.
    pub(crate) fn add_conn_timer(&mut self, at: Stamp, id: ConnId, what: ConnTimer) {
        let conns = &self.conns;
        self.timers
            .add_conn(at, id, what, |id| conns.get(id).is_some());
    }

    /// Books an outgoing connection to `addr`; the socket is made once the
    /// callback that asked has returned. The service hears `on_connect` once
    /// the connection is up, or `on_connect_failed`.
    pub(crate) fn request_connect(
        &mut self,
        addr: &Addr,
        local: Option<SocketAddr>,
        tls: Option<Tls>,
    ) -> ConnId {
        let connecting = Phase::Connecting {
            close_when_up: false,
        };
        let id = self.insert(addr.clone(), connecting);
        self.connect_started(id, addr);
        self.connects.push(ConnectRequest {
            id,
            addr: addr.clone(),
            local,
            tls,
        });
        id
    }

    /// A connect to `addr` is under way for `id`: it must be up in time.
    pub(crate) fn connect_started(&mut self, id: ConnId, addr: &Addr) {
        let due = self.stamp.after(self.config.connect_timeout);
        self.add_conn_timer(due, id, ConnTimer::Connect);
        trace_io!(self.config.trace, "{id} connect to {addr}");
    }

    /// What the clock says now (not the turn's start).
    pub(crate) fn clock_now(&self) -> Instant {
        (self.clock)()
    }

    /// How long from now until `at`.
    pub(crate) fn until(&self, at: Instant) -> Duration {
        at.saturating_duration_since(self.clock_now())
    }

    /// The peer whose input goes into `id` by splice(2), if one does.
    pub(crate) fn spliced_from(&self, id: ConnId) -> Option<ConnId> {
        self.splicing_into(id, self.conns.live(id)?)
            .map(|(feeder, _)| feeder)
    }

    /// `conn`'s feeder (it is `id`), with its books, if it splices into it.
    fn splicing_into(&self, id: ConnId, conn: &Connection) -> Option<(ConnId, &Connection)> {
        let feeder = conn.fed_by?;
        let peer = self.conns.live(feeder)?;
        (peer.spliced_to() == Some(id)).then_some((feeder, peer))
    }

    /// Bytes owed to `id`: its held reply and output buffer, a write to it
    /// not yet sent from the arena, plus what the peer splicing to it has read
    /// into the pipe towards it.
    pub(crate) fn pending_output(&self, id: ConnId) -> Option<usize> {
        let conn = self.conns.live(id)?;
        if let Some(i) = conn.held_reply {
            return Some(self.replies.held[i as usize].len());
        }
        let piped = self
            .splicing_into(id, conn)
            .map_or(0, |(_, peer)| peer.piped());
        let forward = match &self.replies.forward {
            Some((to, range)) if *to == id => range.len(),
            _ => 0,
        };
        Some(conn.output().len() + piped + forward)
    }

    /// The service consumed `used` bytes of an input of which `left_before`
    /// were left from earlier calls: a partial message that remains started
    /// now, unless it is the one left before (then its clock runs on).
    pub(crate) fn track_partial(&mut self, id: ConnId, left_before: usize, used: usize) {
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        if conn.input().is_empty() {
            conn.set_partial_since(None);
        } else if used >= left_before || conn.partial_since().is_none() {
            conn.set_partial_since(Some(self.stamp));
            if !conn.flags.frame_timer {
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
            && let Some(since) = conn.partial_since()
        {
            conn.flags.frame_timer = true;
            self.add_conn_timer(since.after(timeout), id, ConnTimer::Frame);
        }
    }

    /// Every connection not closed yet.
    pub(crate) fn live_ids(&self) -> Vec<ConnId> {
        (self.conns.iter())
            .filter(|(_, c)| c.phase != Phase::Closed)
            .map(|(id, _)| id)
            .collect()
    }

    /// A snapshot of every open connection, for the connection table.
    pub(crate) fn snapshot(&self) -> Vec<ConnInfo> {
        let now = self.clock_now();
        (self.conns.iter())
            .filter(|(_, c)| c.phase != Phase::Closed)
            .filter_map(|(id, c)| Some((id, c, self.about(id)?)))
            .map(|(id, c, about)| ConnInfo {
                id,
                peer: about.peer.clone(),
                age: now.saturating_duration_since(self.timers.instant(about.opened)),
                bytes_in: c.bytes_in,
                bytes_out: c.bytes_out,
                pending_output: self.pending_output(id).unwrap_or(0),
                reading: c.wants_read(),
                state: c.state(),
                tls: c.tls().map(str::to_string),
                identity: c.identity().map(str::to_string),
            })
            .collect()
    }

    /// Closes `id` once everything queued for it is flushed.
    pub(crate) fn close_when_flushed(&mut self, id: ConnId) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.phase = match conn.phase {
                Phase::Connecting { .. } => Phase::Connecting {
                    close_when_up: true,
                },
                Phase::Handshaking { .. } => Phase::Handshaking {
                    close_when_up: true,
                },
                Phase::Open => Phase::Closing,
                other => other,
            };
            self.defer(id);
        }
    }

    /// Closes `id` once the callback (or the step of the loop) that asked
    /// returns, discarding what it has not sent. The first reason given
    /// is the one it closes with. This is how every part of the reactor
    /// ends a connection: it says so here, and the coordinator's `apply`
    /// closes it and tells the service.
    pub(crate) fn abort(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id)
            && !matches!(conn.phase, Phase::Aborting(_))
        {
            conn.phase = Phase::Aborting(reason);
            self.defer(id);
        }
    }

    /// A connect (or its TLS handshake) failed: `id` ends as
    /// [`abort`](Self::abort) does, and its service hears `error` in
    /// `on_connect_failed`.
    pub(crate) fn fail_connect(&mut self, id: ConnId, error: io::Error) {
        self.stats.connect_failed += 1;
        trace_io!(self.config.trace, "{id} connect failed: {error}");
        self.abort(id, CloseReason::Error(error.kind()));
        self.connect_errors.push((id, error));
    }

    /// Why `id`'s connect failed, if [`fail_connect`](Self::fail_connect) said.
    pub(crate) fn take_connect_error(&mut self, id: ConnId) -> Option<io::Error> {
        let i = self.connect_errors.iter().position(|(c, _)| *c == id)?;
        Some(self.connect_errors.swap_remove(i).1)
    }

    /// As [`abort`](Self::abort), and the close sends RST.
    pub(crate) fn reset(&mut self, id: ConnId, reason: CloseReason) {
        if let Some(conn) = self.conns.live_mut(id) {
            conn.flags.reset = true;
        }
        self.abort(id, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_warning_is_due_once_a_while_and_tells_of_the_pauses_between() {
        let (every, second) = (Duration::from_secs(5), Duration::from_secs(1));
        let start = Stamp::default();
        let mut warning = PauseWarning::default();
        assert_eq!(warning.due(start, every), Some(0));
        assert_eq!(warning.due(start.after(second), every), None);
        assert_eq!(warning.due(start.after(4 * second), every), None);
        assert_eq!(warning.due(start.after(every), every), Some(2));
        assert_eq!(warning.due(start.after(every), every), None);
    }
}
