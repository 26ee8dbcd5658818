//! The command line: the subcommands' arguments, their value parsers and
//! checks, and what each subcommand runs.
//!
//! - `echo.rs`, `relay.rs`, `hub.rs`, `bench.rs`, `cert.rs`: one subcommand
//!   each, its arguments and its `run`;
//! - `server_args.rs`: the options every server takes, turned into a
//!   reactor's `Config` and a start-up `Plan` for `crate::server`;
//! - `tls_args.rs`: the TLS flags of a listener, a relay's upstreams and
//!   the bench, the same in every build;
//! - `parse.rs`: the value parsers (sizes, durations, addresses, ...);
//! - `check.rs`: the checks of flags together: refusals (a `Usage`, from
//!   `usage.rs`; exit status 2) and warnings;
//! - `tls.rs`, or `tls_off.rs` in a build without TLS: the one place the
//!   two builds differ. Without TLS every TLS flag is refused, naming it.
//!
//! Calls go one way: `mod.rs` → `check.rs` → the subcommands' files →
//! `server_args.rs`, `tls_args.rs` → `tls.rs`, `parse.rs`, `usage.rs`.
//!
//! A module of the binary, not of the library: clap's structs, the
//! messages and the exit statuses are the program's, and no library user
//! needs them. The server start-up it drives (`crate::server`) is the
//! binary's too: no other program starts a server this way (the library's
//! users call `Reactor` and `threads::Supervisor` themselves), and it takes
//! a plain `Plan`, not these structs, should one ever need it.

mod bench;
mod cert;
mod check;
mod echo;
mod hub;
mod parse;
mod relay;
mod server_args;
#[cfg_attr(not(feature = "tls"), path = "tls_off.rs")]
mod tls;
mod tls_args;
mod usage;

use std::io;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use log::{error, warn};
use sockloop::stderr;
use sockloop::sys::PassedListener;

use bench::BenchArgs;
use cert::CertArgs;
use echo::EchoArgs;
use hub::HubArgs;
use relay::RelayArgs;
use usage::Usage;

/// `sockloop` and its subcommand.
#[derive(Parser)]
#[command(
    version,
    about = "A hand-rolled epoll/kqueue reactor for TCP, and servers on it"
)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every byte, or every frame, back to its sender.
    Echo(EchoArgs),
    /// Proxy each client to an upstream (round-robin or least-conn, failed ones skipped), both ways.
    Relay(RelayArgs),
    /// Relay every frame a client sends to every other connected client.
    Hub(HubArgs),
    /// Load an echo server with many connections from one thread; verify every byte.
    Bench(BenchArgs),
    /// Write a self-signed certificate and key to try TLS with: DIR/cert.pem, DIR/key.pem.
    Cert(CertArgs),
}

impl Cli {
    /// Checks the command, warns about what looks unintended, and runs it;
    /// a server serves on the listening sockets `passed` (systemd's
    /// `LISTEN_FDS`, taken by `main`) if there are any. The exit status: 0,
    /// 1 for a failure (logged), or 2 for a refusal of the arguments
    /// (printed as clap prints its own).
    pub fn run(&self, passed: io::Result<Vec<PassedListener>>) -> ExitCode {
        let result = passed
            .map(|passed| self.command.pass(passed))
            .and_then(|()| self.command.check().map_err(io::Error::from))
            .and_then(|()| {
                for warning in self.command.surprises() {
                    warn!("{warning}");
                }
                self.command.run()
            });
        match result {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => match e.get_ref().and_then(|e| e.downcast_ref::<Usage>()) {
                Some(usage) => refusal(&self.command, usage),
                None => {
                    error!("{e}");
                    ExitCode::FAILURE
                }
            },
        }
    }
}

impl Command {
    /// Runs the command, its arguments checked.
    fn run(&self) -> io::Result<()> {
        match self {
            Command::Echo(args) => args.run(),
            Command::Relay(args) => args.run(),
            Command::Hub(args) => args.run(),
            Command::Bench(args) => args.run(),
            Command::Cert(args) => args.run(),
        }
    }

    /// Gives a server the listening sockets passed to this process;
    /// another command closes them.
    fn pass(&self, passed: Vec<PassedListener>) {
        match self {
            Command::Echo(EchoArgs { server, .. })
            | Command::Relay(RelayArgs { server, .. })
            | Command::Hub(HubArgs { server, .. }) => *server.passed.borrow_mut() = passed,
            Command::Bench(_) | Command::Cert(_) => {
                if !passed.is_empty() {
                    warn!("listening sockets passed (LISTEN_FDS): closed, only servers serve them");
                }
            }
        }
    }

    /// The subcommand's name, as typed.
    fn name(&self) -> &'static str {
        match self {
            Command::Echo(_) => "echo",
            Command::Relay(_) => "relay",
            Command::Hub(_) => "hub",
            Command::Bench(_) => "bench",
            Command::Cert(_) => "cert",
        }
    }
}

/// Prints a refusal as clap prints its own, with the subcommand's usage
/// line, after whatever was logged before it; exit status 2, as clap's.
fn refusal(command: &Command, usage: &Usage) -> ExitCode {
    stderr::flush(Duration::from_secs(2));
    let mut cli = Cli::command();
    cli.build();
    let kind = clap::error::ErrorKind::ValueValidation;
    let error = match cli.find_subcommand_mut(command.name()) {
        Some(subcommand) => subcommand.error(kind, usage),
        None => cli.error(kind, usage),
    };
    // Ignored: the exit status says it all the same.
    let _ = error.print();
    ExitCode::from(2)
}

/// What the checks' tests share.
#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(args: &[&str]) -> Option<String> {
        let cli = Cli::try_parse_from([&["sockloop"], args].concat()).expect("valid arguments");
        cli.command.check().err().map(|usage| usage.0)
    }

    /// Each of `cases` is refused with a message that starts as given, or
    /// (given "") accepted.
    pub(super) fn assert_refusals(cases: &[(&[&str], &str)]) {
        for &(args, refused) in cases {
            let found = refusal(args);
            match refused {
                "" => assert_eq!(found, None, "{args:?}"),
                refused => assert!(
                    found.as_deref().is_some_and(|f| f.starts_with(refused)),
                    "{args:?}: {found:?}"
                ),
            }
        }
    }
}
