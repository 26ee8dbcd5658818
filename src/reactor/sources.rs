//! Limits per source address: how many connections one client address may
//! hold open at once, and how fast it may open new ones (a token bucket),
//! in a table of bounded size that no number of sources can grow.
//!
//! The table keeps one entry per source that has connections open, or
//! whose bucket is not full again yet (it connected lately). When a new
//! source finds it full, entries that hold nothing (no connection open, a
//! full bucket) are dropped; if that frees less than an eighth of it, more
//! entries with no connection open are dropped (forgetting how fast they
//! connected lately: the price of more sources than room). An entry with a
//! connection open is never dropped, so no flood of other sources can make
//! the table forget a source's open connections and let it past its limit;
//! when every entry has one open, a new source is refused.
//!
//! One table serves all the reactors of a server ([`Sources`] is a shared
//! handle): the kernel spreads a source's connections over the reactors
//! (`SO_REUSEPORT` hashes source port and all), so tables of their own
//! would each allow the limit again.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What each source may do. A source is a client's IP address: the one a
/// trusted PROXY header names, else the socket's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// Connections one source may have open at once.
    pub max_conns: Option<u32>,
    /// New connections one source may open per second, in bursts of as
    /// many (a token bucket of that size, refilled at that rate).
    pub rate: Option<u32>,
    /// Sources the table keeps at most.
    pub capacity: usize,
}

impl SourceLimits {
    /// The table's size unless told otherwise: more than the connections a
    /// process here can hold (20,000 descriptors), so that it cannot fill
    /// up with sources that have connections open. Full, it takes about
    /// 7 MiB (a hash table of 131,072 slots of 56 bytes and a control byte).
    pub const DEFAULT_CAPACITY: usize = 65_536;
}

/// Why a source was refused a new connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// It has `max_conns` open.
    Conns,
    /// Its bucket is empty: it connected faster than `rate`.
    Rate,
    /// It is new and every entry of the table has a connection open.
    TableFull,
}

/// One source's books.
#[derive(Debug)]
struct Entry {
    open: u32,
    /// Connections it may open now (at most `rate`), as of `refilled`.
    tokens: f64,
    refilled: Instant,
}

impl Entry {
    /// `tokens` brought up to `now` at `rate` a second; true if the
    /// bucket is full (or there is none): the entry says nothing a new
    /// one would not.
    fn refill(&mut self, rate: Option<u32>, now: Instant) -> bool {
        let Some(rate) = rate.map(f64::from) else {
            return true;
        };
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.refilled = now;
        self.tokens >= rate
    }
}

/// The books of every source, bounded by `SourceLimits::capacity`.
#[derive(Debug)]
pub(crate) struct SourceTable {
    limits: SourceLimits,
    entries: HashMap<IpAddr, Entry>,
    /// Entries with a connection open: never dropped.
    live: usize,
}

impl SourceTable {
    pub(crate) fn new(limits: SourceLimits) -> SourceTable {
        SourceTable {
            limits,
            entries: HashMap::new(),
            live: 0,
        }
    }

    /// Counts a new connection from `source` at `now`, or says why not.
    pub(crate) fn admit(&mut self, source: IpAddr, now: Instant) -> Result<(), Refusal> {
        let source = source.to_canonical();
        let limits = self.limits;
        if !self.entries.contains_key(&source)
            && self.entries.len() >= limits.capacity
            && !self.make_room(now)
        {
            return Err(Refusal::TableFull);
        }
        let entry = self.entries.entry(source).or_insert_with(|| Entry {
            open: 0,
            tokens: limits.rate.map_or(0.0, f64::from),
            refilled: now,
        });
        if limits.max_conns.is_some_and(|max| entry.open >= max) {
            return Err(Refusal::Conns);
        }
        if limits.rate.is_some() {
            entry.refill(limits.rate, now);
            if entry.tokens < 1.0 {
                return Err(Refusal::Rate);
            }
            entry.tokens -= 1.0;
        }
        if entry.open == 0 {
            self.live += 1;
        }
        entry.open += 1;
        Ok(())
    }

    /// A connection `admit` counted for `source` has closed.
    pub(crate) fn release(&mut self, source: IpAddr) {
        let source = source.to_canonical();
        let Some(entry) = self.entries.get_mut(&source).filter(|e| e.open > 0) else {
            return;
        };
        entry.open -= 1;
        if entry.open == 0 {
            self.live -= 1;
            // Without a rate, an idle source has nothing to remember.
            if self.limits.rate.is_none() {
                self.entries.remove(&source);
            }
        }
    }

