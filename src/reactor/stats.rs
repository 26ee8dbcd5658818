//! What a reactor counts, for operators, tests and people studying the loop.
//!
//! Each counter is declared once, in the list given to `declare_stats!`
//! below: that one line makes the field of [`Stats`], its part in summing
//! several reactors ([`Stats::add`]), its family on the metrics page and,
//! if it has one, its part in the stats line (`Display`).

use std::fmt::{self, Write};
use std::time::Duration;

use super::close::CloseReason;
use super::token::ConnId;
use crate::metrics::{MetricKind, MetricsText};
use crate::sys::Addr;

/// Makes, from one list of counters, the struct [`Stats`], [`Stats::add`],
/// [`Stats::write_metrics`] and the stats line (`Display`). A counter is
/// one line after its doc comment; adding one is adding its line, and
/// counting it where it happens.
///
/// ```text
/// /// HELP text: the first line of the doc, a whole sentence.
/// /// More lines, for rustdoc only.
/// pub FIELD: TYPE = KIND "PROMETHEUS_NAME", line "PART OF THE LINE";
/// ```
///
/// - KIND: `counter` (only grows; summed across reactors), `gauge` (goes up
///   and down; summed), `peak` (the largest seen: across reactors, the
///   largest of them; a gauge on the metrics page) or `by_reason` (one
///   count per [`CloseReason`]: a counter with a `reason` label).
/// - `line "..."` (optional): the counter's part of the stats line, `{}`
///   standing for its value; the parts follow one another in the list's
///   order. `with METHOD` after it shows what that method returns instead.
///   A `by_reason` part is left out while every count is 0.
macro_rules! declare_stats {
    ($(
        #[doc = $help:literal]
        $(#[doc = $detail:literal])*
        $vis:vis $field:ident: $ty:ty = $kind:ident $metric:literal
            $(, line $line:literal $(with $shown:ident)?)?;
    )*) => {
        /// Counters since the reactor started.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct Stats {
            $(
                #[doc = $help]
                $(#[doc = $detail])*
                $vis $field: $ty,
            )*
        }

        impl Stats {
            /// Adds `other`'s counts to these: the totals of several reactors
            /// (of a peak, the larger of the two).
            pub fn add(&mut self, other: &Stats) {
                $( by_kind!(add $kind, self.$field, other.$field); )*
            }

            /// The counters as Prometheus families, for the metrics page.
            pub(crate) fn write_metrics(&self, out: &mut MetricsText) {
                $( by_kind!(write $kind, out, $metric, $help.trim(), self.$field); )*
            }
        }

        /// One line: what an operator wants to see every few seconds.
        impl fmt::Display for Stats {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                $($(
                    by_kind!(show $kind, f, $line, self.$field $(, self.$shown())?);
                )?)*
                Ok(())
            }
        }
    };
}

/// What each kind of counter does: how two reactors' counts make one
/// (`add`), how it is written on the metrics page (`write`), how it is
/// shown in the stats line (`show`).
macro_rules! by_kind {
    (add counter, $sum:expr, $n:expr) => {
        $sum += $n
    };
    (add gauge, $sum:expr, $n:expr) => {
        $sum += $n
    };
    (add peak, $sum:expr, $n:expr) => {
        $sum = $sum.max($n)
    };
    (add by_reason, $sums:expr, $ns:expr) => {
        for (sum, n) in $sums.iter_mut().zip($ns) {
            *sum += n;
        }
    };
    (write counter, $out:expr, $name:expr, $help:expr, $n:expr) => {
        $out.single($name, MetricKind::Counter, $help, $n)
    };
    (write gauge, $out:expr, $name:expr, $help:expr, $n:expr) => {
        $out.single($name, MetricKind::Gauge, $help, $n as u64)
    };
    (write peak, $out:expr, $name:expr, $help:expr, $n:expr) => {
        $out.single($name, MetricKind::Gauge, $help, $n as u64)
    };
    (write by_reason, $out:expr, $name:expr, $help:expr, $ns:expr) => {{
        $out.family($name, MetricKind::Counter, $help);
        for (reason, n) in CloseReason::NAMES.iter().zip($ns) {
            $out.sample($name, &[("reason", reason)], n);
        }
    }};
    (show by_reason, $f:expr, $line:literal, $ns:expr) => {
        if $ns.iter().any(|&n| n > 0) {
            write!($f, $line, ReasonCounts(&$ns))?;
        }
    };
    (show $kind:ident, $f:expr, $line:literal, $n:expr) => {
        write!($f, $line, $n)?
    };
    (show $kind:ident, $f:expr, $line:literal, $n:expr, $shown:expr) => {
        write!($f, $line, $shown)?
    };
}

