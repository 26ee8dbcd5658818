//! What a reactor counts, for operators, tests and people studying the loop.

use std::fmt::{self, Write};
use std::time::Duration;

use super::close::CloseReason;
use super::token::ConnId;
use crate::sys::Addr;

/// Counters since the reactor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every connection taken from a listener, including those closed at once
    /// for the limit.
    pub accepted: u64,
    /// Outgoing connections established.
    pub connected: u64,
    /// Outgoing connects that failed or timed out.
    pub connect_failed: u64,
    /// Connections open now.
    pub active: u64,
    /// Connections closed; [`closed_by`](Self::closed_by) says why.
    pub closed: u64,
    /// Closes per [`CloseReason`]; see [`Stats::closed_by`].
    pub(crate) closed_by: [u64; CloseReason::COUNT],
    /// Bytes of the connections' streams, read and written: what services
    /// (and the metrics responder) read and write, plaintext for TLS. What
    /// the reactor alone deals in is left out: a PROXY header read, TLS
    /// handshakes and record framing (a relay's outgoing PROXY header is
    /// the relay's own writing, so it counts).
    pub bytes_in: u64,
    /// Bytes written to the connections' streams, counted as `bytes_in` is.
    pub bytes_out: u64,
    /// Of `bytes_out`, those moved by splice(2), never copied through user space.
    pub bytes_spliced: u64,
    /// Frames decoded from peers, as services report them.
    pub frames_in: u64,
    /// Frames encoded to peers, as services report them.
    pub frames_out: u64,
    /// Connections that closed with a partial frame buffered.
    pub truncated_frames: u64,
    /// The largest backlog of unsent output any connection has had.
    pub peak_pending_output: usize,
    /// Unsent output all connections hold now: what
    /// [`Config::max_buffered`](super::Config::max_buffered) bounds.
    pub buffered_output: usize,
    /// Times a connection stopped being read because the output of all
    /// connections was over half the budget and its own backed up.
    pub budget_pauses: u64,
    /// Calls to the poller's wait.
    pub polls: u64,
    /// Events those waits returned.
    pub events: u64,
    /// Read calls on connections, splice(2) from a socket included.
    pub reads: u64,
    /// Reads that found nothing (EAGAIN): the waste a reactor tries to avoid.
    pub eagain_reads: u64,
    /// Write calls on connections, splice(2) to a socket included.
    pub writes: u64,
    /// Writes the kernel took nothing of (EAGAIN): a peer that reads slower
    /// than we write.
    pub eagain_writes: u64,
    /// Calls that change what the poller watches. Registration is once per
    /// fd, so this is two per connection (add, delete), never per message.
    pub interest_changes: u64,
    /// Events for a connection that had already gone.
    pub stale_events: u64,
    /// TLS handshakes done.
    pub tls_handshakes: u64,
    /// TLS handshakes failed, timed out included.
    pub tls_failures: u64,
    /// PROXY protocol headers read.
    pub proxy_headers: u64,
    /// Connections closed for lack of a valid PROXY header, timed out included.
    pub proxy_failures: u64,
    /// Metrics connections closed at once because as many as the metrics
    /// listener takes were open already.
    pub metrics_refused: u64,
    /// Metrics connections closed without a whole request head in time.
    pub metrics_timeouts: u64,
}

impl Stats {
    /// How many connections ended for this reason (any error kind counts as one).
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed_by[reason.slot()]
    }

    /// Adds `other`'s counts to these: the totals of several reactors (the
    /// peak backlog is the larger of the two).
    pub fn add(&mut self, other: &Stats) {
        let Stats {
            accepted,
            connected,
            connect_failed,
            active,
            closed,
            closed_by,
            bytes_in,
            bytes_out,
            bytes_spliced,
            frames_in,
            frames_out,
            truncated_frames,
            peak_pending_output,
            buffered_output,
            budget_pauses,
            polls,
            events,
            reads,
            eagain_reads,
            writes,
            eagain_writes,
            interest_changes,
            stale_events,
            tls_handshakes,
            tls_failures,
            proxy_headers,
            proxy_failures,
            metrics_refused,
            metrics_timeouts,
        } = *other;
        for (sum, n) in self.closed_by.iter_mut().zip(closed_by) {
            *sum += n;
        }
        self.peak_pending_output = self.peak_pending_output.max(peak_pending_output);
        self.buffered_output += buffered_output;
        for (sum, n) in [
            (&mut self.accepted, accepted),
            (&mut self.connected, connected),
            (&mut self.connect_failed, connect_failed),
            (&mut self.active, active),
            (&mut self.closed, closed),
            (&mut self.bytes_in, bytes_in),
            (&mut self.bytes_out, bytes_out),
            (&mut self.bytes_spliced, bytes_spliced),
            (&mut self.frames_in, frames_in),
            (&mut self.frames_out, frames_out),
            (&mut self.truncated_frames, truncated_frames),
            (&mut self.budget_pauses, budget_pauses),
            (&mut self.polls, polls),
            (&mut self.events, events),
            (&mut self.reads, reads),
            (&mut self.eagain_reads, eagain_reads),
            (&mut self.writes, writes),
            (&mut self.eagain_writes, eagain_writes),
            (&mut self.interest_changes, interest_changes),
            (&mut self.stale_events, stale_events),
            (&mut self.proxy_headers, proxy_headers),
            (&mut self.proxy_failures, proxy_failures),
            (&mut self.tls_handshakes, tls_handshakes),
            (&mut self.tls_failures, tls_failures),
            (&mut self.metrics_refused, metrics_refused),
            (&mut self.metrics_timeouts, metrics_timeouts),
        ] {
            *sum += n;
        }
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closed += 1;
        self.closed_by[reason.slot()] += 1;
    }
}

