//! TLS towards a relay's upstreams: the settings, and the connect that
//! uses them. `tls_off.rs` stands in for this file in a build without the
//! `tls` feature, so that `relay.rs` is the same in both builds.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;

use super::Relay;
use crate::reactor::{Addr, ConnId, Context};

impl Relay {
    /// Speaks TLS to every upstream with `config`, checking that its
    /// certificate is for `name`, or by default for the upstream's IP
    /// address (a Unix-domain upstream needs a name).
    pub fn with_upstream_tls(
        mut self,
        config: Arc<ClientConfig>,
        name: Option<ServerName<'static>>,
    ) -> Relay {
        self.tls = Some(UpstreamTls {
            config,
            name,
            by_alpn: HashMap::new(),
        });
        self
    }
}

/// TLS towards the upstreams.
pub(super) struct UpstreamTls {
    config: Arc<ClientConfig>,
    name: Option<ServerName<'static>>,
    /// `config` offering just one ALPN protocol, the client's, by protocol.
    by_alpn: HashMap<String, Arc<ClientConfig>>,
}

impl UpstreamTls {
    /// Starts a TLS connect to `addr` for `client`, offering the ALPN
    /// protocol the client agreed on with this relay, if any.
    pub(super) fn connect(
        &mut self,
        ctx: &mut Context<'_>,
        addr: &Addr,
        client: ConnId,
    ) -> io::Result<ConnId> {
        let name = self
            .name
            .clone()
            .or_else(|| crate::tls::name_of(addr))
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a unix: upstream has no address to check its certificate against",
                )
            })?;
        let config = match ctx.alpn(client) {
            Some(protocol) => {
                let base = &self.config;
                let one = self.by_alpn.entry(protocol.to_owned()).or_insert_with(|| {
                    let mut config = ClientConfig::clone(base);
                    config.alpn_protocols = vec![protocol.as_bytes().to_vec()];
                    Arc::new(config)
                });
                Arc::clone(one)
            }
            None => Arc::clone(&self.config),
        };
        ctx.connect_tls(addr, config, name)
    }
}
