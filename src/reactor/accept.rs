//! New connections, accepted or connected, up to the moment the service
//! hears of them (or, for a handshake first, `handshake.rs` takes over).
//!
//! The coordinator's [`Reactor::accept`] takes connections from
//! [`Listeners`](super::listeners::Listeners) and hands each to [`admit`];
//! the rest are functions of the books ([`State`]) and the sockets
//! ([`Kernel`]) that the coordinator calls: they say what became of a
//! connection, and never call the service.
//!
//! One accepted past its limit — `Config::max_conns`, or for the metrics
//! listener a small cap of its own, neither counting the other's — is
//! closed at once; the refusals for `max_conns` are logged a line a second
//! at most, each line with how many it stands for.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{debug, warn};

use super::Reactor;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::Phase;
use super::kernel::{Handles, Kernel};
use super::listeners::{Accepted, Serve};
use super::scrape::MAX_METRICS_CONNS;
use super::service::Service;
use super::state::State;
use super::timer::{ConnTimer, TimerKind};
use super::tls::Tls;
use super::token::{ConnId, Token};
use super::trace::trace_io;
use crate::sys::Addr;
use crate::sys::os::{Interest, Os, Readiness, Register, Stream};

/// Connections refused for `Config::max_conns` are logged at most this
/// often, each line with how many.
const REFUSAL_REPORT_EVERY: Duration = Duration::from_secs(1);

/// What a connection does first, once booked.
pub(super) enum First {
    /// It is up: the service hears of it now.
    Open,
    /// Its PROXY header and/or TLS handshake come first (`handshake.rs`).
    Handshake,
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// Accepts from listener `i` until it has nobody waiting or its per-turn
    /// budget is spent (then it is served again before the next wait).
    pub(super) fn accept(&mut self, i: usize) {
        for _ in 0..self.state.config.accept_budget {
            let state = &mut self.state;
            match self
                .listeners
                .accept(i, &mut state.stats, &mut state.timers, state.now)
            {
                Accepted::Conn(socket, peer, serve) => {
                    match admit(&mut self.state, &mut self.kernel, socket, peer, serve) {
                        Some((id, First::Open)) => self.call(Callback::Connect(id)),
                        Some((id, First::Handshake)) => self.handshake(id),
                        None => self.apply(),
                    }
                }
                Accepted::Nobody => {}
                Accepted::Done => return,
            }
        }
        if self.listeners.reschedule(i) {
            self.state.scheduled.push_back(Token::Listener(i));
        }
    }
}

/// A new connection: booked for the service, at once or after its PROXY
/// header and TLS handshake; or for the metrics responder. `None` if it
/// was refused or could not be set up.
pub(super) fn admit<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    socket: O::Socket,
    peer: Addr,
    serve: Serve,
) -> Option<(ConnId, First)> {
    state.stats.accepted += 1;
    if state.refused(&serve, &peer) {
        return None;
    }
    let (tls, proxied, metrics) = match serve {
        Serve::Service => (None, state.config.proxy_protocol, false),
        Serve::Tls(tls) => (Some(tls), state.config.proxy_protocol, false),
        Serve::Metrics => (None, false, true),
    };
    let first = if tls.is_some() || proxied {
        First::Handshake
    } else {
        First::Open
    };
    let phase = match first {
        First::Handshake => Phase::Handshaking {
            close_when_up: false,
        },
        First::Open => Phase::Open,
    };
    let id = book(state, kernel, socket, peer.clone(), phase)
        .map_err(|e| warn!("setting up {peer}: {e}"))
        .ok()?;
    debug!("accepted {id} from {peer}");
    trace_io!(state.config.trace, "{id} accept from {peer}");
    if let Some(conn) = state.conns.live_mut(id) {
        conn.flags.awaiting_proxy = proxied;
    }
    if metrics {
        state.admit_metrics(id);
    }
    if let First::Handshake = first {
        let due = state.stamp.after(state.config.handshake_timeout);
        state.add_conn_timer(due, id, ConnTimer::Handshake);
    }
    match tls.map(Tls::server).transpose() {
        Ok(tls) => {
            if let (Some(tls), Some(handles)) = (tls, kernel.handles_mut(id)) {
                handles.set_tls(tls);
            }
            Some((id, first))
        }
        Err(e) => {
            warn!("{id} from {peer}: TLS: {e}");
            state.abort(id, CloseReason::Error(e.kind()));
            None
        }
    }
}

/// Books `socket` as a new connection and registers it; on failure the
/// socket closes and nothing is booked.
pub(super) fn book<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    socket: O::Socket,
    peer: Addr,
    phase: Phase,
) -> io::Result<ConnId> {
    let id = state.conns.next_id();
    attach(state, kernel, id, socket)?;
    state.insert(peer, phase);
    Ok(id)
}

/// Gives `id` its socket: the configured options, registered once with the
/// poller under `id`'s token, kept in the kernel's table. On failure the
/// socket closes.
fn attach<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    id: ConnId,
    socket: O::Socket,
) -> io::Result<()> {
    socket.apply(&state.config.socket)?;
    let token = Token::Conn(id).to_u64();
    kernel
        .poller
        .register(&socket, token, Interest::ReadWrite)?;
    state.stats.interest_changes += 1;
    kernel.attach(id, socket);
    Ok(())
}

