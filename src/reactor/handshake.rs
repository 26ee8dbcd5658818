//! A connection's first steps, before the service hears of it: the PROXY
//! protocol header a load balancer in front sends, and the TLS handshake —
//! in that order, when a listener has both. Each is driven by the
//! connection's readiness like any other I/O, and both together are bounded
//! by `Config::handshake_timeout`. The service hears of the connection
//! (`on_connect`) only once they are done; a client that sends no header,
//! speaks plaintext to TLS, sends garbage or stalls costs its own connection
//! and nothing else.
//!
//! A connection we opened has only the TLS step, and it is part of its
//! connect: bounded by the connect timer that is still running
//! (`Config::connect_timeout` from the start of the connect), and a failure
//! reaches the service as a failed connect (`on_connect_failed`, with what
//! went wrong), so a relay tries its next upstream as after a refusal.
//!
//! The PROXY header is peeked at, not read: only once it is complete are
//! exactly its bytes taken from the socket, so whatever the client sent
//! after it (its first request, or its TLS ClientHello) is still in the
//! socket for the next stage.
//!
//! With a list of trusted sources (`Config::proxy_from`), only those owe a
//! header; the client it names is then counted against the limits per
//! source. Any other source is a direct client, whose first bytes are
//! looked at (peeked at before TLS, or in its first read in plaintext) for
//! a header it may not send.

use std::io;

use log::{debug, warn};

use super::Reactor;
use super::accept::PerSource;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::{Phase, ProxyStep, Reading};
use super::kernel::{Handles, Kernel, Stage};
use super::service::Service;
use super::state::State;
use super::tls::is_client_cert_refusal;
use super::token::ConnId;
use super::trace::trace_io;
use crate::codec::proxy::{self, ProxyHeader};
use crate::sys::Addr;
use crate::sys::os::{Os, Stream};

/// How a first step went.
enum Step {
    Done,
    /// Waiting for the peer's next bytes.
    Waiting,
    Failed(io::Error),
    /// Refused: over the limits of the source its header named, or a
    /// header from a source not trusted to send one. Aborted already,
    /// counted and logged as such.
    Refused,
}

/// A PROXY header that is not one.
fn bad_header(why: String) -> Step {
    Step::Failed(io::Error::new(io::ErrorKind::InvalidData, why))
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// Moves `id`'s first steps on with what has arrived; once they are
    /// done, the service hears of it.
    pub(super) fn handshake(&mut self, id: ConnId) {
        match step(&mut self.state, &mut self.kernel, id) {
            Step::Done if done(&mut self.state, &self.kernel, id) => {
                self.call(Callback::Connect(id));
                // Application data may have come in with the handshake's last flight.
                self.state.schedule_read(id);
            }
            Step::Done | Step::Waiting => {}
            Step::Failed(e) => {
                failed(&mut self.state, id, e);
                self.apply();
            }
            Step::Refused => self.apply(),
        }
    }
}

/// One move of `id`'s first steps: its PROXY header, if it owes one, then
/// its TLS handshake, if it has one.
fn step<O: Os>(state: &mut State, kernel: &mut Kernel<O>, id: ConnId) -> Step {
    let Some(conn) = state.conns.live(id) else {
        return Step::Waiting;
    };
    let first = match conn.flags.proxy {
        ProxyStep::Awaiting => read_proxy_header(state, kernel, id),
        ProxyStep::Sniffing => sniff_before_tls(state, kernel, id),
        ProxyStep::Done => Step::Done,
    };
    if !matches!(first, Step::Done) {
        return first;
    }
    let Some(handles) = kernel.handles_mut(id) else {
        return Step::Waiting;
    };
    match handles.stage.as_deref_mut() {
        Some(Stage::Tls(tls)) => match tls.handshake(&handles.socket) {
            Ok(false) => Step::Waiting,
            Ok(true) => Step::Done,
            Err(e) => {
                if is_client_cert_refusal(&e) {
                    state.stats.tls_client_refusals += 1;
                }
                Step::Failed(io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed: {e}"),
                ))
            }
        },
        _ => Step::Done,
    }
}

