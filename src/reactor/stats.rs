//! What a reactor counts, for operators, tests and people studying the loop.

use std::net::SocketAddr;
use std::time::Duration;

use super::service::CloseReason;
use super::token::ConnId;

/// Counters since the reactor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub accepted: u64,
    /// Accepted and closed at once: over `max_conns`.
    pub rejected: u64,
    pub active: u64,
    pub closed: u64,
    /// Closes per [`CloseReason`]; see [`Stats::closed_by`].
    pub(crate) closed_by: [u64; CloseReason::COUNT],
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// The largest backlog of unsent output any connection has had.
    pub peak_pending_output: usize,
    /// Calls to the poller's wait, and the events they returned.
    pub polls: u64,
    pub events: u64,
    pub reads: u64,
    /// Reads that found nothing (EAGAIN): the waste a reactor tries to avoid.
    pub eagain_reads: u64,
    pub writes: u64,
    /// Events for a connection that had already gone.
    pub stale_events: u64,
}

impl Stats {
    /// How many connections ended for this reason (any error kind counts as one).
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed_by[reason.slot()]
    }
}

/// One open connection, as the reactor sees it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: ConnId,
    pub peer: SocketAddr,
    pub age: Duration,
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Bytes queued that the kernel has not taken yet.
    pub pending_output: usize,
    /// False while paused, backpressured or closing.
    pub reading: bool,
}
