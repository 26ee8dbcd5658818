//! What a reactor counts, for operators, tests and people studying the loop.

use std::fmt::{self, Write};
use std::time::Duration;

use super::close::CloseReason;
use super::token::ConnId;
use crate::metrics::{MetricKind, MetricsText};
use crate::sys::Addr;

/// Counters since the reactor started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every connection taken from a listener, including those closed at once
    /// for the limit.
    pub accepted: u64,
    /// Outgoing connections established, and those that failed or timed out.
    pub connected: u64,
    pub connect_failed: u64,
    pub active: u64,
    pub closed: u64,
    /// Closes per [`CloseReason`]; see [`Stats::closed_by`].
    pub(crate) closed_by: [u64; CloseReason::COUNT],
    /// Bytes of the connections' streams, read and written: what services
    /// (and the metrics responder) read and write, plaintext for TLS. What
    /// the reactor alone deals in is left out: a PROXY header read, TLS
    /// handshakes and record framing (a relay's outgoing PROXY header is
    /// the relay's own writing, so it counts).
    pub bytes_in: u64,
    pub bytes_out: u64,
    /// Of `bytes_out`, those moved by splice(2), never copied through user space.
    pub bytes_spliced: u64,
    /// Frames decoded from peers and encoded to them, as services report them.
    pub frames_in: u64,
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
    /// Calls to the poller's wait, and the events they returned.
    pub polls: u64,
    pub events: u64,
    pub reads: u64,
    /// Reads that found nothing (EAGAIN): the waste a reactor tries to avoid.
    pub eagain_reads: u64,
    pub writes: u64,
    pub eagain_writes: u64,
    /// Calls that change what the poller watches. Registration is once per
    /// fd, so this is two per connection (add, delete), never per message.
    pub interest_changes: u64,
    /// Events for a connection that had already gone.
    pub stale_events: u64,
    /// TLS handshakes done, and failed (timed out included).
    pub tls_handshakes: u64,
    pub tls_failures: u64,
    /// PROXY protocol headers read, and connections closed for lack of a
    /// valid one (timed out included).
    pub proxy_headers: u64,
    pub proxy_failures: u64,
    /// Metrics connections closed at once because as many as the metrics
    /// listener takes were open already, and those closed without a whole
    /// request head in time.
    pub metrics_refused: u64,
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

    /// The counters as Prometheus families, for the metrics page.
    pub(crate) fn write_metrics(&self, m: &mut MetricsText) {
        use MetricKind::{Counter, Gauge};
        let counters: [(&str, &str, u64); 24] = [
            (
                "sockloop_accepted_total",
                "Connections taken from a listener (the limit's included).",
                self.accepted,
            ),
            (
                "sockloop_connected_total",
                "Outgoing connections established.",
                self.connected,
            ),
            (
                "sockloop_connect_failures_total",
                "Outgoing connections that failed or timed out.",
                self.connect_failed,
            ),
            (
                "sockloop_received_bytes_total",
                "Bytes of the streams read from peers (TLS: plaintext; no PROXY header).",
                self.bytes_in,
            ),
            (
                "sockloop_sent_bytes_total",
                "Bytes of the streams written to peers (TLS: plaintext).",
                self.bytes_out,
            ),
            (
                "sockloop_spliced_bytes_total",
                "Of the bytes sent, those moved by splice(2).",
                self.bytes_spliced,
            ),
            (
                "sockloop_received_frames_total",
                "Frames decoded from peers, as the service counts them.",
                self.frames_in,
            ),
            (
                "sockloop_sent_frames_total",
                "Frames sent to peers, as the service counts them.",
                self.frames_out,
            ),
            (
                "sockloop_truncated_frames_total",
                "Connections that closed with a partial frame buffered.",
                self.truncated_frames,
            ),
            (
                "sockloop_polls_total",
                "Calls to the poller's wait.",
                self.polls,
            ),
            (
                "sockloop_events_total",
                "Readiness events the poller returned.",
                self.events,
            ),
            (
                "sockloop_reads_total",
                "read(2) and recv(2) calls.",
                self.reads,
            ),
            (
                "sockloop_eagain_reads_total",
                "Reads that found nothing (EAGAIN).",
                self.eagain_reads,
            ),
            (
                "sockloop_writes_total",
                "write(2) and send(2) calls.",
                self.writes,
            ),
            (
                "sockloop_eagain_writes_total",
                "Writes the kernel took nothing of (EAGAIN).",
                self.eagain_writes,
            ),
            (
                "sockloop_interest_changes_total",
                "Calls that change what the poller watches.",
                self.interest_changes,
            ),
            (
                "sockloop_stale_events_total",
                "Events for a connection that had already gone.",
                self.stale_events,
            ),
            (
                "sockloop_tls_handshakes_total",
                "TLS handshakes completed.",
                self.tls_handshakes,
            ),
            (
                "sockloop_tls_failures_total",
                "TLS handshakes that failed or timed out.",
                self.tls_failures,
            ),
            (
                "sockloop_proxy_headers_total",
                "PROXY protocol headers read.",
                self.proxy_headers,
            ),
            (
                "sockloop_proxy_failures_total",
                "Connections closed for lack of a valid PROXY header.",
                self.proxy_failures,
            ),
            (
                "sockloop_metrics_refused_total",
                "Metrics connections closed at once: as many as taken were open.",
                self.metrics_refused,
            ),
            (
                "sockloop_metrics_timeouts_total",
                "Metrics connections closed without a whole request head in time.",
                self.metrics_timeouts,
            ),
            (
                "sockloop_closed_total",
                "Connections closed, for any reason.",
                self.closed,
            ),
        ];
        for (name, help, value) in counters {
            m.single(name, Counter, help, value);
        }
        let name = "sockloop_closed_by_reason_total";
        m.family(name, Counter, "Connections closed, by reason.");
        for (reason, n) in CloseReason::NAMES.iter().zip(self.closed_by) {
            m.sample(name, &[("reason", reason)], n);
        }
        m.single(
            "sockloop_active_connections",
            Gauge,
            "Connections open now.",
            self.active,
        );
        let peak = self.peak_pending_output as u64;
        m.single(
            "sockloop_peak_pending_output_bytes",
            Gauge,
            "The largest backlog of unsent output any connection has had.",
            peak,
        );
        m.single(
            "sockloop_buffered_output_bytes",
            Gauge,
            "Unsent output all connections hold now (bounded by --max-buffered).",
            self.buffered_output as u64,
        );
        m.single(
            "sockloop_budget_pauses_total",
            Counter,
            "Connections not read because the output of all was over half of --max-buffered.",
            self.budget_pauses,
        );
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
    pub id: ConnId,
    pub peer: Addr,
    pub age: Duration,
    pub bytes_in: u64,
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

    #[test]
    fn every_sample_line_is_a_name_labels_and_a_value() {
        let mut page = MetricsText::default();
        let stats = Stats {
            accepted: 3,
            ..Stats::default()
        };
        stats.write_metrics(&mut page);
        page.family("x_state", MetricKind::Gauge, "Escapes.");
        page.sample("x_state", &[("a", "q\"b\\n"), ("b", "2")], 1);
        let text = page.as_str();
        assert!(
            text.contains("# TYPE sockloop_accepted_total counter\nsockloop_accepted_total 3\n")
        );
        assert!(text.contains("sockloop_closed_by_reason_total{reason=\"peer\"} 0\n"));
        assert!(text.contains("x_state{a=\"q\\\"b\\\\n\",b=\"2\"} 1\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, value) = line.rsplit_once(' ').expect("name and value");
            assert!(value.parse::<u64>().is_ok(), "{line}");
        }
    }
}