/// Peeks at what has arrived; once it holds a whole PROXY header, takes
/// exactly that from the socket and makes the client it names the
/// connection's peer. A peer that sent FIN before the whole header
/// fails at once: the peek shows the same part for ever.
fn read_proxy_header<O: Os>(state: &mut State, kernel: &Kernel<O>, id: ConnId) -> Step {
    let (Some(conn), Some(handles)) = (state.conns.live(id), kernel.handles(id)) else {
        return Step::Waiting;
    };
    let peer_fin = conn.flags.peer_fin;
    // The decoder decides within this many bytes.
    let mut buf = [0; proxy::V2_MAX_LEN];
    state.stats.reads += 1;
    let n = match handles.socket.peek(&mut buf) {
        Ok(0) => return bad_header("closed before sending a PROXY header".into()),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            state.stats.eagain_reads += 1;
            return Step::Waiting;
        }
        Err(e) => return reading_header_failed(&e),
    };
    trace_io!(state.config.trace, "{id} peek {n}");
    let (header, len) = match proxy::decode(&buf[..n]) {
        Ok(Some(found)) => found,
        Ok(None) if peer_fin => {
            return bad_header(format!("closed after {n} bytes of a PROXY header"));
        }
        Ok(None) if n < buf.len() => return Step::Waiting,
        Ok(None) => return bad_header("no PROXY header in its first bytes".into()),
        Err(e) => return bad_header(format!("bad PROXY header: {e}")),
    };
    // The bytes are in the socket already, so the read takes them all.
    state.stats.reads += 1;
    match handles.socket.read(&mut buf[..len]) {
        Ok(got) if got == len => {}
        Ok(got) => return bad_header(format!("PROXY header: read {got} of {len} bytes")),
        Err(e) => return reading_header_failed(&e),
    }
    proxy_header_read(state, id, &header);
    admit_named_source(state, id)
}

fn proxy_header_read(state: &mut State, id: ConnId, header: &ProxyHeader) {
    let stamp = state.stamp;
    let Some(conn) = state.conns.live_mut(id) else {
        return;
    };
    // Activity, but not bytes of the stream: those counters leave out
    // what the reactor alone reads, as they leave out TLS handshakes.
    conn.last_active = stamp;
    state.stats.proxy_headers += 1;
    // LOCAL (a health check) and UNKNOWN name nobody: the proxy is the peer.
    if let Some(client) = header.source()
        && let Some(via) = state.set_peer(id, Addr::Ip(client))
    {
        debug!(
            "{id}: PROXY {} header: client {client} via {via}",
            header.version
        );
        if let Some(conn) = state.conns.live_mut(id) {
            conn.set_via(via);
        }
    }
    trace_io!(
        state.config.trace,
        "{id} proxy {} {}",
        header.version,
        state.peer_label(id)
    );
}

/// Counts `id` against the limits of the source its header named (for a
/// LOCAL or UNKNOWN one, the balancer's own address).
fn admit_named_source(state: &mut State, id: ConnId) -> Step {
    let Some(peer) = state.peer(id).cloned() else {
        return Step::Waiting;
    };
    if state.admit_source(&peer, Some(id)) == PerSource::Refused {
        // Still awaiting its header as far as its close can tell: not
        // counted, so not released.
        state.abort(id, CloseReason::Limit);
        return Step::Refused;
    }
    if let Some(conn) = state.conns.live_mut(id) {
        conn.flags.proxy = ProxyStep::Done;
    }
    Step::Done
}

