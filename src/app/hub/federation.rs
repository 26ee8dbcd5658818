//! Hubs on several machines, joined through one Redis pub/sub channel.
//!
//! Each reactor of a federated hub keeps two connections to Redis, opened
//! and read by the reactor like any other: a *publish link*, on which every
//! batch its own clients publish goes out as one `PUBLISH channel payload`
//! (pipelined: the `:N` replies are read and discarded, an error reply is
//! warned), and a *subscribe link*, which sends `SUBSCRIBE channel` and then
//! hears the channel's `message` pushes. A push goes to the subscribers of
//! the reactor that heard it only: every reactor has its own subscription,
//! and frames between the reactors of one process still go through the
//! in-process mesh.
//!
//! A payload is a header (`src/app/hub/envelope.rs`: the process's
//! random instance id, the reactor, the sequence number of the batch's
//! first frame, the frame count) and the frames exactly as the hub sends
//! them to its clients. A process skips the pushes of its own instance (its
//! clients had those frames already), and drops, counts and warns about a
//! push that has no header or whose frames do not decode whole: it was not
//! published by a hub with the same framing.
//!
//! Pub/sub is at-most-once: Redis forgets a message nobody was subscribed to
//! hear, and so does a link that is down. Loss is counted where it is seen.
//! The sender counts the frames it drops itself (the bounded queue full);
//! every receiver keeps the next sequence number it expects from each
//! origin (instance, reactor) and counts a gap as frames *missed* — so the
//! frames a receiving process's clients missed are exactly its `missed`
//! count, whatever the cause. An origin's first push sets the mark: frames
//! from before a receiver existed are not missed.
//!
//! When Redis goes away (a link closes, or a connect fails), both links are
//! dropped, a warning says so once, and a connect is tried again after a
//! back-off (100 ms, doubling to 5 s, back to 100 ms once up). Meanwhile
//! local delivery goes on, and whole `PUBLISH` commands wait in a queue of
//! at most `--federate-buffer` bytes; a batch that does not fit is dropped
//! and counted. When both links are up and the subscription is confirmed,
//! the queue goes out and a line says how long Redis was gone and how many
//! frames were dropped. While up, the same bound holds for what the publish
//! link has not sent yet: Redis reading slowly never holds local delivery
//! back.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::envelope::{Gaps, HEADER_LEN, Header};
use super::frames;
use crate::codec::Codec;
use crate::codec::resp::{self, Reply};
use crate::metrics::{MetricKind, MetricsText};
use crate::reactor::{Addr, CloseReason, ConnId, Context, TimerId};

/// The first wait before connecting again, and the longest.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// Of a run of unwelcome replies (pushes that are not a hub's, error
/// replies to `PUBLISH`), one in this many is logged.
const WARN_EVERY: u64 = 1000;

/// The alarms a federation sets.
const ALARM_RECONNECT: u64 = 0;
const ALARM_HEARTBEAT: u64 = 1;

/// Where the channel is: `redis://HOST:PORT/CHANNEL` or `unix:PATH/CHANNEL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The Redis server, over TCP or a Unix socket.
    pub addr: Addr,
    /// The pub/sub channel: non-empty, no whitespace.
    pub channel: String,
}

impl fmt::Display for Target {
    /// The server, as log lines name it (the channel is said apart).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.addr {
            Addr::Ip(addr) => write!(f, "redis://{addr}"),
            unix => unix.fmt(f),
        }
    }
}

/// What every reactor of a federated hub shares.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where the channel is.
    pub target: Target,
    /// Bytes of `PUBLISH` commands that may wait, while Redis is gone or
    /// reads slowly.
    pub buffer: usize,
    /// How often an idle link says `PING`, so that the idle timeout does not
    /// close it; `None` if there is no idle timeout.
    pub heartbeat: Option<Duration>,
}

/// The federation's counters, summed over the reactors of a process (the
/// first reactor answers `/metrics` for all).
#[derive(Debug, Default)]
pub struct Counters {
    /// Reactors whose links are both up.
    links_up: AtomicU64,
    frames_out: AtomicU64,
    frames_in: AtomicU64,
    dropped: AtomicU64,
    missed: AtomicU64,
    foreign: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Adds the federation's families to a metrics page.
    pub fn write_metrics(&self, out: &mut MetricsText) {
        let families: [(&str, MetricKind, &str, &AtomicU64); 7] = [
            (
                "sockloop_federation_link_up",
                MetricKind::Gauge,
                "Reactors whose two links to Redis are up (the subscription confirmed), summed.",
                &self.links_up,
            ),
            (
                "sockloop_federation_frames_out_total",
                MetricKind::Counter,
                "Frames of local clients handed to the publish link.",
                &self.frames_out,
            ),
            (
                "sockloop_federation_frames_in_total",
                MetricKind::Counter,
                "Frames from other instances delivered to local subscribers, counted once per reactor.",
                &self.frames_in,
            ),
            (
                "sockloop_federation_frames_dropped_total",
                MetricKind::Counter,
                "Frames of local clients not published: the --federate-buffer queue was full.",
                &self.dropped,
            ),
            (
                "sockloop_federation_frames_missed_total",
                MetricKind::Counter,
                "Frames of other instances never received: gaps in their sequence numbers.",
                &self.missed,
            ),
            (
                "sockloop_federation_foreign_total",
                MetricKind::Counter,
                "Pushes on the channel not published by a hub with this framing, dropped.",
                &self.foreign,
            ),
            (
                "sockloop_federation_reconnects_total",
                MetricKind::Counter,
                "Times the links came back after Redis went away.",
                &self.reconnects,
            ),
        ];
        for (name, kind, help, value) in families {
            out.single(name, kind, help, value.load(Ordering::Relaxed));
        }
    }
}

