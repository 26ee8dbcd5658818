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
//! Where nothing may be lost, [`SlowPolicy::Block`] holds the publishers
//! back instead: each gets the batch, and every publisher stops being read
//! until all of them are back under the low watermark.
//!
//! Over several reactors (threads), [`Hub::mesh`] joins one hub per
//! reactor: a batch also goes, as one shared allocation, into the inbox of
//! every other reactor, which is woken once for however many batches wait
//! there, and fans them out to its own subscribers in the order they came.
//! Each sender lives on one reactor and fills each inbox in its own order,
//! so order per sender holds across reactors too.
//!
//! Past one machine, [`Hub::federate`] joins hubs of several processes
//! through a Redis pub/sub channel: see [`federation`].

use std::fmt;
use std::mem;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use log::{info, warn};
use slab::Slab;

use self::federation::{Federation, Link};
use super::frames;
use crate::codec::{Codec, Encoder};
use crate::metrics::MetricsText;
use crate::reactor::{Addr, CloseReason, ConnId, Context, Handle, Service};

mod envelope;
pub mod federation;

/// What to do with a subscriber whose backlog is over the high watermark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowPolicy {
    /// Close it at once, discarding its backlog.
    Disconnect,
    /// Keep it, and skip whole frames for it until it catches up.
    Drop,
    /// Keep it and lose nothing: stop reading every publisher until it is
    /// back under the low watermark.
    Block,
}

impl FromStr for SlowPolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disconnect" => Ok(Self::Disconnect),
            "drop" => Ok(Self::Drop),
            "block" => Ok(Self::Block),
            other => Err(format!(
                "unknown slow policy `{other}`: expected disconnect, drop or block"
            )),
        }
    }
}

impl fmt::Display for SlowPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Disconnect => "disconnect",
            Self::Drop => "drop",
            Self::Block => "block",
        })
    }
}

/// The broadcast service.
pub struct Hub {
    codec: Codec,
    subscribers: Subscribers,
    /// The current batch, encoded once for every subscriber.
    encoded: Vec<u8>,
    /// Publishers not read while a subscriber is slow ([`SlowPolicy::Block`]).
    held: Vec<ConnId>,
    /// The hubs of the other reactors, if there are any.
    mesh: Option<Mesh>,
    /// The hubs of other processes, through Redis, if asked for.
    federation: Option<Federation>,
}

/// Every client of this reactor, and what the slow policy needs.
struct Subscribers {
    policy: SlowPolicy,
    high_watermark: usize,
    /// A slab key stays put when others leave, so a connection keeps its own
    /// key in its state and leaves in O(1).
    all: Slab<Subscriber>,
    dropped: u64,
    /// Subscribers over the high watermark under [`SlowPolicy::Block`], on
    /// every reactor of the mesh.
    slow: Arc<AtomicUsize>,
}

struct Subscriber {
    id: ConnId,
    peer: Addr,
    /// Frames skipped for it under [`SlowPolicy::Drop`], and whether it is
    /// behind right now (to log when that starts and ends, not per frame).
    dropped: u64,
    behind: bool,
}

/// Per-connection state: a client, or one of the links to Redis.
pub enum HubConn {
    /// A client: a publisher and a subscriber.
    Client(Client),
    /// A connection of the hub's own to Redis.
    Link(Link),
}

/// A client's decoder (it keeps scan state) and slab key.
pub struct Client {
    codec: Codec,
    key: usize,
    peer: Addr,
}

/// Encoded frames from another reactor's publisher.
#[derive(Clone)]
struct Batch {
    bytes: Arc<[u8]>,
    frames: u64,
}

/// Where other reactors leave batches for one reactor.
#[derive(Default)]
struct Inbox {
    batches: Mutex<Vec<Batch>>,
    /// A wake-up is on its way: later batches need none of their own.
    woken: AtomicBool,
}

/// One hub's view of the others: every reactor's inbox and handle, by index.
struct Mesh {
    me: usize,
    inboxes: Arc<[Inbox]>,
    handles: Vec<Handle>,
    /// The last inbox drained, kept to reuse its allocation.
    spare: Vec<Batch>,
}