/// Opens a connection to `addr` now, from outside any callback (TLS, if
/// given, starts once it is connected).
pub(super) fn connect_now<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    addr: &Addr,
    local: Option<SocketAddr>,
    tls: Option<Tls>,
) -> io::Result<ConnId> {
    let socket = O::Socket::connect(addr, local)?;
    let connecting = Phase::Connecting {
        close_when_up: false,
    };
    let id = book(state, kernel, socket, addr.clone(), connecting)?;
    if let (Some(tls), Some(handles)) = (tls, kernel.handles_mut(id)) {
        handles.set_tls(tls);
    }
    state.connect_started(id, addr);
    Ok(id)
}

/// Makes the sockets of the connects that callbacks asked for; a connect
/// that fails at once fails as any connect does.
pub(super) fn start_connects<O: Os>(state: &mut State, kernel: &mut Kernel<O>) {
    for request in std::mem::take(&mut state.connects) {
        let id = request.id;
        let wanted = state.conns.live(id);
        if !wanted.is_some_and(|c| matches!(c.phase, Phase::Connecting { .. })) {
            continue; // abandoned before it began: its close needs no socket
        }
        let started = O::Socket::connect(&request.addr, request.local)
            .and_then(|socket| attach(state, kernel, id, socket));
        match started {
            Ok(()) => {
                if let (Some(tls), Some(handles)) = (request.tls, kernel.handles_mut(id)) {
                    handles.set_tls(tls);
                }
            }
            Err(e) => state.fail_connect(id, e),
        }
    }
}

/// Where an outgoing connect is, after an event.
pub(super) enum Connect {
    /// Still connecting, or failed (then it is aborted, with why).
    NotUp,
    /// It was up before this event.
    WasUp,
    /// It is up now; then, as for an accepted one, what comes first.
    Up(First),
}

/// Completes or fails an outgoing connect, as `event` says.
pub(super) fn finish_connect<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    id: ConnId,
    event: &impl Readiness,
) -> Connect {
    let (Some(conn), Some(socket)) = (state.conns.live_mut(id), kernel.socket(id)) else {
        return Connect::NotUp;
    };
    let Phase::Connecting { close_when_up } = conn.phase else {
        return Connect::WasUp;
    };
    if !(event.is_writable() || event.is_error() || event.is_read_closed()) {
        return Connect::NotUp;
    }
    if let Some(error) = socket.take_error() {
        state.fail_connect(id, error);
        return Connect::NotUp;
    }
    let tls = kernel.handles(id).and_then(Handles::tls).is_some();
    if !tls {
        // With TLS, once its handshake is done.
        state.stats.connected += 1;
    }
    conn.phase = match (tls, close_when_up) {
        (true, _) => Phase::Handshaking { close_when_up },
        (false, true) => Phase::Closing,
        (false, false) => Phase::Open,
    };
    trace_io!(
        state.config.trace,
        "{id} connected to {}",
        state.peer_label(id)
    );
    Connect::Up(if tls { First::Handshake } else { First::Open })
}

impl State {
    /// Whether a new connection on `serve` finds no room: a metrics one
    /// past the metrics connections' own cap, another past `max_conns`
    /// (metrics ones not counted). One refused is counted and logged.
    fn refused(&mut self, serve: &Serve, peer: &Addr) -> bool {
        let metrics_open = self.admission.metrics_open;
        let full = match serve {
            Serve::Metrics => metrics_open >= MAX_METRICS_CONNS,
            Serve::Service | Serve::Tls(_) => {
                self.stats.active as usize - metrics_open >= self.config.max_conns
            }
        };
        if !full {
            return false;
        }
        self.stats.count_close(CloseReason::Limit);
        match serve {
            Serve::Metrics => {
                self.stats.metrics_refused += 1;
                debug!("rejected {peer}: {MAX_METRICS_CONNS} metrics connections are open");
            }
            Serve::Service | Serve::Tls(_) => self.log_refusal(peer),
        }
        true
    }

    /// A connection refused for `max_conns`: logged at once if none was in
    /// the last second, else summed up in the next line, so that a flood of
    /// refusals costs a line a second.
    fn log_refusal(&mut self, peer: &Addr) {
        let max = self.config.max_conns;
        debug!("rejected {peer}: at the limit of {max} connections");
        if self.admission.reported_at.is_some() {
            self.admission.unreported += 1;
            return;
        }
        warn!(
            "refused 1 connection over --max-conns {max} (from {peer}); \
             more are summed up once a second"
        );
        self.admission.reported_at = Some(self.now);
        self.timers
            .add(self.now + REFUSAL_REPORT_EVERY, TimerKind::RefusalReport);
    }

    /// The refusals since the last line, in one line; a second without any
    /// ends the reports until the next refusal.
    pub(super) fn report_refusals(&mut self) {
        let Some(since) = self.admission.reported_at else {
            return;
        };
        let n = std::mem::take(&mut self.admission.unreported);
        if n == 0 {
            self.admission.reported_at = None;
            return;
        }
        let s = if n == 1 { "" } else { "s" };
        let secs = self.now.saturating_duration_since(since).as_secs_f64();
        warn!(
            "refused {n} connection{s} over --max-conns {} in the last {secs:.1}s",
            self.config.max_conns
        );
        self.admission.reported_at = Some(self.now);
        self.timers
            .add(self.now + REFUSAL_REPORT_EVERY, TimerKind::RefusalReport);
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpStream;

    use crate::reactor::{Addr, Config, ConnId, Context, ListenOptions, Reactor, Service};
    use crate::sys::os::Spare;

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
        reactor.listeners.spare_fd().release();
        drop(TcpStream::connect(addr).unwrap());
        for _ in 0..100 {
            if reactor.stats().closed == 1 {
                break;
            }
            reactor.turn().unwrap();
        }
        assert_eq!(reactor.stats().closed, 1);
        assert!(reactor.listeners.spare_fd().is_held());
    }
}
