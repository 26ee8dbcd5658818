//! A refusal of the command line, and how it travels: as a `Usage` from
//! the checks, or inside an `io::Error` from a run that found it late.

use std::fmt;
use std::io;

/// A refusal of the command line: arguments that cannot work, together or
/// on this system. `Cli::run` prints it as clap prints its own, and exits 2.
#[derive(Debug)]
pub(super) struct Usage(pub(super) String);

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Usage {}

/// A refusal found once the server is being set up (its own address is
/// known only then), carried up to `Cli::run` as an `io::Error`.
impl From<Usage> for io::Error {
    fn from(usage: Usage) -> io::Error {
        io::Error::new(io::ErrorKind::InvalidInput, usage)
    }
}

/// Refuses, saying `why`.
pub(super) fn refuse(why: impl Into<String>) -> Result<(), Usage> {
    Err(Usage(why.into()))
}