/// What a connection to Redis is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Sends `PUBLISH` for local batches; its replies are only checked.
    Publish,
    /// Subscribed to the channel: hears the other instances' batches.
    Subscribe,
}

/// The two links of one reactor: absent while Redis is away.
#[derive(Debug, Default)]
struct Links {
    publish: Option<ConnId>,
    subscribe: Option<ConnId>,
    publish_open: bool,
    subscribed: bool,
}

impl Links {
    fn up(&self) -> Option<ConnId> {
        self.publish
            .filter(|_| self.publish_open && self.subscribed)
    }

    fn role(&self, id: ConnId) -> Option<Link> {
        if self.publish == Some(id) {
            Some(Link::Publish)
        } else if self.subscribe == Some(id) {
            Some(Link::Subscribe)
        } else {
            None
        }
    }
}

/// Since when Redis has been away, and the frames dropped before that.
struct Outage {
    since: Instant,
    dropped_before: u64,
}

/// One reactor's side of the federation.
pub struct Federation {
    settings: Arc<Settings>,
    counters: Arc<Counters>,
    instance: u64,
    reactor: u32,
    /// Checks that a push's frames decode whole before they go out.
    codec: Codec,
    links: Links,
    started: bool,
    /// The process is shutting down: no more connects.
    stopping: bool,
    backoff: Duration,
    outage: Option<Outage>,
    alarm: Option<TimerId>,
    /// Whole `PUBLISH` commands waiting for the links, and their frames.
    queue: Vec<u8>,
    queued_frames: u64,
    /// The sequence number of the next frame this reactor publishes.
    next_seq: u64,
    gaps: Gaps,
    /// This reactor's share of the counters, for its own log lines.
    dropped: u64,
    foreign: u64,
    errors: u64,
    /// The payload being built, and the command around it.
    payload: Vec<u8>,
    command: Vec<u8>,
}

impl Federation {
    /// One federation per reactor, `reactors` of them, sharing a random
    /// instance id and the counters.
    pub fn for_reactors(settings: Settings, codec: &Codec, reactors: usize) -> Vec<Federation> {
        let settings = Arc::new(settings);
        let counters = Arc::new(Counters::default());
        let instance = RandomState::new().build_hasher().finish();
        (0..reactors)
            .map(|i| Federation {
                settings: Arc::clone(&settings),
                counters: Arc::clone(&counters),
                instance,
                reactor: u32::try_from(i).unwrap_or(u32::MAX),
                codec: codec.clone(),
                links: Links::default(),
                started: false,
                stopping: false,
                backoff: FIRST_BACKOFF,
                outage: None,
                alarm: None,
                queue: Vec::new(),
                queued_frames: 0,
                next_seq: 0,
                gaps: Gaps::default(),
                dropped: 0,
                foreign: 0,
                errors: 0,
                payload: Vec::new(),
                command: Vec::new(),
            })
            .collect()
    }

    /// The counters this reactor shares with the others of its process.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Opens the links, the first time only (the hub's first wake-up).
    pub fn start(&mut self, ctx: &mut Context<'_>) {
        if !self.started {
            self.started = true;
            self.connect(ctx);
        }
    }

    fn connect(&mut self, ctx: &mut Context<'_>) {
        let addr = &self.settings.target.addr;
        let subscribe = ctx.connect(addr, None);
        let channel = self.settings.target.channel.as_bytes();
        self.command.clear();
        resp::encode_command(&mut self.command, &[b"SUBSCRIBE", channel]);
        // Held until the connection is up.
        ctx.write(subscribe, &self.command);
        self.links = Links {
            publish: Some(ctx.connect(addr, None)),
            subscribe: Some(subscribe),
            publish_open: false,
            subscribed: false,
        };
    }

