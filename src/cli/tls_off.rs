//! TLS for the command line in a build without it (no `tls` feature): the
//! face of `tls.rs`, where every TLS flag is refused, naming it. The checks
//! refuse before anything starts, so the run never asks for settings that
//! this build cannot make.

use std::io;
use std::path::{Path, PathBuf};

use sockloop::app::relay::Relay;
use sockloop::bench::ClientTls;
use sockloop::sys::Addr;

use super::usage::Usage;

/// The refusal of `what` in this build.
fn no_tls(what: &str) -> Usage {
    Usage(format!(
        "{what} needs TLS, and this build has none (it was built without the `tls` feature)"
    ))
}

/// Refuses a TLS flag.
pub(super) fn available(flag: &str) -> Result<(), Usage> {
    Err(no_tls(flag))
}

/// A `--name` for `sockloop cert`, unchecked: the command is refused here.
pub(super) fn parse_cert_name(text: &str) -> Result<String, String> {
    Ok(text.to_owned())
}

/// Refuses `--upstream-name`.
pub(super) fn check_server_name(_: &str) -> Result<(), Usage> {
    Err(no_tls("--upstream-name"))
}

/// A relay's TLS towards its upstreams: none here.
pub(super) enum UpstreamTls {}

impl UpstreamTls {
    /// Fails: no TLS to speak.
    pub(super) fn new(
        _: Option<&Path>,
        _: Option<&str>,
        _: &[String],
        _: Option<&(PathBuf, PathBuf)>,
    ) -> io::Result<UpstreamTls> {
        Err(no_tls("--upstream-tls").into())
    }

    /// Never called: there is no value to call it on.
    pub(super) fn configure(&self, _: Relay) -> Relay {
        match *self {}
    }
}

/// Fails: no TLS to speak.
pub(super) fn bench_client(_: Option<&Path>, _: &Addr) -> io::Result<ClientTls> {
    Err(no_tls("--tls").into())
}

/// Fails: no TLS to make a certificate with.
pub(super) fn write_cert(_: &Path, _: &str, _: bool) -> io::Result<(PathBuf, PathBuf)> {
    Err(no_tls("sockloop cert").into())
}

#[cfg(test)]
mod tests {
    use super::super::tests::assert_refusals;

    #[test]
    fn every_tls_flag_is_refused_naming_it_in_a_build_without_tls() {
        assert_refusals(&[
            (
                &["echo", "--tls-cert", "c.pem", "--tls-key", "k.pem"],
                "--tls-cert needs TLS, and this build has none",
            ),
            (
                &["echo", "--tls-cert-dir", "certs"],
                "--tls-cert-dir needs TLS, and this build has none",
            ),
            (
                &[
                    "relay",
                    "--upstream",
                    "127.0.0.1:1",
                    "--upstream-tls",
                    "--insecure",
                ],
                "--upstream-tls needs TLS, and this build has none",
            ),
            (
                &["bench", "--target", "127.0.0.1:1", "--tls", "--insecure"],
                "--tls needs TLS, and this build has none",
            ),
            (
                &["cert", "--out", "/nonexistent"],
                "sockloop cert needs TLS, and this build has none",
            ),
        ]);
    }
}
