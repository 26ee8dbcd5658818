//! The end of connections: carrying out what callbacks deferred (flush,
//! FIN, close), closing, timers, and the graceful shutdown.
//!
//! Neither a callback nor a step of the loop closes or sends directly: each
//! records what it wants (output, a FIN, [`State::abort`]), and
//! [`apply`](Reactor::apply) carries it out once it has returned. A closed connection is deregistered at once and
//! reported to its service, but its slot (and so its fd number) stays taken
//! until the turn ends, so no event of the same batch can reach a new owner.

use std::io;

use log::{debug, info, warn};

use super::callback::Callback;
use super::close::CloseReason;
use super::conn::{Phase, Reading, Writing};
use super::kernel::{Kernel, Stage};
use super::service::Service;
use super::state::State;
use super::timer::TimerKind;
use super::token::{ConnId, Token};
use super::trace::trace_io;
use super::{Reactor, accept, output, splice};
use crate::sys::Addr;
use crate::sys::os::{Os, Register, Stream};

impl<S: Service, O: Os> Reactor<S, O> {
    /// Carries out what callbacks deferred: the held reply of the callback
    /// that just returned and its write to another connection, then for each connection with deferred work its
    /// flush, FIN and close.
    pub(super) fn apply(&mut self) {
        if let Some(id) = self.state.replies.serving
            && let Err(e) = output::hold_reply(&mut self.state, &mut self.kernel, &self.arena, id)
        {
            self.close(id, CloseReason::failed(e.kind()));
        }
        if self.state.replies.forward.is_some() {
            output::send_forward(&mut self.state, &mut self.kernel, &self.arena);
        }
        if !self.state.connects.is_empty() {
            accept::start_connects(&mut self.state, &mut self.kernel);
        }
        if !self.state.splices.is_empty() {
            splice::start(&mut self.state, &mut self.kernel);
        }
        while let Some(id) = self.state.deferred.pop() {
            let Some(conn) = self.state.conns.live_mut(id) else {
                continue;
            };
            conn.flags.deferred = false;
            if let Phase::Aborting(reason) = conn.phase {
                self.close(id, reason);
                continue;
            }
            if let Err(e) = output::flush(&mut self.state, &mut self.kernel, &self.arena, id) {
                self.close(id, CloseReason::failed(e.kind()));
                continue;
            }
            if self.state.pending_output(id) == Some(0) {
                finish_flushed(&mut self.state, &mut self.kernel, id);
            }
        }
    }

    /// Deregisters `id` at once and tells the service: `on_close`, or, for a
    /// connect that never completed, `on_connect_failed` (with what went
    /// wrong, if [`State::fail_connect`](super::state::State::fail_connect)
    /// said). The fd closes when the slot is freed at the end of the turn.
    pub(super) fn close(&mut self, id: ConnId, reason: CloseReason) {
        let state = &mut self.state;
        let Some(conn) = state.conns.live_mut(id) else {
            return;
        };
        // A connect whose socket was never made has none to let go of.
        if let Some(socket) = self.kernel.socket(id) {
            if let Err(e) = self.kernel.poller.deregister(socket) {
                warn!("{id}: deregister: {e}");
            }
            if conn.flags.reset
                && let Err(e) = socket.reset_on_close()
            {
                warn!("{id}: SO_LINGER: {e}");
            }
            state.stats.interest_changes += 1;
        }
        // Its timers' entries are skipped when they surface: the id misses.
        conn.phase = Phase::Closed;
        state.stats.buffered_output -= conn.release_buffers();
        state.stats.active -= 1;
        if conn.flags.metrics {
            state.admission.metrics_open -= 1;
        }
        if conn.counted_per_source() {
            let source = state.peer(id).and_then(Addr::ip);
            state.release_source(source);
        }
        state.stats.count_close(reason);
        state.dead.push(id);
        match reason {
            // Nobody else hears of a peer that vanished: no FIN, no RST.
            CloseReason::TcpTimeout => warn!("closed {id} ({}): {reason}", state.peer_label(id)),
            _ => debug!("closed {id} ({}): {reason}", state.peer_label(id)),
        }
        trace_io!(state.config.trace, "{id} close: {reason}");
        let error = state.take_connect_error(id);
        self.call(Callback::Closed(id, reason, error));
    }

    pub(super) fn run_timers(&mut self) {
        let now = self.state.now;
        while let Some(kind) = self.state.timers.pop_due(now) {
            match kind {
                TimerKind::Conn(id, what) => self.state.conn_timer_fired(id, what),
                TimerKind::Service(id, tag) => self.call(Callback::Timer(id, tag)),
                TimerKind::Alarm(tag) => self.call(Callback::Alarm(tag)),
                TimerKind::ResumeAccept(i) => {
                    if self.listeners.resume(i) {
                        self.state.scheduled.push_back(Token::Listener(i));
                    }
                }
                TimerKind::ShutdownDeadline => self.state.shutdown_deadline(),
                TimerKind::RefusalReport => self.state.report_refusals(),
                TimerKind::StatsReport => {
                    info!("stats: {}", self.state.stats);
                    if let Some(every) = self.state.config.stats_interval {
                        self.state.timers.add(now + every, TimerKind::StatsReport);
                    }
                }
            }
            self.apply();
        }
    }

