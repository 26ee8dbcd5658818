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
    /// Serve TLS with this certificate chain (PEM; `sockloop cert` makes
    /// one). Repeat, each with its --tls-key, for several: the one whose
    /// names match the name a client asks for (SNI; exactly, then by a
    /// wildcard) is served, the first otherwise.
    #[arg(long, requires = "tls_key")]
    pub(super) tls_cert: Vec<PathBuf>,
    /// The private key of --tls-cert (PEM); the Nth key goes with the Nth
    /// certificate.
    #[arg(long, requires = "tls_cert")]
    pub(super) tls_key: Vec<PathBuf>,
    /// Serve TLS with each NAME.pem (a certificate chain) and NAME.key in
    /// DIR too, in the order of their names, after those of --tls-cert.
    #[arg(long, value_name = "DIR")]
    pub(super) tls_cert_dir: Option<PathBuf>,
    /// Ask every TLS client for a certificate signed by a CA in this PEM
    /// file, and refuse those without one (mutual TLS).
    #[arg(long, value_name = "PEM")]
    pub(super) tls_client_ca: Option<PathBuf>,
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
        !self.tls_cert.is_empty() || self.tls_cert_dir.is_some()
    }

    /// The listener's TLS settings, if it serves TLS.
    pub(super) fn listener(&self) -> Option<ListenerTls> {
        self.on().then(|| ListenerTls {
            certs: (self.tls_cert.iter().cloned())
                .zip(self.tls_key.iter().cloned())
                .collect(),
            cert_dir: self.tls_cert_dir.clone(),
            client_ca: self.tls_client_ca.clone(),
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
    /// With --upstream-tls: present this certificate chain (PEM) to
    /// upstreams that ask for one.
    #[arg(long, value_name = "PEM", requires_all = ["upstream_tls", "upstream_key"])]
    pub(super) upstream_cert: Option<PathBuf>,
    /// The private key of --upstream-cert (PEM).
    #[arg(long, value_name = "PEM", requires = "upstream_cert")]
    pub(super) upstream_key: Option<PathBuf>,
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
        let cert = (self.upstream_cert.clone()).zip(self.upstream_key.clone());
        UpstreamTls::new(self.roots()?, name, alpn, cert.as_ref()).map(Some)
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
