//! Deadlines: a min-heap with lazy cancellation.
//!
//! Cancelling only forgets the timer; its heap entry is skipped when it
//! surfaces. Connection timeouts are re-armed lazily too (see the reactor), so
//! traffic never touches the heap: a timer fires, checks the connection's last
//! activity, and either acts or sets itself again for the real deadline.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::Instant;

use super::token::ConnId;

/// Names one armed timer, so it can be cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId(u64);

/// What happens when a timer fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimerKind {
    Idle(ConnId),
    Write(ConnId),
    /// A partial message must be complete by now.
    Frame(ConnId),
    /// A TLS handshake must be done by now.
    Handshake(ConnId),
    /// An outgoing connect that must be up by now.
    Connect(ConnId),
    /// Set by the service, for one of its connections.
    Service(ConnId, u64),
    /// Accepting was paused after the process ran out of file descriptors.
    ResumeAccept(usize),
    ShutdownDeadline,
    StatsReport,
}

#[derive(Default)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, TimerId)>>,
    armed: HashMap<TimerId, TimerKind>,
    next: u64,
}

impl Timers {
    pub(crate) fn add(&mut self, at: Instant, kind: TimerKind) -> TimerId {
        let id = TimerId(self.next);
        self.next += 1;
        self.heap.push(Reverse((at, id)));
        self.armed.insert(id, kind);
        // Lazy cancellation must not let dead entries pile up.
        if self.heap.len() > 2 * self.armed.len() + 64 {
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
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if self.armed.contains_key(&id) {
                return Some(at);
            }
            self.heap.pop();
        }
        None
    }

    /// One timer due at `now`, disarmed as it is returned.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<(TimerId, TimerKind)> {
        while let Some(&Reverse((at, id))) = self.heap.peek() {
            if at > now {
                return None;
            }
            self.heap.pop();
            if let Some(kind) = self.armed.remove(&id) {
                return Some((id, kind));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fires_in_deadline_order_and_skips_cancelled() {
        let t0 = Instant::now();
        let ms = |n| t0 + Duration::from_millis(n);
        let mut timers = Timers::default();
        let late = timers.add(ms(30), TimerKind::StatsReport);
        let early = timers.add(ms(10), TimerKind::ShutdownDeadline);
        let cancelled = timers.add(ms(20), TimerKind::ResumeAccept(0));
        timers.cancel(cancelled);
        assert_eq!(timers.next_deadline(), Some(ms(10)));
        assert_eq!(timers.pop_due(ms(5)), None);
        assert_eq!(
            timers.pop_due(ms(25)),
            Some((early, TimerKind::ShutdownDeadline))
        );
        assert_eq!(
            timers.pop_due(ms(25)),
            None,
            "the cancelled one never fires"
        );
        assert_eq!(timers.next_deadline(), Some(ms(30)));
        assert_eq!(timers.pop_due(ms(30)), Some((late, TimerKind::StatsReport)));
        assert_eq!(timers.next_deadline(), None);
    }

    #[test]
    fn cancelled_entries_do_not_pile_up() {
        let now = Instant::now();
        let mut timers = Timers::default();
        for _ in 0..10_000 {
            let id = timers.add(now, TimerKind::StatsReport);
            timers.cancel(id);
        }
        assert!(
            timers.heap.len() <= 64 + 1,
            "heap kept {} dead entries",
            timers.heap.len()
        );
    }
}
