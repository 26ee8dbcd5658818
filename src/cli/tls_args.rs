//! The TLS flags: a server's listener (`TlsArgs`), a relay's upstreams
//! (`UpstreamTlsArgs`), the bench's target (`BenchTlsArgs`), and the
//! settings each asks for. The flags are the same in every build; a build
//! without TLS refuses them (`check.rs`, through `tls_off.rs`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use sockloop::bench::ClientTls;
use sockloop::sys::Addr;

use super::parse::{parse_duration, refuse_zero};
use super::tls::{self, UpstreamTls};
use super::usage::Usage;
use crate::server::ListenerTls;

/// TLS on a server's listener.
#[derive(Args)]
pub(super) struct TlsArgs {
    /// Serve TLS with this certificate chain (PEM; `sockloop cert` makes one).
    #[arg(long, requires = "tls_key")]
    pub(super) tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub(super) tls_key: Option<PathBuf>,
    /// ALPN protocols to offer, most preferred first (e.g. h2,http/1.1).
    #[arg(long, value_delimiter = ',')]
    pub(super) alpn: Vec<String>,
    /// Close a client that has not finished its TLS handshake (and sent its
    /// PROXY header, with --proxy-protocol) within this long.
    #[arg(long, default_value = "10s", value_parser = refuse_zero(parse_duration))]
    pub(super) handshake_timeout: Duration,
}

impl TlsArgs {
    /// Whether the listener serves TLS.
    pub(super) fn on(&self) -> bool {
        self.tls_cert.is_some()
    }

    /// The listener's TLS settings, if it serves TLS.
    pub(super) fn listener(&self) -> Option<ListenerTls> {
        Some(ListenerTls {
            cert: self.tls_cert.clone()?,
            key: self.tls_key.clone()?,
            alpn: self.alpn.clone(),
        })
    }
}

/// TLS towards the bench's target.
#[derive(Args)]
pub(super) struct BenchTlsArgs {
    /// Connect with TLS: each connection starts with a full handshake, and
    /// the connects line counts handshakes/s (with --ca or --insecure).
    #[arg(long, requires = "target")]
    pub(super) tls: bool,
    /// With --tls: trust the certificates in this PEM file.
    #[arg(long, value_name = "PEM", requires = "tls")]
    pub(super) ca: Option<PathBuf>,
    /// With --tls: take any certificate the target shows.
    #[arg(long, requires = "tls", conflicts_with = "ca")]
    pub(super) insecure: bool,
}

impl BenchTlsArgs {
    /// The TLS settings for connects to `target`, if asked for.
    pub(super) fn client(&self, target: Option<&Addr>) -> io::Result<Option<ClientTls>> {
        let (true, Some(target)) = (self.tls, target) else {
            return Ok(None);
        };
        tls::bench_client(self.roots()?, target).map(Some)
    }

    /// Whom to trust: the certificates of `--ca` (`Some`), or anyone with
    /// `--insecure` (`None`).
    pub(super) fn roots(&self) -> Result<Option<&Path>, Usage> {
        trusted_ca(self.ca.as_deref(), self.insecure, "--tls", "--ca")
    }
}

/// TLS towards a relay's upstreams.
#[derive(Args)]
pub(super) struct UpstreamTlsArgs {
    /// Speak TLS to the upstreams (with --upstream-ca or --insecure).
    #[arg(long)]
    pub(super) upstream_tls: bool,
    /// With --upstream-tls: trust the certificates in this PEM file (a
    /// self-signed one trusts itself).
    #[arg(long, value_name = "PEM", requires = "upstream_tls")]
    pub(super) upstream_ca: Option<PathBuf>,
    /// With --upstream-tls: take any certificate the upstream shows (tests
    /// against your own servers only).
    #[arg(long, requires = "upstream_tls", conflicts_with = "upstream_ca")]
    pub(super) insecure: bool,
    /// With --upstream-tls: the name the upstream's certificate must carry
    /// (default: the upstream's IP address).
    #[arg(long, value_name = "NAME", requires = "upstream_tls")]
    pub(super) upstream_name: Option<String>,
}

impl UpstreamTlsArgs {
    /// Whether the upstreams get TLS.
    pub(super) fn on(&self) -> bool {
        self.upstream_tls
    }

    /// The TLS settings towards the upstreams, if asked for; `alpn` is what
    /// the relay offers where the client agreed on none with it.
    pub(super) fn settings(&self, alpn: &[String]) -> io::Result<Option<UpstreamTls>> {
        if !self.upstream_tls {
            return Ok(None);
        }
        let name = self.upstream_name.as_deref();
        UpstreamTls::new(self.roots()?, name, alpn).map(Some)
    }

    /// Whom to trust: the certificates of `--upstream-ca` (`Some`), or
    /// anyone with `--insecure` (`None`).
    pub(super) fn roots(&self) -> Result<Option<&Path>, Usage> {
        let ca = self.upstream_ca.as_deref();
        trusted_ca(ca, self.insecure, "--upstream-tls", "--upstream-ca")
    }
}

/// Whom a TLS client trusts: the roots in the file of `ca_flag`
/// (`Some`), or anyone with --insecure (`None`); `flag` turned TLS on and
/// needs one of them.
fn trusted_ca<'a>(
    ca: Option<&'a Path>,
    insecure: bool,
    flag: &str,
    ca_flag: &str,
) -> Result<Option<&'a Path>, Usage> {
    match (ca, insecure) {
        (Some(pem), _) => Ok(Some(pem)),
        (None, true) => Ok(None),
        (None, false) => Err(Usage(format!(
            "{flag} needs {ca_flag} PEM (the certificates to trust) or --insecure (trust any)"
        ))),
    }
}
