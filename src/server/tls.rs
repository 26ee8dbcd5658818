//! A TLS listener, made from its files. `tls_off.rs` stands in for this
//! file in a build without the `tls` feature, so that `server.rs` is the
//! same in both builds.

use std::io;

use sockloop::reactor::{Reactor, Serve, Service};
use sockloop::sys::{Addr, ListenOptions, Listener};

use super::ListenerTls;

/// Gives `reactor` a listener on `addr` that serves TLS with the
/// certificate, key and ALPN protocols of `tls`; returns the address bound.
pub(super) fn listen<S: Service>(
    reactor: &mut Reactor<S>,
    addr: &Addr,
    options: &ListenOptions,
    tls: &ListenerTls,
) -> io::Result<Addr> {
    let config = sockloop::tls::server_config(&tls.cert, &tls.key, &tls.alpn)?;
    reactor.listen_as(addr, options, Serve::Tls(config))
}

/// As [`listen`], on `listener`, a listening socket made elsewhere.
pub(super) fn adopt<S: Service>(
    reactor: &mut Reactor<S>,
    listener: Listener,
    tls: &ListenerTls,
) -> io::Result<Addr> {
    let config = sockloop::tls::server_config(&tls.cert, &tls.key, &tls.alpn)?;
    reactor.adopt(listener, Serve::Tls(config))
}
