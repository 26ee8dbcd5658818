//! The last step of the tour: a `Service` on sockloop's reactor. It echoes
//! what it is sent in capitals; everything else — accepting, reading until
//! the kernel is drained, holding replies, backpressure, FIN, timeouts — is
//! the reactor's.
//!
//! Run: `cargo run --release --example shout -- [ADDR]`
//!
//! Ctrl-C (SIGINT) or SIGTERM shuts it down gracefully; SIGUSR1 prints the
//! table of open connections to stderr.

#![deny(unsafe_code)]

use std::io::{self, Write};

use sockloop::reactor::{Addr, Config, ConnId, Context, ListenOptions, Reactor, Service};

struct Shout;

impl Service for Shout {
    /// Nothing to keep per connection.
    type Conn = ();

    fn on_connect(&mut self, _ctx: &mut Context<'_>, _id: ConnId, _peer: &Addr) {}

    /// `input` is every byte not consumed so far; all of it is taken here.
    fn on_data(&mut self, ctx: &mut Context<'_>, id: ConnId, _: &mut (), input: &[u8]) -> usize {
        ctx.write(id, &input.to_ascii_uppercase());
        input.len()
    }
    // The defaults of the other callbacks do the rest: at the peer's FIN,
    // close once every reply has been sent.
}

fn main() -> io::Result<()> {
    let addr: Addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7878".into())
        .parse()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut reactor = Reactor::new(Config::default(), Shout)?;
    // Before any thread starts: the reactor takes SIGINT, SIGTERM and SIGUSR1.
    reactor.handle_signals()?;
    let local = reactor.listen(&addr, &ListenOptions::default())?;
    println!("listening on {local}");
    io::stdout().flush()?;
    reactor.run()?;
    eprintln!("shout: stopped: {}", reactor.stats());
    Ok(())
}