declare_stats! {
    // Connections.

    /// Connections open now.
    pub active: u64 = gauge "sockloop_active_connections", line "active {}";
    /// Connections taken from a listener (the limit's included).
    pub accepted: u64 = counter "sockloop_accepted_total", line ", accepted {}";
    /// Connections closed, for any reason.
    pub closed: u64 = counter "sockloop_closed_total", line ", closed {}";
    /// Connections closed, by reason.
    /// See [`Stats::closed_by`]; any error kind counts as one.
    pub(crate) closed_by: [u64; CloseReason::COUNT] = by_reason "sockloop_closed_by_reason_total", line " ({})";
    /// Outgoing connections established.
    pub connected: u64 = counter "sockloop_connected_total";
    /// Outgoing connections that failed or timed out.
    pub connect_failed: u64 = counter "sockloop_connect_failures_total";

    // The streams.

    /// Bytes of the streams read from peers (TLS: plaintext; no PROXY header).
    /// The bytes of the streams are what services (and the metrics
    /// responder) read and write, plaintext for TLS. What the reactor alone
    /// deals in is left out: a PROXY header read, TLS handshakes and record
    /// framing (a relay's outgoing PROXY header is the relay's own writing,
    /// so it counts).
    pub bytes_in: u64 = counter "sockloop_received_bytes_total", line "; bytes in {}";
    /// Bytes of the streams written to peers (TLS: plaintext).
    pub bytes_out: u64 = counter "sockloop_sent_bytes_total", line ", out {}";
    /// Of the bytes sent, those moved by splice(2).
    /// They were never copied through user space.
    pub bytes_spliced: u64 = counter "sockloop_spliced_bytes_total";
    /// Frames decoded from peers, as the service counts them.
    pub frames_in: u64 = counter "sockloop_received_frames_total", line "; frames in {}";
    /// Frames sent to peers, as the service counts them.
    pub frames_out: u64 = counter "sockloop_sent_frames_total", line ", out {}";
    /// Connections that closed with a partial frame buffered.
    pub truncated_frames: u64 = counter "sockloop_truncated_frames_total";

    // The loop's work.

    /// Calls to the poller's wait.
    pub polls: u64 = counter "sockloop_polls_total", line "; waits {}";
    /// Readiness events the poller returned.
    pub events: u64 = counter "sockloop_events_total", line " ({:.1} events each)" with events_per_wait;
    /// read(2) and recv(2) calls.
    pub reads: u64 = counter "sockloop_reads_total", line "; reads {}";
    /// Reads that found nothing (EAGAIN).
    /// The waste a reactor tries to avoid.
    pub eagain_reads: u64 = counter "sockloop_eagain_reads_total", line " (EAGAIN {})";
    /// write(2) and send(2) calls.
    pub writes: u64 = counter "sockloop_writes_total", line "; writes {}";
    /// Writes the kernel took nothing of (EAGAIN).
    pub eagain_writes: u64 = counter "sockloop_eagain_writes_total", line " (EAGAIN {})";
    /// Calls that change what the poller watches.
    /// Registration is once per fd, so this is two per connection (add,
    /// delete), never per message.
    pub interest_changes: u64 = counter "sockloop_interest_changes_total", line "; interest changes {}";
    /// Events for a connection that had already gone.
    pub stale_events: u64 = counter "sockloop_stale_events_total";

    // Output held for peers.

    /// The largest backlog of unsent output any connection has had.
    pub peak_pending_output: usize = peak "sockloop_peak_pending_output_bytes";
    /// Unsent output all connections hold now (bounded by --max-buffered).
    /// What [`Config::max_buffered`](super::Config::max_buffered) bounds.
    pub buffered_output: usize = gauge "sockloop_buffered_output_bytes", line "; output buffered {}";
    /// Connections not read because the output of all was over half of --max-buffered.
    /// Counted each time one stops being read because its own output
    /// backed up while the total was over half the budget.
    pub budget_pauses: u64 = counter "sockloop_budget_pauses_total", line " (paused for the budget {})";

    // Connection set-up.

    /// TLS handshakes completed.
    pub tls_handshakes: u64 = counter "sockloop_tls_handshakes_total";
    /// TLS handshakes that failed or timed out.
    pub tls_failures: u64 = counter "sockloop_tls_failures_total";
    /// TLS clients whose certificate was verified (--tls-client-ca).
    /// Their identities are in the connection table and in log lines,
    /// not labels here: any name the CA signs would be a series of its own.
    pub tls_client_certs: u64 = counter "sockloop_tls_client_certs_total";
    /// TLS clients refused for their certificate: none, or not signed by --tls-client-ca.
    /// Counted in `tls_failures` too.
    pub tls_client_refusals: u64 = counter "sockloop_tls_client_refusals_total";
    /// PROXY protocol headers read.
    pub proxy_headers: u64 = counter "sockloop_proxy_headers_total";
    /// Connections closed for lack of a valid PROXY header.
    /// Timed out included.
    pub proxy_failures: u64 = counter "sockloop_proxy_failures_total";
    /// PROXY headers refused: sent by a source outside --proxy-protocol-from.
    /// Each closed its connection, with a warn line naming the real source.
    pub proxy_untrusted: u64 = counter "sockloop_proxy_untrusted_total", line "; untrusted PROXY headers {}";
    /// Connections refused by the limits per source (--max-conns-per-source, --conn-rate-per-source).
    /// Also counted as closes for `limit`.
    pub source_refused: u64 = counter "sockloop_source_refusals_total", line "; refused per source {}";
    /// Sources in the per-source table now.
    /// One table serves every reactor: summed, the largest of their
    /// readings is shown.
    pub source_entries: usize = peak "sockloop_source_table_entries";
    /// Metrics connections closed at once: as many as taken were open.
    pub metrics_refused: u64 = counter "sockloop_metrics_refused_total";
    /// Metrics connections closed without a whole request head in time.
    pub metrics_timeouts: u64 = counter "sockloop_metrics_timeouts_total";
}

