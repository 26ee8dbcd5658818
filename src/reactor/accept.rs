//! New connections: accepted from a listener, or connected by a service,
//! and the moment each one is handed to the service.
//!
//! One accepted past its limit — `Config::max_conns`, or for the metrics
//! listener a small cap of its own, neither counting the other's — is
//! closed at once; the refusals for `max_conns` are logged a line a second
//! at most, each line with how many it stands for.
//!
//! Out of file descriptors, a waiting connection is accepted with a spare
//! descriptor kept for the purpose and closed at once, so the listener's
//! queue drains instead of staying readable and spinning the loop; if even
//! that fails, accepting pauses for a while, backing off.

use std::io;
use std::time::Duration;

use log::{debug, warn};

use super::Reactor;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::Phase;
use super::kernel::{Handles, ListenerSlot, Route};
use super::scrape::MAX_METRICS_CONNS;
use super::service::Service;
use super::timer::TimerKind;
use super::token::{ConnId, Token};
use super::trace::trace_io;
use super::transport::Tls;
use crate::sys::Addr;
use crate::sys::os::{AcceptError, Interest, Listen, Os, Readiness, Register, Spare, Stream};

/// After running out of file descriptors, accepting pauses this long at
/// first, doubling up to the maximum while it keeps failing.
const ACCEPT_BACKOFF_MS: (u64, u64) = (10, 1000);

/// Connections refused for `Config::max_conns` are logged at most this
/// often, each line with how many.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(1);

impl<S: Service, O: Os> Reactor<S, O> {
    /// Registers a bound listener and where its connections go; returns
    /// its address.
    pub(super) fn add_listener(&mut self, listener: O::Listener, route: Route) -> io::Result<Addr> {
        let token = Token::Listener(self.kernel.listeners.len());
        self.kernel
            .poller
            .register(&listener, token.to_u64(), Interest::Readable)?;
        let local = listener.local_addr().clone();
        self.kernel.listeners.push(ListenerSlot {
            listener,
            route,
            scheduled: false,
            paused: false,
            backoff_ms: ACCEPT_BACKOFF_MS.0,
        });
        Ok(local)
    }

    /// Accepts from listener `i` until it has nobody waiting or its per-turn
    /// budget is spent (then it is served again before the next wait).
    pub(super) fn accept(&mut self, i: usize) {
        if self.kernel.listeners.get(i).is_none_or(|slot| slot.paused) {
            return;
        }
        for _ in 0..self.state.config.accept_budget {
            match self.kernel.listeners[i].listener.accept() {
                Ok((socket, peer)) => {
                    let slot = &mut self.kernel.listeners[i];
                    slot.backoff_ms = ACCEPT_BACKOFF_MS.0;
                    let route = slot.route.clone();
                    self.admit(socket, peer, route);
                }
                Err(AcceptError::WouldBlock) => return,
                // The peer gave up while queued: only that connection is lost.
                Err(AcceptError::PeerAborted) => {}
                // The kernel looks for a free descriptor before it looks at
                // the queue, so this comes even when nobody is waiting.
                Err(AcceptError::OutOfDescriptors(e)) => match self.shed(i) {
                    Ok(()) => {}
                    Err(AcceptError::WouldBlock) => return,
                    Err(_) => return self.pause_accept(i, &e),
                },
                Err(AcceptError::Other(e)) => return self.pause_accept(i, &e),
            }
        }
        let slot = &mut self.kernel.listeners[i];
        if !slot.scheduled {
            slot.scheduled = true;
            self.state.scheduled.push_back(Token::Listener(i));
        }
    }

