//! Deadlines: two min-heaps.
//!
//! A connection's own deadlines (idle, write, frame, handshake, connect, a
//! metrics request) go in a compact heap of [`Deadline`]s that names the
//! connection and the kind: nothing is cancelled, an entry that surfaces
//! for a connection gone since (its [`ConnId`] misses) or a deadline moved
//! since is skipped or re-armed by the reactor. Connection timeouts are
//! re-armed lazily too (see the reactor), so traffic never touches the
//! heap: a timer fires, checks the connection's last activity, and either
//! acts or sets itself again for the real deadline. Each connection so
//! costs one entry, not an entry plus a map slot.
//!
//! The few other timers (a service's, resuming accepts, the shutdown
//! deadline, the stats and refusal reports) can be cancelled: a heap with
//! lazy cancellation — cancelling only forgets the timer, and its entry is
//! skipped when it surfaces.

use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use super::token::ConnId;

/// Names one armed timer, so it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// A point in time as nanoseconds since the reactor's clock started: half
/// the size of an `Instant`, for what each connection keeps.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// `self` plus `d`.
    pub(crate) fn after(self, d: Duration) -> Stamp {
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        Stamp(self.0.saturating_add(nanos))
    }
}

/// A connection's own deadlines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum ConnTimer {
    Idle,
    Write,
    /// A partial message must be complete by now.
    Frame,
    /// A TLS handshake must be done by now.
    Handshake,
    /// An outgoing connect that must be up by now.
    Connect,
    /// A metrics connection must have sent its request head by now.
    Request,
}

/// What happens when a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    Conn(ConnId, ConnTimer),
    /// Set by the service, for one of its connections.
    Service(ConnId, u64),
    /// Set by the service for no connection ([`Context::set_alarm`](super::Context::set_alarm)).
    Alarm(u64),
    /// Accepting was paused after the process ran out of file descriptors.
    ResumeAccept(usize),
    ShutdownDeadline,
    StatsReport,
    /// Time to log the connections refused for the limit since the last line.
    RefusalReport,
}

/// One entry of the connections' heap: 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Deadline {
    at: Stamp,
    id: ConnId,
    what: ConnTimer,
}

impl Ord for Deadline {
    fn cmp(&self, other: &Self) -> Ordering {
        let key = |d: &Deadline| (d.at, d.id.index(), d.id.generation(), d.what);
        key(self).cmp(&key(other))
    }
}

impl PartialOrd for Deadline {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

pub(crate) struct Timers {
    /// Where stamps count from.
    epoch: Instant,
    conns: BinaryHeap<Reverse<Deadline>>,
    /// Past this length the connections' heap drops the entries of
    /// connections that are gone (then it is set to twice what is left).
    compact_at: usize,
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    armed: HashMap<TimerId, TimerKind>,
    next: u64,
}

const COMPACT_MIN: usize = 64;

impl Timers {
    pub(crate) fn new(epoch: Instant) -> Timers {
        Timers {
            epoch,
            conns: BinaryHeap::new(),
            compact_at: COMPACT_MIN,
            heap: BinaryHeap::new(),
            armed: HashMap::new(),
            next: 0,
        }
    }