impl Mesh {
    fn others(&self) -> impl Iterator<Item = (&Inbox, &Handle)> {
        let me = self.me;
        self.inboxes
            .iter()
            .zip(&self.handles)
            .enumerate()
            .filter(move |&(i, _)| i != me)
            .map(|(_, pair)| pair)
    }

    /// Leaves `batch` in every other reactor's inbox, waking those not yet woken.
    fn publish(&self, batch: &Batch) {
        for (inbox, handle) in self.others() {
            inbox
                .batches
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(batch.clone());
            if !inbox.woken.swap(true, Ordering::SeqCst) {
                wake(handle);
            }
        }
    }

    /// Takes the batches waiting in this reactor's inbox, oldest first.
    fn take(&mut self) -> Vec<Batch> {
        let inbox = &self.inboxes[self.me];
        // Cleared before the inbox is emptied: a batch left after this point
        // brings a wake-up of its own.
        inbox.woken.store(false, Ordering::SeqCst);
        let mut batches = inbox.batches.lock().unwrap_or_else(PoisonError::into_inner);
        mem::replace(&mut *batches, mem::take(&mut self.spare))
    }

    fn wake_others(&self) {
        for (_, handle) in self.others() {
            wake(handle);
        }
    }
}

fn wake(handle: &Handle) {
    // A reactor that has stopped has no subscribers left to serve.
    if let Err(e) = handle.wake() {
        log::debug!("waking a hub on another reactor: {e}");
    }
}

impl Hub {
    /// `high_watermark` should be the reactor's: a subscriber with more
    /// unsent bytes than that is slow. Each connection decodes with its own
    /// copy of `codec`; every frame is re-encoded with it.
    pub fn new(codec: Codec, policy: SlowPolicy, high_watermark: usize) -> Self {
        Hub {
            codec,
            subscribers: Subscribers {
                policy,
                high_watermark,
                all: Slab::new(),
                dropped: 0,
                slow: Arc::default(),
            },
            encoded: Vec::new(),
            held: Vec::new(),
            mesh: None,
            federation: None,
        }
    }

    /// Joins this hub to hubs of other processes through Redis (one
    /// [`Federation`] per reactor, from [`Federation::for_reactors`]). The
    /// links open at the hub's first wake-up: wake its reactor once, through
    /// a [`Handle`], before it runs.
    pub fn federate(&mut self, federation: Federation) {
        self.federation = Some(federation);
    }

    /// Joins hubs that each run on their own reactor, with each reactor's
    /// [`Handle`], into one: a frame any of them receives goes to the
    /// subscribers of all. Call it before the reactors run.
    pub fn mesh<'a>(hubs: impl IntoIterator<Item = (Handle, &'a mut Hub)>) {
        let (handles, hubs): (Vec<Handle>, Vec<&mut Hub>) = hubs.into_iter().unzip();
        let inboxes: Arc<[Inbox]> = hubs.iter().map(|_| Inbox::default()).collect();
        let slow = Arc::new(AtomicUsize::new(0));
        for (me, hub) in hubs.into_iter().enumerate() {
            hub.subscribers.slow = Arc::clone(&slow);
            hub.mesh = Some(Mesh {
                me,
                inboxes: Arc::clone(&inboxes),
                handles: handles.clone(),
                spare: Vec::new(),
            });
        }
    }

    /// Frames skipped for slow subscribers so far, one per frame per subscriber.
    pub fn dropped(&self) -> u64 {
        self.subscribers.dropped
    }

    /// Subscriber `key` caught up or left: if it was the last slow one,
    /// the held publishers are read again, here and on the other reactors.
    fn not_slow(&mut self, ctx: &mut Context<'_>, key: usize) {
        if self.subscribers.caught_up(key) {
            self.release_held(ctx);
            if let Some(mesh) = &self.mesh {
                mesh.wake_others();
            }
        }
    }

    /// Every slow subscriber has caught up: read the held publishers again.
    fn release_held(&mut self, ctx: &mut Context<'_>) {
        if self.subscribers.slow.load(Ordering::SeqCst) == 0 {
            for id in self.held.drain(..) {
                ctx.resume_read(id);
            }
        }
    }
}

