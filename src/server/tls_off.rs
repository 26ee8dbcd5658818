//! Without the `tls` feature there is no TLS listener. The command line
//! refuses TLS flags in this build, so this is not reached; should it be,
//! it says why. It exists so that `server.rs` is the same in both builds.

use std::io;

use sockloop::reactor::{Reactor, Service};
use sockloop::sys::{Addr, Listener};

use super::ListenerTls;

/// Fails: no TLS to serve.
pub(super) fn adopt<S: Service>(
    _: &mut Reactor<S>,
    _: Listener,
    tls: &ListenerTls,
) -> io::Result<Addr> {
    no_tls(tls)
}

fn no_tls(tls: &ListenerTls) -> io::Result<Addr> {
    let ListenerTls {
        certs,
        cert_dir,
        client_ca,
        alpn,
    } = tls;
    let files: Vec<String> = (certs.iter().map(|(c, _)| c))
        .chain(cert_dir)
        .chain(client_ca)
        .map(|path| path.display().to_string())
        .collect();
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "TLS with {} (ALPN {alpn:?}): this build has none \
             (it was built without the `tls` feature)",
            files.join(", ")
        ),
    ))
}
