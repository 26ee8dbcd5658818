//! Without the `tls` feature there is no TLS to ask for: [`ClientTls`] has
//! no values, so the code that would use one is never reached.

use std::io;
use std::net::SocketAddr;

use crate::reactor::{Addr, ConnId, Reactor, Service};

/// Built without the `tls` feature, there is no TLS to ask for.
#[derive(Debug, Clone)]
pub enum ClientTls {}

impl ClientTls {
    /// Never called: there is no value to call it on.
    pub(super) fn connect<S: Service>(
        &self,
        _: &mut Reactor<S>,
        _: &Addr,
        _: Option<SocketAddr>,
    ) -> io::Result<ConnId> {
        match *self {}
    }
}
