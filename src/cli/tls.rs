//! TLS for the command line, in a build with it: the settings its flags
//! ask for, made with `sockloop::tls`. `tls_off.rs` is the same face for a
//! build without TLS, where each of these refuses; the rest of `cli/` is
//! the same in both.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::pki_types::ServerName;
use sockloop::app::relay::Relay;
use sockloop::bench::ClientTls;
use sockloop::sys::Addr;
use sockloop::tls::{self, Trust};

use super::usage::Usage;

/// Accepts a TLS flag: this build has TLS.
pub(super) fn available(_flag: &str) -> Result<(), Usage> {
    Ok(())
}

/// A `--name` for `sockloop cert`: one a certificate can carry.
pub(super) fn parse_cert_name(text: &str) -> Result<String, String> {
    tls::check_cert_name(text)
        .map(|()| text.to_owned())
        .map_err(|e| e.to_string())
}

/// Refuses an `--upstream-name` that a certificate cannot be checked against.
pub(super) fn check_server_name(name: &str) -> Result<(), Usage> {
    match tls::server_name(name) {
        Ok(_) => Ok(()),
        Err(e) => Err(Usage(format!("--upstream-name {e}"))),
    }
}

/// Whom a client trusts: the certificates in `roots`, or anyone (`None`).
fn trust(roots: Option<&Path>) -> Trust {
    roots.map_or(Trust::Anyone, |pem| Trust::Roots(pem.to_owned()))
}

/// A relay's TLS towards its upstreams.
pub(super) struct UpstreamTls {
    config: Arc<ClientConfig>,
    /// The name the upstreams' certificates must carry (`None`: each one's
    /// IP address).
    name: Option<ServerName<'static>>,
}

impl UpstreamTls {
    /// Trusting the certificates in `roots` (`None`: any), checking them for
    /// `name` (`None`: each upstream's IP address), offering `alpn` where the
    /// client agreed on none with the relay, presenting `cert` (chain, key)
    /// to upstreams that ask for a client certificate.
    pub(super) fn new(
        roots: Option<&Path>,
        name: Option<&str>,
        alpn: &[String],
        cert: Option<&(PathBuf, PathBuf)>,
    ) -> io::Result<UpstreamTls> {
        Ok(UpstreamTls {
            config: tls::client_config_presenting(&trust(roots), alpn, cert)?,
            name: name.map(tls::server_name).transpose()?,
        })
    }

    /// `relay`, speaking TLS to its upstreams.
    pub(super) fn configure(&self, relay: Relay) -> Relay {
        relay.with_upstream_tls(self.config.clone(), self.name.clone())
    }
}

/// The bench's TLS towards `target`, trusting the certificates in `roots`
/// (`None`: any).
pub(super) fn bench_client(roots: Option<&Path>, target: &Addr) -> io::Result<ClientTls> {
    Ok(ClientTls {
        config: tls::client_config(&trust(roots), &[])?,
        name: tls::name_of(target).unwrap_or_else(|| "localhost".try_into().expect("a valid name")),
    })
}

/// Writes a self-signed certificate for `name` and its key into `dir`;
/// with `force`, in place of those already there.
pub(super) fn write_cert(dir: &Path, name: &str, force: bool) -> io::Result<(PathBuf, PathBuf)> {
    if force {
        tls::replace_self_signed(dir, name)
    } else {
        tls::write_self_signed(dir, name)
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_refusals;

    #[test]
    fn tls_flags_that_cannot_work_are_refused_naming_them() {
        assert_refusals(&[
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--alpn",
                    "h2",
                    "--upstream-tls",
                    "--insecure",
                ],
                "",
            ),
            (
                &["relay", "--upstream", "127.0.0.1:1", "--upstream-tls"],
                "--upstream-tls needs",
            ),
            (
                &["bench", "--target", "127.0.0.1:1", "--tls"],
                "--tls needs --ca",
            ),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--upstream-tls",
                    "--insecure",
                    "--upstream-name",
                    "a b",
                ],
                "--upstream-name",
            ),
            (
                &[
                    "echo",
                    "--tls-cert",
                    "a.pem",
                    "--tls-key",
                    "a.key",
                    "--tls-cert",
                    "b.pem",
                ],
                "--tls-cert is given 2 times and --tls-key 1",
            ),
            (
                &["echo", "--tls-client-ca", "ca.pem"],
                "--tls-client-ca ca.pem needs a TLS listener",
            ),
            (
                &[
                    "echo",
                    "--tls-cert-dir",
                    "certs",
                    "--tls-client-ca",
                    "ca.pem",
                ],
                "",
            ),
        ]);
    }
}