impl Subscribers {
    /// Queues the `frames` frames in `encoded` for everyone but `from`.
    fn fan_out(&mut self, ctx: &mut Context<'_>, from: Option<usize>, encoded: &[u8], frames: u64) {
        let mut sent = 0;
        for (key, sub) in self.all.iter_mut() {
            if Some(key) == from {
                continue;
            }
            let pending = ctx.pending_output(sub.id).unwrap_or(0);
            if pending > self.high_watermark {
                match self.policy {
                    SlowPolicy::Disconnect => {
                        warn!(
                            "{} ({}): {pending} bytes unsent, over the high watermark of {}; \
                             disconnecting slow subscriber",
                            sub.id,
                            ctx.peer_label(sub.id),
                            self.high_watermark
                        );
                        ctx.abort(sub.id, CloseReason::Local);
                        continue;
                    }
                    SlowPolicy::Drop => {
                        if !sub.behind {
                            sub.behind = true;
                            warn!(
                                "{} ({}): {pending} bytes unsent, over the high watermark of {}; \
                                 dropping frames for it until it catches up",
                                sub.id,
                                ctx.peer_label(sub.id),
                                self.high_watermark
                            );
                        }
                        sub.dropped += frames;
                        self.dropped += frames;
                        continue;
                    }
                    SlowPolicy::Block if !sub.behind => {
                        sub.behind = true;
                        self.slow.fetch_add(1, Ordering::SeqCst);
                        info!(
                            "{} ({}): {pending} bytes unsent, over the high watermark of {}; \
                             publishers wait until it catches up",
                            sub.id, sub.peer, self.high_watermark
                        );
                        ctx.watch_drain(sub.id);
                    }
                    SlowPolicy::Block => {}
                }
            }
            if ctx.write(sub.id, encoded) {
                sent += frames;
                if sub.behind && self.policy == SlowPolicy::Drop {
                    sub.behind = false;
                    info!("{} ({}) caught up", sub.id, sub.peer);
                }
            }
        }
        ctx.count_frames(0, sent);
    }

    /// Subscriber `key`, if slow under [`SlowPolicy::Block`], is no longer:
    /// it caught up or left. True if it was the last slow one.
    fn caught_up(&mut self, key: usize) -> bool {
        match self.all.get_mut(key) {
            Some(sub) if sub.behind && self.policy == SlowPolicy::Block => {
                sub.behind = false;
                info!("{} ({}) holds publishers back no more", sub.id, sub.peer);
                self.slow.fetch_sub(1, Ordering::SeqCst) == 1
            }
            _ => false,
        }
    }
}

impl Hub {
    /// A client's frames: to every other subscriber here, to the other
    /// reactors, and to Redis.
    #[inline]
    fn client_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        client: &mut Client,
        input: &[u8],
    ) -> usize {
        self.encoded.clear();
        let encoded = &mut self.encoded;
        let done = frames::decode_all(&mut client.codec, input, |codec, payload| {
            codec.encode(payload, encoded)
        });
        // Frames that decoded before an error are whole: they still go out.
        if done.frames > 0 {
            ctx.count_frames(done.frames, 0);
            let subscribers = &mut self.subscribers;
            subscribers.fan_out(ctx, Some(client.key), &self.encoded, done.frames);
            if let Some(mesh) = &self.mesh {
                mesh.publish(&Batch {
                    bytes: Arc::from(&self.encoded[..]),
                    frames: done.frames,
                });
            }
            if let Some(federation) = &mut self.federation {
                federation.publish(ctx, &self.encoded, done.frames);
            }
            self.hold_if_blocked(ctx, id);
        }
        done.consumed(ctx, id, input)
    }

    /// Under [`SlowPolicy::Block`], while a subscriber is slow, `id` — a
    /// publisher, or the subscribe link, through which the other instances
    /// publish — is not read. Redis keeps what it cannot send a held link,
    /// up to its own limit for subscribers, past which it closes the link.
    fn hold_if_blocked(&mut self, ctx: &mut Context<'_>, id: ConnId) {
        let subscribers = &self.subscribers;
        if subscribers.policy == SlowPolicy::Block && subscribers.slow.load(Ordering::SeqCst) > 0 {
            ctx.pause_read(id);
            self.held.push(id);
        }
    }
}

