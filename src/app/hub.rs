//! Hub: every frame a client sends goes to every other connected client.
//!
//! Each batch of frames one `on_data` call decodes is encoded once, into a
//! scratch buffer the hub keeps, and that one byte run is queued for every
//! other subscriber in a single write. Per-sender order follows: a sender's
//! batches are fanned out in the order its bytes arrive.
//!
//! The reactor gives each connection its own output buffer, so "queued"
//! means copied into each subscriber's buffer, then written from there; a
//! shared-chunk output queue in the reactor would save that copy.
//!
//! A slow subscriber cannot hold the others back: before a batch is queued
//! for it, its backlog (what the kernel refused) is compared with
//! the high watermark, and over it the subscriber is cut off
//! ([`SlowPolicy::Disconnect`]) or misses that batch ([`SlowPolicy::Drop`]).
//! So its backlog stays under the high watermark plus one batch, and a batch
//! is at most one read (the reactor's read chunk) plus one partial frame.

use std::fmt;
use std::str::FromStr;

use log::{info, warn};
use slab::Slab;

use super::frames;
use crate::codec::{Codec, Encoder};
use crate::reactor::{Addr, CloseReason, ConnId, Context, Service};

/// What to do with a subscriber whose backlog is over the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Close it at once, discarding its backlog.
    Disconnect,
    /// Keep it, and skip whole frames for it until it catches up.
    Drop,
}

impl FromStr for SlowPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disconnect" => Ok(Self::Disconnect),
            "drop" => Ok(Self::Drop),
            other => Err(format!(
                "unknown slow policy `{other}`: expected disconnect or drop"
            )),
        }
    }
}

impl fmt::Display for SlowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disconnect => "disconnect",
            Self::Drop => "drop",
        })
    }
}

/// The broadcast service.
pub struct Hub {
    codec: Codec,
    policy: SlowPolicy,
    high_watermark: usize,
    /// Every connected client. A slab key stays put when others leave, so a
    /// connection keeps its own key in its state and leaves in O(1).
    subscribers: Slab<Subscriber>,
    /// The current batch, encoded once for every subscriber.
    encoded: Vec<u8>,
    dropped: u64,
}

struct Subscriber {
    id: ConnId,
    peer: Addr,
    /// Frames skipped for it under [`SlowPolicy::Drop`], and whether it is
    /// behind right now (to log when that starts and ends, not per frame).
    dropped: u64,
    behind: bool,
}

/// Per-connection state: the decoder (it keeps scan state) and the slab key.
pub struct HubConn {
    codec: Codec,
    key: usize,
    peer: Addr,
}

impl Hub {
    /// `high_watermark` should be the reactor's: a subscriber with more
    /// unsent bytes than that is slow. Each connection decodes with its own
    /// copy of `codec`; every frame is re-encoded with it.
    pub fn new(codec: Codec, policy: SlowPolicy, high_watermark: usize) -> Self {
        Hub {
            codec,
            policy,
            high_watermark,
            subscribers: Slab::new(),
            encoded: Vec::new(),
            dropped: 0,
        }
    }

    /// Frames skipped for slow subscribers so far, one per frame per subscriber.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Queues the `frames` frames in `self.encoded` for everyone but `from`.
    fn fan_out(&mut self, ctx: &mut Context<'_>, from: usize, frames: u64) {
        let mut sent = 0;
        for (key, sub) in self.subscribers.iter_mut() {
            if key == from {
                continue;
            }
            let pending = ctx.pending_output(sub.id).unwrap_or(0);
            if pending <= self.high_watermark {
                if ctx.write(sub.id, &self.encoded) {
                    sent += frames;
                    if sub.behind {
                        sub.behind = false;
                        info!("{} ({}) caught up", sub.id, sub.peer);
                    }
                }
                continue;
            }
            match self.policy {
                SlowPolicy::Disconnect => {
                    warn!(
                        "{} ({}): {pending} bytes unsent, over the high watermark of {}; \
                         disconnecting slow subscriber",
                        sub.id, sub.peer, self.high_watermark
                    );
                    ctx.abort(sub.id, CloseReason::Local);
                }
                SlowPolicy::Drop => {
                    if !sub.behind {
                        sub.behind = true;
                        warn!(
                            "{} ({}): {pending} bytes unsent, over the high watermark of {}; \
                             dropping frames for it until it catches up",
                            sub.id, sub.peer, self.high_watermark
                        );
                    }
                    sub.dropped += frames;
                    self.dropped += frames;
                }
            }
        }
        ctx.count_frames(frames, sent);
    }
}

impl Service for Hub {
    type Conn = HubConn;

    fn on_connect(&mut self, _ctx: &mut Context<'_>, id: ConnId, peer: &Addr) -> HubConn {
        let key = self.subscribers.insert(Subscriber {
            id,
            peer: peer.clone(),
            dropped: 0,
            behind: false,
        });
        HubConn {
            codec: self.codec.clone(),
            key,
            peer: peer.clone(),
        }
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut HubConn,
        input: &[u8],
    ) -> usize {
        self.encoded.clear();
        let encoded = &mut self.encoded;
        let done = frames::decode_all(&mut conn.codec, input, |codec, payload| {
            codec.encode(payload, encoded)
        });
        // Frames that decoded before an error are whole: they still go out.
        if done.frames > 0 {
            self.fan_out(ctx, conn.key, done.frames);
        }
        done.consumed(ctx, id, &conn.peer, input)
    }

    /// FIN means the client is leaving: it gets what is already queued for
    /// it, then closes.
    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut HubConn,
        unconsumed: &[u8],
    ) {
        frames::finish(ctx, id, &mut conn.codec, &conn.peer, unconsumed);
    }

    fn on_close(
        &mut self,
        _ctx: &mut Context<'_>,
        id: ConnId,
        conn: HubConn,
        _reason: CloseReason,
    ) {
        if let Some(sub) = self.subscribers.try_remove(conn.key)
            && sub.dropped > 0
        {
            info!(
                "{id} ({}) left; {} frames were dropped for it",
                conn.peer, sub.dropped
            );
        }
    }
}
