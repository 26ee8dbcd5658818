//! `sockloop hub`: every frame a client sends, to every other client.

use std::io;

use clap::Args;
use sockloop::app::hub::federation::{Federation, Settings, Target};
use sockloop::app::hub::{Hub, SlowPolicy};
use sockloop::codec::Framing;

use super::parse::{parse_federate, parse_size, refuse_zero};
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
    /// Join the hubs of other processes through a Redis pub/sub channel:
    /// redis://HOST:PORT/CHANNEL, or unix:PATH/CHANNEL for a Redis socket.
    #[arg(long, value_name = "ADDR/CHANNEL", value_parser = parse_federate)]
    pub(super) federate: Option<Target>,
    /// Bytes of frames for the channel that may wait, per reactor, while
    /// Redis is away or reads slowly; past it they are dropped and counted.
    #[arg(long, default_value = "1MiB", value_parser = refuse_zero(parse_size))]
    pub(super) federate_buffer: usize,
}

impl HubArgs {
    /// Serves until a signal stops it; with several reactors, their hubs
    /// are meshed so that a frame reaches the clients of every one, and
    /// with --federate each reactor opens its own links to Redis.
    pub(super) fn run(&self) -> io::Result<()> {
        let codec = self.limits.codec(self.framing)?;
        let watermark = self.server.high_watermark;
        let make = || Hub::new(codec.clone(), self.slow_policy, watermark);
        let config = self.limits.config(&self.server);
        // A link to Redis says PING this often, so that it is never idle.
        let heartbeat = config.idle_timeout.map(|idle| idle / 3);
        let plan = self.server.plan();
        let mut server = server::bind(&plan, config, make, 1)?;
        if server.reactors.len() > 1 {
            let hubs = server.reactors.iter_mut();
            Hub::mesh(hubs.map(|r| (r.handle(), r.service_mut())));
        }
        if let Some(target) = &self.federate {
            let settings = Settings {
                target: target.clone(),
                buffer: self.federate_buffer,
                heartbeat,
            };
            let federations = Federation::for_reactors(settings, &codec, server.reactors.len());
            for (reactor, federation) in server.reactors.iter_mut().zip(federations) {
                reactor.service_mut().federate(federation);
                // The hub opens its links when first woken.
                reactor.handle().wake()?;
            }
        }
        server.run(&plan.threads)
    }
}
