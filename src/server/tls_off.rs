//! Without the `tls` feature there is no TLS listener. The command line
//! refuses TLS flags in this build, so this is not reached; should it be,
//! it says why. It exists so that `server.rs` is the same in both builds.

use std::io;

use sockloop::reactor::{Reactor, Service};
use sockloop::sys::{Addr, ListenOptions};

use super::ListenerTls;

/// Fails: no TLS to serve.
pub(super) fn listen<S: Service>(
    _: &mut Reactor<S>,
    _: &Addr,
    _: &ListenOptions,
    ListenerTls { cert, key, alpn }: &ListenerTls,
) -> io::Result<Addr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        format!(
            "TLS with {} and {} (ALPN {alpn:?}): this build has none \
             (it was built without the `tls` feature)",
            cert.display(),
            key.display()
        ),
    ))
}
