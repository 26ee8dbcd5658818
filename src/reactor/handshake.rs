//! A TLS connection's first steps: the handshake, driven by the
//! connection's readiness like any other I/O, bounded by
//! `Config::handshake_timeout`. The service hears of the connection
//! (`on_connect`) only once the handshake is done; a client that speaks
//! plaintext, sends garbage or stalls costs its own connection and nothing
//! else.

use log::warn;

use super::Reactor;
use super::close::CloseReason;
use super::conn::Phase;
use super::kernel::{Handles, Stage};
use super::service::Service;
use super::timer::ConnTimer;
use super::token::ConnId;
use super::trace::trace_io;
use super::transport::Tls;
use crate::sys::os::Os;

impl<S: Service, O: Os> Reactor<S, O> {
    /// `id` is connected and starts its handshake (a client's ClientHello
    /// goes at once); it must end within the handshake timeout.
    pub(super) fn start_handshake(&mut self, id: ConnId, tls: Tls) {
        let Some(handles) = self.kernel.handles_mut(id) else {
            return;
        };
        handles.set_tls(tls);
        let due = self.state.stamp.after(self.state.config.handshake_timeout);
        self.state.add_conn_timer(due, id, ConnTimer::Handshake);
        self.handshake(id);
    }

    /// Moves `id`'s handshake on with what has arrived.
    pub(super) fn handshake(&mut self, id: ConnId) {
        let Some(handles) = self.kernel.handles_mut(id) else {
            return;
        };
        let Some(Stage::Tls(tls)) = handles.stage.as_deref_mut() else {
            return;
        };
        match tls.handshake(&handles.socket) {
            Ok(false) => {}
            Ok(true) => self.handshake_done(id),
            Err(e) => self.handshake_failed(id, &e.to_string()),
        }
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
        self.state.stats.tls_handshakes += 1;
        if let Some(tls) = self.kernel.handles(id).and_then(Handles::tls) {
            let summary = tls.describe();
            trace_io!(self.state.config.trace, "{id} tls {summary}");
            conn.set_tls(summary);
        }
        let Some(peer) = self.state.peer(id).cloned() else {
            return;
        };
        self.open(id, &peer);
        // Application data may have come in with the handshake's last flight.
        self.state.schedule_read(id);
    }

    fn handshake_failed(&mut self, id: ConnId, why: &str) {
        self.state.stats.tls_failures += 1;
        if self.state.conns.live(id).is_some() {
            warn!(
                "{id} from {}: TLS handshake failed: {why}; closing",
                self.state.peer_name(id)
            );
        }
        self.close(id, CloseReason::Protocol);
        self.apply_deferred();
    }

    /// The handshake timeout: a client that stalls mid-handshake is closed.
    pub(super) fn handshake_timer_fired(&mut self, id: ConnId) {
        let Some(conn) = self.state.conns.live(id) else {
            return;
        };
        if !matches!(conn.phase, Phase::Handshaking { .. }) {
            return;
        }
        self.state.stats.tls_failures += 1;
        warn!(
            "{id} from {}: no TLS handshake within {:?}; closing",
            self.state.peer_name(id),
            self.state.config.handshake_timeout
        );
        self.close(id, CloseReason::HandshakeTimeout);
    }
}
