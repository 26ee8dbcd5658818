//! A TLS listener, made from its files. `tls_off.rs` stands in for this
//! file in a build without the `tls` feature, so that `server.rs` is the
//! same in both builds.

use std::io;

use sockloop::reactor::{Reactor, Serve, Service};
use sockloop::sys::{Addr, Listener};

use super::ListenerTls;

/// Serves TLS on `listener`, with the settings of `tls`.
pub(super) fn adopt<S: Service>(
    reactor: &mut Reactor<S>,
    listener: Listener,
    tls: &ListenerTls,
) -> io::Result<Addr> {
    let mut certs = tls.certs.clone();
    if let Some(dir) = &tls.cert_dir {
        certs.extend(sockloop::tls::pairs_in(dir)?);
    }
    let client_ca = tls.client_ca.as_deref();
    let config = sockloop::tls::server_config_for(&certs, client_ca, &tls.alpn)?;
    reactor.adopt(listener, Serve::Tls(config))
}