    /// Stops accepting, lets every connection finish with what it had sent
    /// before now, and ends `run` when the last one closes or the shutdown
    /// timeout passes. A second call stops at once.
    ///
    /// The input of every accepted connection ends once it has delivered
    /// what had arrived before now, or if nothing has arrived since it was
    /// accepted, its first read (after its PROXY header and TLS handshake,
    /// if it still owes them). Connections we opened (a relay's
    /// upstreams) end with those they serve.
    pub fn shutdown(&mut self) {
        let state = &mut self.state;
        if state.shutting_down {
            info!("second shutdown request: stopping now");
            state.forced = true;
            state.stopped = true;
            return;
        }
        state.shutting_down = true;
        info!(
            "shutting down: {} connections to finish",
            state.stats.active
        );
        self.listeners.close_all(&self.kernel.poller);
        let deadline = state.now + state.config.shutdown_timeout;
        state.timers.add(deadline, TimerKind::ShutdownDeadline);
        for id in self.state.live_ids() {
            let Some(conn) = self.state.conns.live_mut(id) else {
                continue;
            };
            // A client still owing its PROXY header or in its TLS
            // handshake has its request on the way: once its first steps
            // are done, it is served as one that had sent nothing yet.
            if conn.flags.outbound || conn.phase != Phase::Open || conn.reading != Reading::Open {
                continue;
            }
            let Some(socket) = self.kernel.socket(id) else {
                continue;
            };
            match socket.unread_len() {
                // Accepted, nothing sent yet: under a load of new
                // connections its request is on the way, and a FIN now
                // would fail it.
                Ok(0) if conn.bytes_in == 0 => conn.reading = Reading::AwaitingFirst,
                Ok(0) | Err(_) => {
                    self.state.end_input(id);
                    self.input_ended(id);
                }
                Ok(left) => {
                    // More than 4 GiB unread is not drained to the end.
                    let left = u32::try_from(left).unwrap_or(u32::MAX);
                    conn.reading = Reading::Draining { left };
                    self.state.schedule_read(id);
                }
            }
        }
        self.call(Callback::Shutdown);
        if self.state.stats.active == 0 {
            self.state.stopped = true;
        }
    }
}

/// Everything owed to `id` is out: the FIN and close it waited for.
fn finish_flushed<O: Os>(state: &mut State, kernel: &mut Kernel<O>, id: ConnId) {
    let Some(conn) = state.conns.live_mut(id) else {
        return;
    };
    let (phase, reading, writing) = (conn.phase, conn.reading, conn.writing);
    let Some(handles) = kernel.handles_mut(id) else {
        return;
    };
    // A FIN now would abort a connect in progress: it waits until the
    // connection is up (and `open` defers it again).
    if conn.is_pending() {
        return;
    }
    let ending = phase == Phase::Closing || writing == Writing::FinWhenFlushed;
    // TLS ends with close_notify before the FIN or the close; the FIN
    // waits until the socket has taken it (a writable event comes back).
    if let (true, Some(Stage::Tls(tls))) = (ending, handles.stage.as_deref_mut()) {
        match tls.close(&handles.socket) {
            Ok(()) if tls.has_unsent() => return,
            Ok(()) => {}
            Err(e) => return state.abort(id, failed_ending(reading, e)),
        }
    }
    // Shutting down, the peer may still be sending: FIN first, then read
    // until it closes too, so that unread input does not become RST.
    let fin_then_wait = phase == Phase::Closing && reading == Reading::Discarding;
    if writing != Writing::Finished && (writing == Writing::FinWhenFlushed || fin_then_wait) {
        trace_io!(state.config.trace, "{id} shutdown(write)");
        if let Err(e) = handles.socket.shutdown_write() {
            return state.abort(id, failed_ending(reading, e));
        }
        conn.writing = Writing::Finished;
        if fin_then_wait {
            return state.schedule_read(id);
        }
        if conn.is_done() {
            return state.abort(id, CloseReason::Peer);
        }
    }
    if phase == Phase::Closing && !fin_then_wait {
        let reason = if conn.flags.shut_down {
            CloseReason::Shutdown
        } else if reading == Reading::Ended {
            CloseReason::Peer
        } else {
            CloseReason::Local
        };
        state.abort(id, reason);
    }
}

impl State {
    /// The shutdown timeout: every connection still open is closed now.
    fn shutdown_deadline(&mut self) {
        let open = self.live_ids();
        if !open.is_empty() {
            warn!("shutdown timeout: closing {} connections", open.len());
        }
        for id in open {
            self.abort(id, CloseReason::Shutdown);
        }
        self.stopped = true;
    }
}

/// Why a connection closes whose last words (close_notify, FIN) failed to
/// go. A peer that had already sent its FIN and then closed its socket
/// answers them with RST: it said all it had and wanted nothing more, so
/// that is its own close, not an error.
fn failed_ending(reading: Reading, error: io::Error) -> CloseReason {
    match reading {
        Reading::Ended => CloseReason::Peer,
        _ => CloseReason::failed(error.kind()),
    }
}
