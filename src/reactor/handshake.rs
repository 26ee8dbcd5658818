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

use std::io;

use log::{debug, warn};

use super::Reactor;
use super::callback::Callback;
use super::close::CloseReason;
use super::conn::Phase;
use super::kernel::{Handles, Stage};
use super::service::Service;
use super::timer::ConnTimer;
use super::token::ConnId;
use super::trace::trace_io;
use super::transport::Tls;
use crate::codec::proxy::{self, ProxyHeader};
use crate::sys::Addr;
use crate::sys::os::{Os, Stream};

/// How a first step went.
enum Step {
    Done,
    /// Waiting for the peer's next bytes.
    Waiting,
    Failed(io::Error),
}

/// A PROXY header that is not one.
fn bad_header(why: String) -> Step {
    Step::Failed(io::Error::new(io::ErrorKind::InvalidData, why))
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// `id` is connected and starts its first steps (TLS, if given: a
    /// client's ClientHello goes at once); they must end within the
    /// handshake timeout.
    pub(super) fn start_handshake(&mut self, id: ConnId, tls: Option<Tls>) {
        let Some(handles) = self.kernel.handles_mut(id) else {
            return;
        };
        if let Some(tls) = tls {
            handles.set_tls(tls);
        }
        // An outgoing connection's connect timer bounds its handshake too.
        if self.state.conns.live(id).is_some_and(|c| !c.flags.outbound) {
            let due = self.state.stamp.after(self.state.config.handshake_timeout);
            self.state.add_conn_timer(due, id, ConnTimer::Handshake);
        }
        self.handshake(id);
    }

    /// Moves `id`'s first steps on with what has arrived.
    pub(super) fn handshake(&mut self, id: ConnId) {
        let Some(conn) = self.state.conns.live(id) else {
            return;
        };
        if conn.flags.awaiting_proxy {
            match self.read_proxy_header(id) {
                Step::Done => {}
                Step::Waiting => return,
                Step::Failed(e) => return self.handshake_failed(id, e),
            }
        }
        let Some(handles) = self.kernel.handles_mut(id) else {
            return;
        };
        let step = match handles.stage.as_deref_mut() {
            Some(Stage::Tls(tls)) => match tls.handshake(&handles.socket) {
                Ok(false) => Step::Waiting,
                Ok(true) => Step::Done,
                Err(e) => Step::Failed(io::Error::new(
                    e.kind(),
                    format!("TLS handshake failed: {e}"),
                )),
            },
            _ => Step::Done,
        };
        match step {
            Step::Done => self.handshake_done(id),
            Step::Waiting => {}
            Step::Failed(e) => self.handshake_failed(id, e),
        }
    }

    /// Peeks at what has arrived; once it holds a whole PROXY header, takes
    /// exactly that from the socket and makes the client it names the
    /// connection's peer. A peer that sent FIN before the whole header
    /// fails at once: the peek shows the same part for ever.
    fn read_proxy_header(&mut self, id: ConnId) -> Step {
        let (Some(conn), Some(handles)) = (self.state.conns.live(id), self.kernel.handles(id))
        else {
            return Step::Waiting;
        };
        let peer_fin = conn.flags.peer_fin;
        // The decoder decides within this many bytes.
        let mut buf = [0; proxy::V2_MAX_LEN];
        self.state.stats.reads += 1;
        let n = match handles.socket.peek(&mut buf) {
            Ok(0) => return bad_header("closed before sending a PROXY header".into()),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.state.stats.eagain_reads += 1;
                return Step::Waiting;
            }
            Err(e) => return reading_header_failed(&e),
        };
        trace_io!(self.state.config.trace, "{id} peek {n}");
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
        self.state.stats.reads += 1;
        match handles.socket.read(&mut buf[..len]) {
            Ok(got) if got == len => {}
            Ok(got) => return bad_header(format!("PROXY header: read {got} of {len} bytes")),
            Err(e) => return reading_header_failed(&e),
        }
        self.proxy_header_read(id, &header);
        Step::Done
    }

    fn proxy_header_read(&mut self, id: ConnId, header: &ProxyHeader) {
        let stamp = self.state.stamp;
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        conn.flags.awaiting_proxy = false;
        // Activity, but not bytes of the stream: those counters leave out
        // what the reactor alone reads, as they leave out TLS handshakes.
        conn.last_active = stamp;
        self.state.stats.proxy_headers += 1;
        // LOCAL (a health check) and UNKNOWN name nobody: the proxy is the peer.
        if let Some(client) = header.source()
            && let Some(via) = self.state.set_peer(id, Addr::Ip(client))
        {
            debug!(
                "{id}: PROXY {} header: client {client} via {via}",
                header.version
            );
        }
        trace_io!(
            self.state.config.trace,
            "{id} proxy {} {}",
            header.version,
            self.state.peer_label(id)
        );
    }

    fn handshake_done(&mut self, id: ConnId) {
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        let Phase::Handshaking { close_when_up } = conn.phase else {
            return;
        };
        conn.phase = if close_when_up {
            Phase::Closing
        } else {
            Phase::Open
        };
        if conn.flags.outbound {
            // Its connect counts once it can carry bytes.
            self.state.stats.connected += 1;
        }
        if let Some(tls) = self.kernel.handles(id).and_then(Handles::tls) {
            self.state.stats.tls_handshakes += 1;
            let summary = tls.describe();
            trace_io!(self.state.config.trace, "{id} tls {summary}");
            conn.set_tls(summary);
        }
        self.call(Callback::Connect(id));
        // Application data may have come in with the handshake's last flight.
        self.state.schedule_read(id);
    }

    /// A client's first step failed: it is closed, with a warning. One of
    /// ours fails as a connect, for its service to report.
    fn handshake_failed(&mut self, id: ConnId, error: io::Error) {
        self.state.count_handshake_failure(id);
        let Some(conn) = self.state.conns.live(id) else {
            return;
        };
        if conn.flags.outbound {
            self.state.fail_connect(id, error);
            return self.apply();
        }
        warn!("{id} {}: {error}; closing", self.state.peer_label(id));
        self.close(id, CloseReason::Protocol);
        self.apply();
    }

}

/// A PROXY header's peek or read that the socket refused.
fn reading_header_failed(e: &io::Error) -> Step {
    Step::Failed(io::Error::new(
        e.kind(),
        format!("reading its PROXY header: {e}"),
    ))
}