/// One line: what an operator wants to see every few seconds.
impl fmt::Display for Stats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "active {}, accepted {}, closed {}",
            self.active, self.accepted, self.closed
        )?;
        let mut reasons = CloseReason::NAMES
            .iter()
            .zip(self.closed_by)
            .filter(|&(_, n)| n > 0);
        if let Some((name, n)) = reasons.next() {
            write!(f, " ({name} {n}")?;
            for (name, n) in reasons {
                write!(f, ", {name} {n}")?;
            }
            f.write_str(")")?;
        }
        let per_wait = self.events as f64 / self.polls.max(1) as f64;
        write!(
            f,
            "; bytes in {}, out {}; frames in {}, out {}; waits {} ({per_wait:.1} events each); \
             reads {} (EAGAIN {}); writes {} (EAGAIN {}); interest changes {}; \
             output buffered {} (paused for the budget {})",
            self.bytes_in,
            self.bytes_out,
            self.frames_in,
            self.frames_out,
            self.polls,
            self.reads,
            self.eagain_reads,
            self.writes,
            self.eagain_writes,
            self.interest_changes,
            self.buffered_output,
            self.budget_pauses,
        )
    }
}

/// One open connection, as the reactor sees it.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    /// The connection's id, as its service knows it.
    pub id: ConnId,
    /// The peer's address.
    pub peer: Addr,
    /// Time since it was accepted, or since its connect started.
    pub age: Duration,
    /// Bytes read from its stream, counted as [`Stats::bytes_in`] is.
    pub bytes_in: u64,
    /// Bytes written to its stream.
    pub bytes_out: u64,
    /// Bytes queued that the kernel has not taken yet.
    pub pending_output: usize,
    /// False while paused, backpressured or closing.
    pub reading: bool,
    /// connecting, handshaking, open, paused, backpressured, read-closed,
    /// write-closed, draining, closing or lingering.
    pub state: &'static str,
    /// For a TLS connection: the protocol, cipher suite, server name (SNI)
    /// and ALPN protocol, as far as they are known.
    pub tls: Option<String>,
}

/// The connection table, like a tiny `ss`.
pub fn format_table(conns: &[ConnInfo]) -> String {
    format_tables(&[conns])
}

/// One connection table for several reactors: with more than one, each id
/// is prefixed with its reactor's number (`1/c12`), as ids repeat across them.
pub fn format_tables(reactors: &[&[ConnInfo]]) -> String {
    let mut out = format!(
        "{:<10} {:<40} {:>9} {:>12} {:>12} {:>10} {:<14} {}\n",
        "id", "peer", "age", "bytes in", "bytes out", "pending", "state", "tls"
    );
    for (reactor, conns) in reactors.iter().enumerate() {
        for c in *conns {
            let id = match reactors.len() {
                1 => c.id.to_string(),
                _ => format!("{reactor}/{}", c.id),
            };
            let _ = writeln!(
                out,
                "{:<10} {:<40} {:>8.1}s {:>12} {:>12} {:>10} {:<14} {}",
                id,
                c.peer.to_string(),
                c.age.as_secs_f64(),
                c.bytes_in,
                c.bytes_out,
                c.pending_output,
                c.state,
                c.tls.as_deref().unwrap_or("-")
            );
        }
    }
    let total: usize = reactors.iter().map(|conns| conns.len()).sum();
    let _ = write!(out, "{total} connections");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_close_reasons_only_when_there_are_some() {
        let mut stats = Stats {
            polls: 2,
            events: 3,
            ..Stats::default()
        };
        let line = stats.to_string();
        assert!(
            line.starts_with("active 0, accepted 0, closed 0; bytes in 0,"),
            "{line}"
        );
        assert!(line.contains("waits 2 (1.5 events each)"), "{line}");

        stats.closed = 3;
        stats.closed_by[CloseReason::Peer.slot()] = 2;
        stats.closed_by[CloseReason::Idle.slot()] = 1;
        let line = stats.to_string();
        assert!(line.contains("closed 3 (peer 2, idle 1); bytes"), "{line}");
    }

    #[test]
    fn the_sum_of_reactors_adds_every_count_and_keeps_the_largest_peak() {
        let mut one = Stats {
            accepted: 3,
            bytes_out: 10,
            peak_pending_output: 7,
            buffered_output: 5,
            budget_pauses: 1,
            tls_failures: 1,
            ..Stats::default()
        };
        one.count_close(CloseReason::Peer);
        let mut two = Stats {
            accepted: 4,
            bytes_out: 5,
            peak_pending_output: 2,
            buffered_output: 6,
            budget_pauses: 2,
            ..Stats::default()
        };
        two.count_close(CloseReason::Idle);
        one.add(&two);
        assert_eq!((one.accepted, one.bytes_out, one.closed), (7, 15, 2));
        assert_eq!((one.buffered_output, one.budget_pauses), (11, 3));
        assert_eq!((one.peak_pending_output, one.tls_failures), (7, 1));
        assert_eq!(one.closed_by(CloseReason::Peer), 1);
        assert_eq!(one.closed_by(CloseReason::Idle), 1);
    }
}
