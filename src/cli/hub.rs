//! `sockloop hub`: every frame a client sends, to every other client.

use std::io;

use clap::Args;
use sockloop::app::hub::{Hub, SlowPolicy};
use sockloop::codec::Framing;

use super::server_args::{FrameLimits, ServerArgs};
use crate::server;

/// The arguments of `sockloop hub`.
#[derive(Args)]
pub(super) struct HubArgs {
    #[command(flatten)]
    pub(super) server: ServerArgs,
    /// lines, crlf, len:u8, len:u16be, len:u16le, len:u32be, len:u32le,
    /// len:u64be, len:u64le or fixed:N (raw has no frames to relay whole).
    #[arg(long)]
    pub(super) framing: Framing,
    #[command(flatten)]
    pub(super) limits: FrameLimits,
    /// A subscriber with more unsent bytes than --high-watermark is
    /// disconnected, misses frames until it catches up (drop), or holds
    /// every publisher unread until it is back under a quarter of it (block).
    #[arg(long, default_value = "disconnect")]
    pub(super) slow_policy: SlowPolicy,
}

impl HubArgs {
    /// Serves until a signal stops it; with several reactors, their hubs
    /// are meshed so that a frame reaches the clients of every one.
    pub(super) fn run(&self) -> io::Result<()> {
        let codec = self.limits.codec(self.framing)?;
        let watermark = self.server.high_watermark;
        let make = || Hub::new(codec.clone(), self.slow_policy, watermark);
        let config = self.limits.config(&self.server);
        let plan = self.server.plan();
        let mut server = server::bind(&plan, config, make, 1)?;
        if server.reactors.len() > 1 {
            let hubs = server.reactors.iter_mut();
            Hub::mesh(hubs.map(|r| (r.handle(), r.service_mut())));
        }
        server.run(&plan.threads)
    }
}