impl Service for Hub {
    type Conn = HubConn;

    fn on_connect(&mut self, ctx: &mut Context<'_>, id: ConnId, peer: &Addr) -> HubConn {
        if let Some(link) = self.federation.as_mut().and_then(|f| f.connected(ctx, id)) {
            return HubConn::Link(link);
        }
        let key = self.subscribers.all.insert(Subscriber {
            id,
            peer: peer.clone(),
            dropped: 0,
            behind: false,
        });
        HubConn::Client(Client {
            codec: self.codec.clone(),
            key,
            peer: peer.clone(),
        })
    }

    fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut HubConn,
        input: &[u8],
    ) -> usize {
        match conn {
            HubConn::Client(client) => self.client_data(ctx, id, client, input),
            HubConn::Link(link) => {
                let Some(federation) = &mut self.federation else {
                    return input.len();
                };
                let subscribers = &mut self.subscribers;
                let used = federation.on_data(ctx, id, *link, input, |ctx, encoded, frames| {
                    subscribers.fan_out(ctx, None, encoded, frames);
                });
                if *link == Link::Subscribe {
                    self.hold_if_blocked(ctx, id);
                }
                used
            }
        }
    }

    /// Batches from publishers on other reactors, and word that every slow
    /// subscriber there has caught up. The first wake-up opens the links
    /// to Redis, if federated.
    fn on_wake(&mut self, ctx: &mut Context<'_>) {
        if let Some(federation) = &mut self.federation {
            federation.start(ctx);
        }
        let Some(mesh) = &mut self.mesh else {
            return;
        };
        let mut batches = mesh.take();
        for batch in batches.drain(..) {
            self.subscribers
                .fan_out(ctx, None, &batch.bytes, batch.frames);
        }
        mesh.spare = batches;
        self.release_held(ctx);
    }

    /// The links to Redis serve no client: they close (after the
    /// `PUBLISH`es queued on them) rather than hold the shutdown back.
    fn on_shutdown(&mut self, ctx: &mut Context<'_>) {
        if let Some(federation) = &mut self.federation {
            federation.stop(ctx);
        }
    }

    fn on_alarm(&mut self, ctx: &mut Context<'_>, tag: u64) {
        if let Some(federation) = &mut self.federation {
            federation.on_alarm(ctx, tag);
        }
    }

    fn on_drained(&mut self, ctx: &mut Context<'_>, _id: ConnId, conn: &mut HubConn) {
        if let HubConn::Client(client) = conn {
            self.not_slow(ctx, client.key);
        }
    }

    /// FIN means the client is leaving: it gets what is already queued for
    /// it, then closes. Redis closing a link is a link lost, in `on_close`.
    fn on_read_closed(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        conn: &mut HubConn,
        unconsumed: &[u8],
    ) {
        match conn {
            HubConn::Client(client) => {
                frames::finish(ctx, id, &mut client.codec, &client.peer, unconsumed);
            }
            HubConn::Link(_) => ctx.close(id),
        }
    }

    fn on_connect_failed(&mut self, ctx: &mut Context<'_>, id: ConnId, error: std::io::Error) {
        if let Some(federation) = &mut self.federation {
            federation.lost(ctx, id, &error);
        }
    }

    fn on_close(&mut self, ctx: &mut Context<'_>, id: ConnId, conn: HubConn, reason: CloseReason) {
        let client = match conn {
            HubConn::Client(client) => client,
            HubConn::Link(_) => {
                if let Some(federation) = &mut self.federation {
                    federation.lost(ctx, id, &reason);
                }
                return;
            }
        };
        // A slow subscriber that leaves holds nobody back any more.
        self.not_slow(ctx, client.key);
        if let Some(sub) = self.subscribers.all.try_remove(client.key)
            && sub.dropped > 0
        {
            info!(
                "{id} ({}) left; {} frames were dropped for it",
                client.peer, sub.dropped
            );
        }
    }

    fn metrics(&self, _now: std::time::Instant, out: &mut MetricsText) {
        if let Some(federation) = &self.federation {
            federation.counters().write_metrics(out);
        }
    }
}
