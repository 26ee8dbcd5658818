//! `sockloop echo`: every byte, or every frame, back to its sender.

use std::io;

use clap::Args;
use sockloop::app::echo::{Echo, FramedEcho};
use sockloop::codec::Framing;

use super::server_args::{FrameLimits, ServerArgs};
use crate::server;

/// The arguments of `sockloop echo`.
#[derive(Args)]
pub(super) struct EchoArgs {
    #[command(flatten)]
    pub(super) server: ServerArgs,
    /// raw, lines, crlf, len:u8, len:u16be, len:u16le, len:u32be, len:u32le,
    /// len:u64be, len:u64le or fixed:N.
    #[arg(long, default_value = "raw")]
    pub(super) framing: Framing,
    #[command(flatten)]
    pub(super) limits: FrameLimits,
}

impl EchoArgs {
    /// Serves until a signal stops it: raw bytes straight back, or frames
    /// decoded and sent back whole.
    pub(super) fn run(&self) -> io::Result<()> {
        let plan = self.server.plan();
        match self.framing {
            Framing::Raw => server::serve(&plan, self.server.config(), || Echo, 1),
            framing => {
                let codec = self.limits.codec(framing)?;
                let config = self.limits.config(&self.server);
                server::serve(&plan, config, || FramedEcho::new(codec.clone()), 1)
            }
        }
    }
}