/// A source outside `Config::proxy_from` is served as a direct client;
/// `first`, the first bytes read from it (peeked at, for TLS), are checked
/// for a PROXY header all the same: one that sends a header anyway is
/// closed, logged with its own address, and counted. True if it was. In
/// plaintext, bytes too few to tell (a strict prefix of a signature) pass:
/// a header trickled in such pieces reaches the service as data, never
/// believed.
pub(super) fn untrusted_header(state: &mut State, id: ConnId, first: &[u8]) -> bool {
    let Some(conn) = state.conns.live_mut(id) else {
        return false;
    };
    conn.flags.proxy = ProxyStep::Done;
    if proxy::has_signature(first) != Some(true) {
        return false;
    }
    state.stats.proxy_untrusted += 1;
    warn!(
        "{id} {}: a PROXY header from a source not in --proxy-protocol-from; closing",
        state.peer_label(id)
    );
    state.abort(id, CloseReason::Protocol);
    true
}

/// A TLS client from a source outside `Config::proxy_from`: its first
/// bytes are peeked at for a PROXY header it may not send, before they go
/// to TLS. A ClientHello's first byte tells it apart.
fn sniff_before_tls<O: Os>(state: &mut State, kernel: &Kernel<O>, id: ConnId) -> Step {
    let (Some(conn), Some(handles)) = (state.conns.live(id), kernel.handles(id)) else {
        return Step::Waiting;
    };
    let peer_fin = conn.flags.peer_fin;
    let mut buf = [0; proxy::V2_SIGNATURE.len()];
    state.stats.reads += 1;
    let n = match handles.socket.peek(&mut buf) {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            state.stats.eagain_reads += 1;
            return Step::Waiting;
        }
        // An end or an error is TLS's to meet.
        Ok(0) | Err(_) => 0,
        Ok(n) => n,
    };
    if n > 0 && proxy::has_signature(&buf[..n]).is_none() && !peer_fin {
        return Step::Waiting;
    }
    match untrusted_header(state, id, &buf[..n]) {
        true => Step::Refused,
        false => Step::Done,
    }
}

/// The first steps are done: true if the service is to hear of `id` now.
fn done<O: Os>(state: &mut State, kernel: &Kernel<O>, id: ConnId) -> bool {
    let Some(conn) = state.conns.live_mut(id) else {
        return false;
    };
    let Phase::Handshaking { close_when_up } = conn.phase else {
        return false;
    };
    conn.phase = if close_when_up {
        Phase::Closing
    } else {
        Phase::Open
    };
    // Accepted before a shutdown, its request still on the way: the
    // first read gives it, then the input ends (`Reactor::shutdown`).
    if state.shutting_down && !conn.flags.outbound && conn.reading == Reading::Open {
        conn.reading = Reading::AwaitingFirst;
    }
    if conn.flags.outbound {
        // Its connect counts once it can carry bytes.
        state.stats.connected += 1;
    }
    if let Some(tls) = kernel.handles(id).and_then(Handles::tls) {
        state.stats.tls_handshakes += 1;
        let summary = tls.describe();
        trace_io!(state.config.trace, "{id} tls {summary}");
        conn.set_tls(summary);
        if let Some(identity) = tls.peer_identity() {
            state.stats.tls_client_certs += 1;
            debug!("{id}: client certificate of {identity:?}");
            conn.set_identity(identity);
        }
    }
    true
}

/// A client's first step failed: it is closed, with a warning. One of
/// ours fails as a connect, for its service to report.
fn failed(state: &mut State, id: ConnId, error: io::Error) {
    state.count_handshake_failure(id);
    let Some(conn) = state.conns.live(id) else {
        return;
    };
    if conn.flags.outbound {
        return state.fail_connect(id, error);
    }
    warn!("{id} {}: {error}; closing", state.peer_label(id));
    state.abort(id, CloseReason::Protocol);
}

/// A PROXY header's peek or read that the socket refused.
fn reading_header_failed(e: &io::Error) -> Step {
    Step::Failed(io::Error::new(
        e.kind(),
        format!("reading its PROXY header: {e}"),
    ))
}
