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
//! closed at once, as is one over the limits of its source
//! (`Config::per_source`, checked here unless a PROXY header is to name
//! the source: then once it has). The refusals for `max_conns` and the
//! limits per source are logged a line a second at most, each line with
//! how many it stands for.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use log::{Level, debug, log_enabled, warn};

use super::Reactor;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::{Phase, ProxyStep};
use super::kernel::{Handles, Kernel};
use super::listeners::{Accepted, Serve};
use super::scrape::MAX_METRICS_CONNS;
use super::service::Service;
use super::state::{Over, State};
use super::timer::{ConnTimer, TimerKind};
use super::tls::{ServerTls, Tls};
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
    let (tls, metrics) = match serve {
        Serve::Service => (None, false),
        Serve::Tls(tls) => (Some(tls), false),
        Serve::Metrics => (None, true),
    };
    let proxied = !metrics && state.config.expects_proxy_from(&peer);
    let per_source = count_source_now(state, &peer, metrics || proxied)?;
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
    let id = match book(state, kernel, socket, peer.clone(), phase) {
        Ok(id) => id,
        Err(e) => {
            warn!("setting up {peer}: {e}");
            if per_source == PerSource::Counted {
                state.release_source(peer.ip());
            }
            return None;
        }
    };
    debug!("accepted {id} from {peer}");
    trace_io!(state.config.trace, "{id} accept from {peer}");
    if let Some(conn) = state.conns.live_mut(id) {
        conn.flags.proxy = if proxied {
            ProxyStep::Awaiting
        } else if state.config.proxy_protocol && !metrics {
            // Not believed, a header is still looked for (`handshake.rs`).
            ProxyStep::Sniffing
        } else {
            ProxyStep::Done
        };
    }
    if metrics {
        state.admit_metrics(id);
    }
    start_tls(state, kernel, id, first, tls)
}

/// Counts a new connection against the limits of its source now, unless
/// told to `skip` it: a metrics connection, or one whose PROXY header is to
/// name its source (counted once it has). `None` if it was refused: it is
/// closed here.
fn count_source_now(state: &mut State, peer: &Addr, skip: bool) -> Option<PerSource> {
    if skip {
        return Some(PerSource::Unlimited);
    }
    match state.admit_source(peer, None) {
        PerSource::Refused => {
            state.stats.count_close(CloseReason::Limit);
            None
        }
        admitted => Some(admitted),
    }
}

/// Sets `id`'s handshake timer if it has first steps, and its TLS stage if
/// it has one; `None` if that could not be made (then it is aborted).
fn start_tls<O: Os>(
    state: &mut State,
    kernel: &mut Kernel<O>,
    id: ConnId,
    first: First,
    tls: Option<ServerTls>,
) -> Option<(ConnId, First)> {
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
            warn!("{id} {}: TLS: {e}", state.peer_label(id));
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
            Serve::Service | Serve::Tls(_) => self.log_refusal(Over::MaxConns, peer, None),
        }
        true
    }

    /// Counts a new connection from `peer` against the limits of its
    /// source; one refused is counted and logged (the caller closes it).
    /// `id` if it is booked already (its PROXY header named `peer`).
    pub(super) fn admit_source(&mut self, peer: &Addr, id: Option<ConnId>) -> PerSource {
        let (Some(sources), Some(source)) = (&self.config.per_source, peer.ip()) else {
            return PerSource::Unlimited;
        };
        let mut table = sources.table();
        let admitted = table.admit(source.ip(), self.now);
        self.stats.source_entries = table.len();
        drop(table);
        match admitted {
            Ok(()) => PerSource::Counted,
            Err(refusal) => {
                self.stats.source_refused += 1;
                self.log_refusal(Over::Source(refusal), peer, id);
                PerSource::Refused
            }
        }
    }

    /// A connection from `source` that [`admit_source`](Self::admit_source)
    /// counted has closed.
    pub(super) fn release_source(&mut self, source: Option<SocketAddr>) {
        let (Some(sources), Some(source)) = (&self.config.per_source, source) else {
            return;
        };
        let mut table = sources.table();
        table.release(source.ip());
        self.stats.source_entries = table.len();
    }

    /// A connection from `peer` (booked as `id`, if it is) refused,
    /// `over` says for what: logged at once if none was in the last
    /// second, else summed up in the next line, so that a flood of
    /// refusals costs a line a second (and no formatting).
    fn log_refusal(&mut self, over: Over, peer: &Addr, id: Option<ConnId>) {
        let quiet = self.admission.reported_at.is_some();
        if quiet && !log_enabled!(Level::Debug) {
            self.admission.unreported[over.slot()] += 1;
            return;
        }
        let who = match id {
            Some(id) => self.peer_label(id).to_string(),
            None => format!("from {peer}"),
        };
        let why = over.describe(&self.config);
        debug!("rejected {who}: {why}");
        if quiet {
            self.admission.unreported[over.slot()] += 1;
            return;
        }
        warn!("refused 1 connection {why} ({who}); more are summed up once a second");
        self.admission.reported_at = Some(self.now);
        self.timers
            .add(self.now + REFUSAL_REPORT_EVERY, TimerKind::RefusalReport);
    }

    /// The refusals since the last line, a line for each cause; a second
    /// without any ends the reports until the next refusal.
    pub(super) fn report_refusals(&mut self) {
        let Some(since) = self.admission.reported_at else {
            return;
        };
        let counts = std::mem::take(&mut self.admission.unreported);
        if counts.iter().all(|&n| n == 0) {
            self.admission.reported_at = None;
            return;
        }
        let secs = self.now.saturating_duration_since(since).as_secs_f64();
        for over in Over::ALL {
            let n = counts[over.slot()];
            if n > 0 {
                let s = if n == 1 { "" } else { "s" };
                let why = over.describe(&self.config);
                warn!("refused {n} connection{s} {why} in the last {secs:.1}s");
            }
        }
        self.admission.reported_at = Some(self.now);
        self.timers
            .add(self.now + REFUSAL_REPORT_EVERY, TimerKind::RefusalReport);
    }
}

/// What the limits per source made of a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum PerSource {
    /// No limits, or a peer with no IP address (Unix-domain).
    Unlimited,
    /// Counted against its source until it closes.
    Counted,
    /// Refused (counted and logged).
    Refused,
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