    /// Out of descriptors: frees the spare to accept one waiting connection
    /// and close it at once. `WouldBlock` if nobody was waiting.
    fn shed(&mut self, i: usize) -> Result<(), AcceptError> {
        let (state, kernel) = (&mut self.state, &mut self.kernel);
        if !kernel.spare_fd.release() {
            return Err(AcceptError::Other(io::Error::other("no spare descriptor")));
        }
        // The accepted socket closes at the end of this statement, before the
        // spare is taken back.
        let shed = kernel.listeners[i].listener.accept().map(|(_, peer)| peer);
        kernel.spare_fd.restore();
        if let Ok(peer) = &shed {
            state.stats.accepted += 1;
            state.stats.count_close(CloseReason::Limit);
            let n = state.stats.closed_by(CloseReason::Limit);
            if n.is_power_of_two() {
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
        let slot = &mut self.kernel.listeners[i];
        warn!(
            "accept failed: {err}; pausing accepts for {} ms",
            slot.backoff_ms
        );
        slot.paused = true;
        let at = self.state.now + Duration::from_millis(slot.backoff_ms);
        slot.backoff_ms = (slot.backoff_ms * 2).min(ACCEPT_BACKOFF_MS.1);
        self.state.timers.add(at, TimerKind::ResumeAccept(i));
    }

    /// A new connection: to the service at once, or once its PROXY header
    /// and TLS handshake are done; or to the metrics responder.
    fn admit(&mut self, socket: O::Socket, peer: Addr, route: Route) {
        self.state.stats.accepted += 1;
        if self.refused(&route, &peer) {
            return;
        }
        let state = &mut self.state;
        let (tls, proxied, metrics) = match route {
            Route::Service(tls) => (tls, state.config.proxy_protocol, false),
            Route::Metrics => (None, false, true),
        };
        let phase = if tls.is_some() || proxied {
            Phase::Handshaking {
                close_when_up: false,
            }
        } else {
            Phase::Open
        };
        let id = match self.add_conn(socket, peer.clone(), phase) {
            Ok(id) => id,
            Err(e) => {
                warn!("setting up {peer}: {e}");
                return;
            }
        };
        debug!("accepted {id} from {peer}");
        trace_io!(self.state.config.trace, "{id} accept from {peer}");
        if let Some(conn) = self.state.conns.live_mut(id) {
            conn.flags.awaiting_proxy = proxied;
        }
        if metrics {
            self.admit_metrics(id);
        }
        match tls.map(Tls::server).transpose() {
            Ok(None) if !proxied => self.call(Callback::Connect(id)),
            Ok(tls) => self.start_handshake(id, tls),
            Err(e) => {
                warn!("{id} from {peer}: TLS: {e}");
                self.close(id, CloseReason::Error(e.kind()));
            }
        }
    }

    /// Whether a new connection on `route` finds no room: a metrics one
    /// past the metrics connections' own cap, another past `max_conns`
    /// (metrics ones not counted). One refused is counted and logged.
    fn refused(&mut self, route: &Route, peer: &Addr) -> bool {
        let state = &mut self.state;
        let metrics_open = state.admission.metrics_open;
        let full = match route {
            Route::Metrics => metrics_open >= MAX_METRICS_CONNS,
            Route::Service(_) => {
                state.stats.active as usize - metrics_open >= state.config.max_conns
            }
        };
        if !full {
            return false;
        }
        state.stats.count_close(CloseReason::Limit);
        match route {
            Route::Metrics => {
                state.stats.metrics_refused += 1;
                debug!("rejected {peer}: {MAX_METRICS_CONNS} metrics connections are open");
            }
            Route::Service(_) => self.log_refusal(peer),
        }
        true
    }

    /// A connection refused for `max_conns`: logged at once if none was in
    /// the last second, else summed up in the next line, so that a flood of
    /// refusals costs a line a second.
    fn log_refusal(&mut self, peer: &Addr) {
        let state = &mut self.state;
        let max = state.config.max_conns;
        debug!("rejected {peer}: at the limit of {max} connections");
        if state.admission.reported_at.is_some() {
            state.admission.unreported += 1;
            return;
        }
        warn!(
            "refused 1 connection over --max-conns {max} (from {peer}); \
             more are summed up once a second"
        );
        state.admission.reported_at = Some(state.now);
        let next = state.now + REFUSAL_REPORT_EVERY;
        state.timers.add(next, TimerKind::RefusalReport);
    }

    /// The refusals since the last line, in one line; a second without any
    /// ends the reports until the next refusal.
    pub(super) fn report_refusals(&mut self) {
        let state = &mut self.state;
        let Some(since) = state.admission.reported_at else {
            return;
        };
        let n = std::mem::take(&mut state.admission.unreported);
        if n == 0 {
            state.admission.reported_at = None;
            return;
        }
        let s = if n == 1 { "" } else { "s" };
        let secs = state.now.saturating_duration_since(since).as_secs_f64();
        warn!(
            "refused {n} connection{s} over --max-conns {} in the last {secs:.1}s",
            state.config.max_conns
        );
        state.admission.reported_at = Some(state.now);
        let next = state.now + REFUSAL_REPORT_EVERY;
        state.timers.add(next, TimerKind::RefusalReport);
    }

    /// Books `socket` as a new connection and registers it; on failure the
    /// socket closes and nothing is booked.
    pub(super) fn add_conn(
        &mut self,
        socket: O::Socket,
        peer: Addr,
        phase: Phase,
    ) -> io::Result<ConnId> {
        socket.apply(&self.state.config.socket)?;
        let id = self.state.conns.next_id();
        self.kernel
            .poller
            .register(&socket, Token::Conn(id).to_u64(), Interest::ReadWrite)?;
        self.state.stats.interest_changes += 1;
        self.state.insert(peer, phase);
        self.kernel.attach(id, socket);
        Ok(id)
    }

    /// Makes the sockets of the connects that callbacks asked for; a connect
    /// that fails at once is reported as any failed connect.
    pub(super) fn start_requested_connects(&mut self) {
        for request in std::mem::take(&mut self.state.connects) {
            let id = request.id;
            let wanted = self.state.conns.live(id);
            if !wanted.is_some_and(|c| matches!(c.phase, Phase::Connecting { .. })) {
                continue; // abandoned before it began: its close needs no socket
            }
            let started = O::Socket::connect(&request.addr, request.local).and_then(|socket| {
                socket.apply(&self.state.config.socket)?;
                let token = Token::Conn(id).to_u64();
                self.kernel
                    .poller
                    .register(&socket, token, Interest::ReadWrite)?;
                Ok(socket)
            });
            match started {
                Ok(socket) => {
                    self.state.stats.interest_changes += 1;
                    self.kernel.attach(id, socket);
                    if let (Some(tls), Some(handles)) = (request.tls, self.kernel.handles_mut(id)) {
                        handles.set_tls(tls);
                    }
                }
                Err(e) => self.state.fail_connect(id, e),
            }
        }
    }

    /// Completes or fails an outgoing connect; true once it is up.
    pub(super) fn finish_connect(&mut self, id: ConnId, event: &impl Readiness) -> bool {
        let (Some(conn), Some(socket)) = (self.state.conns.live_mut(id), self.kernel.socket(id))
        else {
            return false;
        };
        let Phase::Connecting { close_when_up } = conn.phase else {
            return true;
        };
        if !(event.is_writable() || event.is_error() || event.is_read_closed()) {
            return false;
        }
        if let Some(error) = socket.take_error() {
            self.state.fail_connect(id, error);
            self.apply();
            return false;
        }
        let tls = self.kernel.handles_mut(id).and_then(Handles::take_tls);
        if tls.is_none() {
            // With TLS, once its handshake is done.
            self.state.stats.connected += 1;
        }
        conn.phase = match (&tls, close_when_up) {
            (Some(_), _) => Phase::Handshaking { close_when_up },
            (None, true) => Phase::Closing,
            (None, false) => Phase::Open,
        };
        let Some(peer) = self.state.peer(id).cloned() else {
            return false;
        };
        trace_io!(self.state.config.trace, "{id} connected to {peer}");
        if let Some(tls) = tls {
            self.start_handshake(id, Some(tls));
            return false;
        }
        self.call(Callback::Connect(id));
        true
    }

}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use super::*;
    use crate::reactor::{Config, Context, ListenOptions};

    /// Takes every byte and says nothing.
    struct Sink;

    impl Service for Sink {
        type Conn = ();

        fn on_connect(&mut self, _: &mut Context<'_>, _: ConnId, _: &Addr) {}

        fn on_data(&mut self, _: &mut Context<'_>, _: ConnId, _: &mut (), input: &[u8]) -> usize {
            input.len()
        }
    }

    #[test]
    fn the_spare_descriptor_comes_back_after_a_turn_that_freed_one() {
        let mut reactor = Reactor::new(Config::default(), Sink).unwrap();
        let addr = reactor
            .listen(&"127.0.0.1:0".parse().unwrap(), &ListenOptions::default())
            .unwrap()
            .ip()
            .unwrap();
        // As if taking it back had failed once, when the descriptor freed
        // for shedding went to someone else first.
        reactor.kernel.spare_fd.release();
        drop(TcpStream::connect(addr).unwrap());
        for _ in 0..100 {
            if reactor.stats().closed == 1 {
                break;
            }
            reactor.turn().unwrap();
        }
        assert_eq!(reactor.stats().closed, 1);
        assert!(reactor.kernel.spare_fd.is_held());
    }
}
