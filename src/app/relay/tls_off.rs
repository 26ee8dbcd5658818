//! Without the `tls` feature a relay speaks plain TCP to its upstreams:
//! this type has no values, so its `tls` is always `None` and the TLS
//! connect in `relay.rs` is never reached. It exists so that `relay.rs`
//! is the same in both builds.

use std::io;

use crate::reactor::{Addr, ConnId, Context};

/// TLS towards the upstreams, which this build cannot have.
pub(super) enum UpstreamTls {}

impl UpstreamTls {
    /// Never called: there is no value to call it on.
    pub(super) fn connect(
        &mut self,
        _: &mut Context<'_>,
        _: &Addr,
        _: ConnId,
    ) -> io::Result<ConnId> {
        match *self {}
    }
}
