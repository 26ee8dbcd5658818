//! The `sockloop` command line.

use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use log::{error, info};

use sockloop::app::echo::Echo;
use sockloop::reactor::{Config, Reactor, Service};
use sockloop::sys::{ListenOptions, SocketOptions};

#[derive(Parser)]
#[command(
    version,
    about = "A hand-rolled epoll reactor for TCP, and servers on it"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Echo every byte back to its sender.
    Echo(ServerArgs),
}

/// Options every server takes.
#[derive(Args)]
struct ServerArgs {
    /// Address to listen on; port 0 picks a free one (printed at start).
    #[arg(long, default_value = "127.0.0.1:7878")]
    listen: SocketAddr,
    /// Connections beyond this many are accepted and closed at once.
    #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
    max_conns: usize,
    /// Kernel queue of connections waiting to be accepted.
    #[arg(long, default_value_t = 1024)]
    backlog: i32,
    /// Stop reading a peer whose unsent replies exceed this (e.g. 1MiB, 64KiB, 4096).
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    high_watermark: usize,
    /// Leave Nagle's algorithm on (TCP_NODELAY off).
    #[arg(long)]
    no_nodelay: bool,
    /// SO_RCVBUF for accepted sockets.
    #[arg(long, value_parser = parse_size)]
    rcvbuf: Option<usize>,
    /// SO_SNDBUF for accepted sockets.
    #[arg(long, value_parser = parse_size)]
    sndbuf: Option<usize>,
}

impl ServerArgs {
    fn config(&self) -> Config {
        Config {
            max_conns: self.max_conns,
            high_watermark: self.high_watermark,
            low_watermark: self.high_watermark / 4,
            socket: SocketOptions {
                nodelay: !self.no_nodelay,
                recv_buffer: self.rcvbuf,
                send_buffer: self.sndbuf,
            },
            ..Config::default()
        }
    }
}

/// Parses a byte count: `4096`, `64K`, `64KiB`, `1M`, `1MiB`, `1G` (binary units).
fn parse_size(text: &str) -> Result<usize, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown unit {other:?} (use K, M or G)")),
    };
    let value: usize = digits
        .parse()
        .map_err(|_| format!("not a size: {text:?}"))?;
    value
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("too large: {text:?}"))
}

fn serve<S: Service>(args: &ServerArgs, service: S) -> io::Result<()> {
    let mut reactor = Reactor::new(args.config(), service)?;
    let options = ListenOptions {
        backlog: args.backlog,
    };
    let local = reactor.listen(args.listen, &options)?;
    // Scripts and tests read this line to learn the port: print it exactly once, at once.
    let mut stdout = io::stdout().lock();
    writeln!(stdout, "listening on {local}")?;
    stdout.flush()?;
    drop(stdout);
    info!("serving on {local}");
    reactor.run()
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Echo(args) => serve(args, Echo),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_size;

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert!(parse_size("12parsecs").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999999999999G").is_err());
    }
}