    /// What `id` is for, if it is one of the links: it is up.
    pub fn connected(&mut self, ctx: &mut Context<'_>, id: ConnId) -> Option<Link> {
        let role = self.links.role(id)?;
        if role == Link::Publish {
            self.links.publish_open = true;
            self.maybe_up(ctx);
        }
        Some(role)
    }

    /// Both links are up and the subscription confirmed: the queue goes
    /// out, and a return after an outage is told.
    fn maybe_up(&mut self, ctx: &mut Context<'_>) {
        let Some(publish) = self.links.up() else {
            return;
        };
        Counters::add(&self.counters.links_up, 1);
        self.backoff = FIRST_BACKOFF;
        let target = &self.settings.target;
        match self.outage.take() {
            Some(outage) => {
                Counters::add(&self.counters.reconnects, 1);
                warn!(
                    "federation: back on {target} after {:.1?}; {} frames for {} were dropped meanwhile",
                    ctx.now().saturating_duration_since(outage.since),
                    self.dropped - outage.dropped_before,
                    target.channel
                );
            }
            None => info!("federation: linked to {target}, channel {}", target.channel),
        }
        if !self.queue.is_empty() {
            ctx.write(publish, &self.queue);
            Counters::add(&self.counters.frames_out, self.queued_frames);
            self.queue.clear();
            self.queued_frames = 0;
        }
        if let Some(every) = self.settings.heartbeat {
            self.set_alarm(ctx, every, ALARM_HEARTBEAT);
        }
    }

    fn set_alarm(&mut self, ctx: &mut Context<'_>, after: Duration, tag: u64) {
        if let Some(old) = self.alarm.take() {
            ctx.cancel_timer(old);
        }
        self.alarm = Some(ctx.set_alarm(after, tag));
    }

    /// The process is shutting down: the links close once what is queued
    /// on them is sent, and are not opened again.
    pub fn stop(&mut self, ctx: &mut Context<'_>) {
        self.stopping = true;
        if let Some(alarm) = self.alarm.take() {
            ctx.cancel_timer(alarm);
        }
        for link in [self.links.publish, self.links.subscribe]
            .into_iter()
            .flatten()
        {
            ctx.close(link);
        }
    }

    /// A link closed (`why` says how) or never came up: both go, and a
    /// connect is tried again after the back-off.
    pub fn lost(&mut self, ctx: &mut Context<'_>, id: ConnId, why: &dyn fmt::Display) {
        if self.stopping || self.links.role(id).is_none() {
            return; // shutting down, or the other half of links given up
        }
        if self.links.up().is_some() {
            self.counters.links_up.fetch_sub(1, Ordering::Relaxed);
        }
        for other in [self.links.publish, self.links.subscribe]
            .into_iter()
            .flatten()
        {
            if other != id {
                ctx.abort(other, CloseReason::Local);
            }
        }
        self.links = Links::default();
        let target = &self.settings.target;
        if self.outage.is_none() {
            warn!(
                "federation: lost {target} ({why}); local delivery goes on, \
                 frames for {} wait (up to {} bytes)",
                target.channel, self.settings.buffer
            );
            self.outage = Some(Outage {
                since: ctx.now(),
                dropped_before: self.dropped,
            });
        } else {
            debug!("federation: {target} still away ({why})");
        }
        self.set_alarm(ctx, self.backoff, ALARM_RECONNECT);
        self.backoff = (self.backoff * 2).min(MOST_BACKOFF);
    }

    /// The back-off is over, or it is time for a heartbeat.
    pub fn on_alarm(&mut self, ctx: &mut Context<'_>, tag: u64) {
        self.alarm = None;
        match tag {
            ALARM_RECONNECT if self.links.publish.is_none() => self.connect(ctx),
            ALARM_HEARTBEAT => {
                let (Some(publish), Some(subscribe)) = (self.links.up(), self.links.subscribe)
                else {
                    return;
                };
                self.command.clear();
                resp::encode_command(&mut self.command, &[b"PING"]);
                ctx.write(publish, &self.command);
                ctx.write(subscribe, &self.command);
                if let Some(every) = self.settings.heartbeat {
                    self.set_alarm(ctx, every, ALARM_HEARTBEAT);
                }
            }
            _ => {}
        }
    }
}