    pub(crate) fn stamp(&self, at: Instant) -> Stamp {
        let since = at.saturating_duration_since(self.epoch);
        Stamp(u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
    }

    pub(crate) fn instant(&self, stamp: Stamp) -> Instant {
        self.epoch + Duration::from_nanos(stamp.0)
    }

    /// Sets `id`'s timer `what` for `at`. Entries of connections for which
    /// `exists` says no are dropped now and then, so that connections that
    /// closed before their deadlines do not pile up.
    pub(crate) fn add_conn(
        &mut self,
        at: Stamp,
        id: ConnId,
        what: ConnTimer,
        exists: impl Fn(ConnId) -> bool,
    ) {
        self.conns.push(Reverse(Deadline { at, id, what }));
        if self.conns.len() > self.compact_at {
            self.conns.retain(|Reverse(d)| exists(d.id));
            self.compact_at = (2 * self.conns.len()).max(COMPACT_MIN);
        }
    }

    pub(crate) fn add(&mut self, at: Instant, kind: TimerKind) -> TimerId {
        let id = TimerId(self.next);
        self.next += 1;
        self.heap.push(Reverse((at, id)));
        self.armed.insert(id, kind);
        // Lazy cancellation must not let dead entries pile up.
        if self.heap.len() > 2 * self.armed.len() + COMPACT_MIN {
            let armed = &self.armed;
            self.heap.retain(|Reverse((_, id))| armed.contains_key(id));
        }
        id
    }

    pub(crate) fn cancel(&mut self, id: TimerId) {
        self.armed.remove(&id);
    }

    /// The earliest deadline still armed.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        let conn = self.conns.peek().map(|Reverse(d)| self.instant(d.at));
        let other = self.next_other();
        match (conn, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The earliest deadline of the cancellable timers, dropping cancelled ones.
    fn next_other(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.armed.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// One timer due at `now`, disarmed as it is returned. Of two due at
    /// the same time, a connection's goes first.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<TimerKind> {
        let conn = self.conns.peek().map(|Reverse(d)| self.instant(d.at));
        let conn = conn.filter(|&at| at <= now);
        let other = self.next_other().filter(|&at| at <= now);
        let conn_first = match (conn, other) {
            (None, None) => return None,
            (Some(a), Some(b)) => a <= b,
            (a, _) => a.is_some(),
        };
        if conn_first {
            let Reverse(d) = self.conns.pop()?;
            return Some(TimerKind::Conn(d.id, d.what));
        }
        let Reverse((_, id)) = self.heap.pop()?;
        self.armed.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::token::Table;

    #[test]
    fn fires_in_deadline_order_and_skips_cancelled() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::new(t0);
        let mut table = Table::new();
        let conn = table.insert(());
        timers.add(ms(30), TimerKind::StatsReport);
        timers.add(ms(10), TimerKind::ShutdownDeadline);
        let cancelled = timers.add(ms(20), TimerKind::ResumeAccept(0));
        timers.cancel(cancelled);
        let idle = timers.stamp(ms(15));
        timers.add_conn(idle, conn, ConnTimer::Idle, |_| true);
        assert_eq!(timers.next_deadline(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None);
        assert_eq!(timers.pop_due(ms(25)), Some(TimerKind::ShutdownDeadline));
        assert_eq!(
            timers.pop_due(ms(25)),
            Some(TimerKind::Conn(conn, ConnTimer::Idle))
        );
        assert_eq!(
            timers.pop_due(ms(25)),
            None,
            "the cancelled one never fires"
        );
        assert_eq!(timers.next_deadline(), Some(ms(30)));
        assert_eq!(timers.pop_due(ms(30)), Some(TimerKind::StatsReport));
        assert_eq!(timers.next_deadline(), None);
    }

    /// Every connection with an idle timeout keeps one entry in the heap.
    #[test]
    fn a_deadline_is_24_bytes() {
        assert!(std::mem::size_of::<Reverse<Deadline>>() <= 24);
    }

    #[test]
    fn stamps_round_trip_exactly() {
        let t0 = Instant::now();
        let timers = Timers::new(t0);
        let at = t0 + Duration::new(3, 123_456_789);
        assert_eq!(timers.instant(timers.stamp(at)), at);
        assert_eq!(
            timers.stamp(t0).after(Duration::from_millis(5)),
            timers.stamp(t0 + Duration::from_millis(5))
        );
    }

    #[test]
    fn cancelled_entries_do_not_pile_up() {
        let now = Instant::now();
        let mut timers = Timers::new(now);
        for _ in 0..10_000 {
            let id = timers.add(now, TimerKind::StatsReport);
            timers.cancel(id);
        }
        assert!(
            timers.heap.len() <= COMPACT_MIN + 1,
            "heap kept {} dead entries",
            timers.heap.len()
        );
    }

    #[test]
    fn deadlines_of_closed_connections_do_not_pile_up() {
        let now = Instant::now();
        let mut timers = Timers::new(now);
        let mut table = Table::new();
        let kept = table.insert(());
        timers.add_conn(Stamp(1), kept, ConnTimer::Idle, |_| true);
        for _ in 0..10_000 {
            let id = table.insert(());
            timers.add_conn(Stamp(2), id, ConnTimer::Idle, |id| table.get(id).is_some());
            table.remove(id);
        }
        assert!(
            timers.conns.len() <= COMPACT_MIN + 1,
            "heap kept {} entries of closed connections",
            timers.conns.len()
        );
        assert_eq!(
            timers.pop_due(now + Duration::from_secs(1)),
            Some(TimerKind::Conn(kept, ConnTimer::Idle)),
            "a live connection's deadline is kept"
        );
    }
}
