//! The `sockloop` command line: its subcommands, their arguments and checks
//! are in `cli/`, a server's start-up in `server.rs`.

#![deny(unsafe_code)]

mod cli;
mod server;

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use sockloop::{stderr, sys};

fn main() -> ExitCode {
    // First, while no other thread exists: it unsets the LISTEN_* variables.
    let passed = sys::take_passed_listeners();
    stderr::init_logger("info");
    let code = cli::Cli::parse().run(passed);
    // Bounded: a stderr that nobody reads must not keep the process alive.
    stderr::flush(Duration::from_secs(2));
    code
}
