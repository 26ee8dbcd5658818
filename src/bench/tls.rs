//! The bench's TLS towards its target. `tls_off.rs` stands in for this file
//! in a build without the `tls` feature: the one place the two builds differ.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::reactor::{Addr, ConnId, Reactor, Service};

/// TLS towards the target: the client's settings, and the name the
/// target's certificate must carry.
#[derive(Debug, Clone)]
pub struct ClientTls {
    /// The client settings every connection's TLS session starts from.
    pub config: Arc<rustls::ClientConfig>,
    /// The name the target's certificate must be valid for.
    pub name: rustls::pki_types::ServerName<'static>,
}

impl ClientTls {
    /// Starts a connect to `target` (from `local`, if given) whose
    /// connection begins with a TLS handshake.
    pub(super) fn connect<S: Service>(
        &self,
        reactor: &mut Reactor<S>,
        target: &Addr,
        local: Option<SocketAddr>,
    ) -> io::Result<ConnId> {
        reactor.connect_tls(target, local, self.config.clone(), self.name.clone())
    }
}
