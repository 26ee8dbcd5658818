//! `sockloop cert`: a self-signed certificate and key to try TLS with.

use std::io;
use std::path::PathBuf;

use clap::Args;

use super::tls;
use crate::server::print_line;

/// The arguments of `sockloop cert`.
#[derive(Args)]
pub(super) struct CertArgs {
    /// Directory for cert.pem and key.pem (made if it does not exist).
    #[arg(long)]
    out: PathBuf,
    /// The name the certificate is for, a DNS name or an IP address
    /// (127.0.0.1 and ::1 are always in it).
    #[arg(long, default_value = "localhost", value_parser = tls::parse_cert_name)]
    name: String,
    /// Replace cert.pem and key.pem if they are there already (refused
    /// otherwise: a key thrown away cannot be had back).
    #[arg(long)]
    force: bool,
}

impl CertArgs {
    /// Writes DIR/cert.pem and DIR/key.pem, and says so.
    pub(super) fn run(&self) -> io::Result<()> {
        let (cert, key) = tls::write_cert(&self.out, &self.name, self.force)?;
        print_line(format_args!(
            "wrote {} and {} (for {}, 127.0.0.1 and ::1)",
            cert.display(),
            key.display(),
            self.name
        ))
    }
}