impl Stats {
    /// How many connections ended for this reason (any error kind counts as one).
    pub fn closed_by(&self, reason: CloseReason) -> u64 {
        self.closed_by[reason.slot()]
    }

    pub(crate) fn count_close(&mut self, reason: CloseReason) {
        self.closed += 1;
        self.closed_by[reason.slot()] += 1;
    }

    /// Events per call to the poller's wait, for the stats line.
    fn events_per_wait(&self) -> f64 {
        self.events as f64 / self.polls.max(1) as f64
    }
}

/// The closes by reason in the stats line, those with a count:
/// `peer 2, idle 1`.
struct ReasonCounts<'a>(&'a [u64; CloseReason::COUNT]);

impl fmt::Display for ReasonCounts<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let counted = CloseReason::NAMES
            .iter()
            .zip(self.0)
            .filter(|&(_, &n)| n > 0);
        for (i, (name, n)) in counted.enumerate() {
            let comma = if i == 0 { "" } else { ", " };
            write!(f, "{comma}{name} {n}")?;
        }
        Ok(())
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
    /// For a TLS client that showed a verified certificate: who it says
    /// it is (shown after the TLS summary, as `client="NAME"`).
    pub identity: Option<String>,
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
            let _ = write!(
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
            match &c.identity {
                // Quoted and escaped: the name is what a certificate says.
                Some(identity) => {
                    let _ = writeln!(out, " client={identity:?}");
                }
                None => out.push('\n'),
            }
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
