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
    let config = sockloop::tls::server_config(&tls.cert, &tls.key, &tls.alpn)?;
    reactor.adopt(listener, Serve::Tls(config))
}