impl Federation {
    /// Publishes a batch of local frames, `encoded` as the clients get
    /// them: at once if the links are up, else into the queue; dropped and
    /// counted if that would pass `--federate-buffer`.
    pub fn publish(&mut self, ctx: &mut Context<'_>, encoded: &[u8], frames: u64) {
        let header = Header {
            instance: self.instance,
            reactor: self.reactor,
            first: self.next_seq,
            frames,
        };
        self.next_seq += frames;
        self.payload.clear();
        header.encode(&mut self.payload);
        self.payload.extend_from_slice(encoded);
        self.command.clear();
        let channel = self.settings.target.channel.as_bytes();
        resp::encode_command(&mut self.command, &[b"PUBLISH", channel, &self.payload]);
        let room = self.settings.buffer;
        let sent = match self.links.up() {
            Some(publish) => {
                let pending = ctx.pending_output(publish).unwrap_or(0);
                pending + self.command.len() <= room && ctx.write(publish, &self.command)
            }
            None if self.queue.len() + self.command.len() <= room => {
                self.queue.extend_from_slice(&self.command);
                self.queued_frames += frames;
                return;
            }
            None => false,
        };
        if sent {
            Counters::add(&self.counters.frames_out, frames);
        } else {
            self.dropped += frames;
            Counters::add(&self.counters.dropped, frames);
        }
    }

    /// Replies on link `id`: the publish link's are checked and dropped,
    /// the subscribe link's pushes from other instances go to `deliver`
    /// (their encoded frames, and how many). Returns the bytes consumed.
    pub fn on_data(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        link: Link,
        input: &[u8],
        mut deliver: impl FnMut(&mut Context<'_>, &[u8], u64),
    ) -> usize {
        let mut used = 0;
        loop {
            match resp::decode(&input[used..]) {
                Ok(Some((reply, len))) => {
                    used += len;
                    match link {
                        Link::Publish => self.publish_reply(&reply),
                        Link::Subscribe => self.push(ctx, id, &reply, &mut deliver),
                    }
                }
                Ok(None) => return used,
                Err(e) => {
                    let target = &self.settings.target;
                    warn!("federation: {target} sent what is not RESP ({e}); reconnecting");
                    ctx.abort(id, CloseReason::Protocol);
                    return input.len();
                }
            }
        }
    }

    /// A reply to a `PUBLISH` (or a `PING`): only an error is news.
    fn publish_reply(&mut self, reply: &Reply<'_>) {
        if let Reply::Error(e) = reply {
            self.errors += 1;
            if self.errors % WARN_EVERY == 1 {
                warn!(
                    "federation: {} refused a PUBLISH: {} ({} refused so far)",
                    self.settings.target,
                    String::from_utf8_lossy(e),
                    self.errors
                );
            }
        }
    }

    /// What the subscribe link heard: the subscription confirmed, a
    /// message, a `PING`'s answer, or an error (then it starts over).
    fn push(
        &mut self,
        ctx: &mut Context<'_>,
        id: ConnId,
        reply: &Reply<'_>,
        deliver: &mut impl FnMut(&mut Context<'_>, &[u8], u64),
    ) {
        match reply {
            Reply::Array(parts) => match parts.as_slice() {
                [Reply::Bulk(b"message"), _, Reply::Bulk(payload)] => {
                    self.received(ctx, payload, deliver);
                }
                [Reply::Bulk(b"subscribe"), ..] if !self.links.subscribed => {
                    self.links.subscribed = true;
                    self.maybe_up(ctx);
                }
                _ => {}
            },
            Reply::Error(e) => {
                let e = String::from_utf8_lossy(e);
                warn!(
                    "federation: {} refused SUBSCRIBE: {e}",
                    self.settings.target
                );
                ctx.abort(id, CloseReason::Protocol);
            }
            _ => {}
        }
    }

    /// A message on the channel: another instance's batch goes to
    /// `deliver`, after its gap (if any) is counted as missed.
    fn received(
        &mut self,
        ctx: &mut Context<'_>,
        payload: &[u8],
        deliver: &mut impl FnMut(&mut Context<'_>, &[u8], u64),
    ) {
        let decoded = Header::decode(payload);
        if let Some((header, _)) = decoded
            && header.instance == self.instance
        {
            return; // its frames reached this instance's clients already
        }
        let Some((header, body)) = decoded.filter(|(h, body)| self.whole(body, h.frames)) else {
            self.foreign(payload.len());
            return;
        };
        let missed = self.gaps.missed_before(&header);
        Counters::add(&self.counters.missed, missed);
        Counters::add(&self.counters.frames_in, header.frames);
        deliver(ctx, body, header.frames);
    }

    /// True if `body` is exactly `frames` whole frames of this hub's framing.
    fn whole(&self, body: &[u8], frames: u64) -> bool {
        let mut codec = self.codec.clone();
        let done = frames::decode_all(&mut codec, body, |_, _| Ok(()));
        done.error.is_none() && done.used == body.len() && done.frames == frames
    }

    fn foreign(&mut self, len: usize) {
        self.foreign += 1;
        Counters::add(&self.counters.foreign, 1);
        if self.foreign % WARN_EVERY == 1 {
            warn!(
                "federation: a {len}-byte message on {} was not a hub's batch \
                 (no {HEADER_LEN}-byte header, or other framing); dropped ({} so far)",
                self.settings.target.channel, self.foreign
            );
        }
    }
}
