//! A connection's own deadlines, when they come: idle, write, frame,
//! handshake, connect and a metrics request. Each is decided from the
//! connection's books alone, so they are [`State`]'s: a deadline that has
//! really passed ends the connection with [`State::abort`] (the
//! coordinator closes it and tells the service), and one that has moved
//! since it was set sets itself again for the real one. Traffic never
//! touches a timer: it only stamps the connection.

use std::io;

use log::warn;

use super::close::CloseReason;
use super::conn::{Phase, ProxyStep};
use super::scrape::METRICS_DEADLINE;
use super::state::State;
use super::timer::ConnTimer;
use super::token::ConnId;

impl State {
    /// `id`'s deadline `what` is due.
    pub(crate) fn conn_timer_fired(&mut self, id: ConnId, what: ConnTimer) {
        match what {
            ConnTimer::Idle => self.idle_timer_fired(id),
            ConnTimer::Write => self.write_timer_fired(id),
            ConnTimer::Frame => self.frame_timer_fired(id),
            ConnTimer::Handshake => self.handshake_timer_fired(id),
            ConnTimer::Request => self.metrics_deadline_fired(id),
            ConnTimer::Connect => self.connect_timer_fired(id),
        }
    }

    /// The idle timer (one entry per connection, for its whole life) checks
    /// the last activity, and either closes the connection or sets itself
    /// again for the real deadline. A handshake has its own timeout,
    /// however long: until it is done, this timer only looks again later,
    /// so a stalled one closes as `handshake-timeout`.
    fn idle_timer_fired(&mut self, id: ConnId) {
        let now = self.stamp;
        let (Some(conn), Some(timeout)) = (self.conns.live_mut(id), self.config.idle_timeout)
        else {
            return;
        };
        let due = match conn.phase {
            Phase::Handshaking { .. } => now.after(timeout),
            _ => conn.last_active.after(timeout),
        };
        if due <= now {
            self.abort(id, CloseReason::Idle);
        } else {
            self.add_conn_timer(due, id, ConnTimer::Idle);
        }
    }

    /// The peer had until now to take everything that was owed to it when
    /// the timer was set: taking a byte now and then does not renew it.
    /// What was queued since is owed by the next deadline.
    fn write_timer_fired(&mut self, id: ConnId) {
        let owed = self.owed(id);
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        conn.flags.write_timer = false;
        if owed == 0 {
            return;
        }
        if conn.bytes_out < conn.drain_target() {
            self.abort(id, CloseReason::WriteTimeout);
        } else {
            self.arm_write_timer(id);
        }
    }

    /// Starts `id`'s write timer unless it runs already: what it is owed
    /// now must be taken by the deadline.
    pub(crate) fn arm_write_timer(&mut self, id: ConnId) {
        let Some(timeout) = self.config.write_timeout else {
            return;
        };
        if self.conns.live(id).is_none_or(|c| c.flags.write_timer) {
            return;
        }
        let owed = self.owed(id);
        let at = self.stamp.after(timeout);
        let Some(conn) = self.conns.live_mut(id).filter(|_| owed > 0) else {
            return;
        };
        conn.flags.write_timer = true;
        conn.owe_by_deadline(owed);
        self.add_conn_timer(at, id, ConnTimer::Write);
    }

    /// What `id`'s peer has yet to take: its output, and what waits for
    /// it in the pipe of the connection spliced into it.
    fn owed(&self, id: ConnId) -> usize {
        let Some(conn) = self.conns.live(id) else {
            return 0;
        };
        let piped = conn
            .spliced_to()
            .and_then(|src| self.conns.live(src))
            .filter(|src| src.spliced_to() == Some(id))
            .map_or(0, |src| src.piped());
        conn.output().len() + piped
    }

    /// A frame still incomplete `Config::frame_timeout` after its first
    /// byte closes its connection. The clock restarts while we are the ones
    /// not reading (paused or backpressured).
    fn frame_timer_fired(&mut self, id: ConnId) {
        let now = self.stamp;
        let Some(conn) = self.conns.live_mut(id) else {
            return;
        };
        conn.flags.frame_timer = false;
        let (Some(timeout), Some(since)) = (self.config.frame_timeout, conn.partial_since()) else {
            return;
        };
        if !conn.wants_read() {
            conn.set_partial_since(Some(now));
            self.arm_frame_timer(id);
        } else if since.after(timeout) <= now {
            warn!(
                "{id} {}: frame still incomplete {timeout:?} after its first byte; closing",
                self.peer_label(id)
            );
            self.abort(id, CloseReason::FrameTimeout);
        } else {
            self.arm_frame_timer(id);
        }
    }

    /// The handshake timeout: a client that stalls before it is up is closed.
    fn handshake_timer_fired(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live(id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Handshaking { .. }) {
            return;
        }
        let step = if conn.flags.proxy == ProxyStep::Awaiting {
            "PROXY header"
        } else {
            "TLS handshake"
        };
        warn!(
            "{id} {}: no {step} within {:?}; closing",
            self.peer_label(id),
            self.config.handshake_timeout
        );
        self.count_handshake_failure(id);
        self.abort(id, CloseReason::HandshakeTimeout);
    }

    /// A metrics connection's deadline: one still without its whole request
    /// head is closed and counted; one answered had its time to take the
    /// answer and go.
    fn metrics_deadline_fired(&mut self, id: ConnId) {
        let Some(conn) = self.conns.live(id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return self.abort(id, CloseReason::Local);
        }
        self.stats.metrics_timeouts += 1;
        warn!(
            "{id} {}: no whole request head within {METRICS_DEADLINE:?}; closing",
            self.peer_label(id)
        );
        self.abort(id, CloseReason::FrameTimeout);
    }

    /// A connect not up within the connect timeout fails: still
    /// connecting, or still in its TLS handshake.
    fn connect_timer_fired(&mut self, id: ConnId) {
        let why = match self.conns.live(id).map(|c| c.phase) {
            Some(Phase::Connecting { .. }) => "connect timed out".to_string(),
            Some(Phase::Handshaking { .. }) => {
                self.count_handshake_failure(id);
                format!(
                    "TLS handshake timed out: not done within the connect timeout of {:?}",
                    self.config.connect_timeout
                )
            }
            _ => return,
        };
        self.fail_connect(id, io::Error::new(io::ErrorKind::TimedOut, why));
    }

    /// Counts a failed first step as a PROXY or a TLS failure, whichever
    /// step it was.
    pub(crate) fn count_handshake_failure(&mut self, id: ConnId) {
        match self.conns.live(id) {
            Some(conn) if conn.flags.proxy == ProxyStep::Awaiting => self.stats.proxy_failures += 1,
            Some(_) => self.stats.tls_failures += 1,
            None => {}
        }
    }
}