    /// How many sources the table holds now.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops entries with no connection open, those with a full bucket
    /// first, until an eighth of the table is free (or no such entry is
    /// left); true if there is room for one more.
    fn make_room(&mut self, now: Instant) -> bool {
        if self.live >= self.limits.capacity {
            return false;
        }
        let rate = self.limits.rate;
        self.entries
            .retain(|_, e| e.open > 0 || !e.refill(rate, now));
        let wanted = self.limits.capacity.div_ceil(8);
        let mut free = self.limits.capacity.saturating_sub(self.entries.len());
        if free < wanted {
            self.entries.retain(|_, e| {
                let drop = e.open == 0 && free < wanted;
                free += usize::from(drop);
                !drop
            });
        }
        self.entries.len() < self.limits.capacity
    }
}

/// One `SourceTable`, shared by whoever holds a clone: every reactor of
/// a server counts against the same limits.
#[derive(Clone)]
pub struct Sources(Arc<Mutex<SourceTable>>);

impl Sources {
    /// A table for `limits`, empty.
    pub fn new(limits: SourceLimits) -> Sources {
        Sources(Arc::new(Mutex::new(SourceTable::new(limits))))
    }

    /// The limits it applies.
    pub fn limits(&self) -> SourceLimits {
        self.table().limits
    }

    pub(crate) fn table(&self) -> MutexGuard<'_, SourceTable> {
        // A reactor that panicked holding it left the counts whole: each
        // change is one statement on plain numbers.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Not `table()`: this thread may be the one holding it.
        match self.0.try_lock() {
            Ok(table) => write!(f, "Sources({:?}, {} entries)", table.limits, table.len()),
            Err(_) => f.write_str("Sources(in use)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;
    use std::time::Duration;

    use super::*;

    fn source(n: u32) -> IpAddr {
        IpAddr::V4(Ipv4Addr::from(0x7f00_0000 + n))
    }

    fn table(max_conns: Option<u32>, rate: Option<u32>, capacity: usize) -> SourceTable {
        SourceTable::new(SourceLimits {
            max_conns,
            rate,
            capacity,
        })
    }

    #[test]
    fn a_source_at_its_limit_is_refused_until_one_of_its_connections_closes() {
        let now = Instant::now();
        let mut t = table(Some(2), None, 16);
        assert_eq!(t.admit(source(1), now), Ok(()));
        assert_eq!(t.admit(source(1), now), Ok(()));
        assert_eq!(t.admit(source(1), now), Err(Refusal::Conns));
        // The same host seen through a [::] listener is the same source.
        let mapped = "::ffff:127.0.0.1".parse().unwrap();
        assert_eq!(t.admit(mapped, now), Err(Refusal::Conns));
        assert_eq!(t.admit(source(2), now), Ok(()));
        t.release(source(1));
        assert_eq!(t.admit(source(1), now), Ok(()));
        for _ in 0..3 {
            t.release(source(1));
        }
        t.release(source(2));
        assert_eq!(t.len(), 0, "without a rate, idle sources are forgotten");
    }

    #[test]
    fn a_bucket_allows_a_burst_then_its_rate() {
        let start = Instant::now();
        let mut t = table(None, Some(3), 16);
        for _ in 0..3 {
            assert_eq!(t.admit(source(1), start), Ok(()));
            t.release(source(1));
        }
        assert_eq!(t.admit(source(1), start), Err(Refusal::Rate));
        assert_eq!(t.admit(source(2), start), Ok(()), "each source has its own");
        let later = start + Duration::from_millis(400); // 1.2 tokens back
        assert_eq!(t.admit(source(1), later), Ok(()));
        assert_eq!(t.admit(source(1), later), Err(Refusal::Rate));
    }

    #[test]
    fn many_sources_never_grow_the_table_nor_push_out_one_with_connections_open() {
        let now = Instant::now();
        let mut t = table(Some(1), Some(1), 64);
        assert_eq!(t.admit(source(0), now), Ok(()));
        for n in 1..10_000 {
            if t.admit(source(n), now).is_ok() {
                t.release(source(n));
            }
            assert!(t.len() <= 64);
        }
        assert_eq!(t.admit(source(0), now), Err(Refusal::Conns));
        // Sixty-four sources each holding a connection: a new one finds no room.
        let mut t = table(Some(1), None, 64);
        for n in 0..64 {
            assert_eq!(t.admit(source(n), now), Ok(()));
        }
        assert_eq!(t.admit(source(64), now), Err(Refusal::TableFull));
        t.release(source(5));
        assert_eq!(t.admit(source(64), now), Ok(()));
    }

    #[test]
    fn entries_that_hold_nothing_go_first() {
        let start = Instant::now();
        let mut t = table(None, Some(1), 8);
        for n in 1..8 {
            assert_eq!(t.admit(source(n), start), Ok(()));
            t.release(source(n));
        }
        let later = start + Duration::from_millis(500);
        assert_eq!(t.admit(source(0), later), Ok(()));
        t.release(source(0));
        // Full; by `then` the buckets of 1..8 are full again, 0's is not.
        let then = start + Duration::from_millis(1050);
        assert_eq!(t.admit(source(8), then), Ok(()));
        assert_eq!(t.len(), 2);
        assert_eq!(t.admit(source(0), then), Err(Refusal::Rate));
    }
}
