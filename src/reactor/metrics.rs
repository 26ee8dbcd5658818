//! The counters over HTTP, in the Prometheus text format: a listener opened
//! with [`Reactor::listen_metrics`] has its connections answered here,
//! never by the service. One request per connection: its head is bounded
//! (a head longer than that gets 431), the answer is queued like any reply,
//! and the connection closes once it is flushed, so a scrape never blocks
//! the loop and costs no more than a small client.
//!
//! Metrics connections have a budget of their own: at most
//! [`MAX_METRICS_CONNS`] at once, not counted against `Config::max_conns`
//! (clients at the limit cannot lock the scrapes out, nor scrapes the
//! clients), and each has [`METRICS_DEADLINE`] from its accept to send its
//! head and take its answer.

use std::fmt::Write;
use std::ops::Range;
use std::time::Duration;

use log::warn;

use super::Reactor;
use super::close::CloseReason;
use super::conn::{Phase, Reading};
use super::service::{Context, Service};
use super::stats::Stats;
use super::timer::ConnTimer;
use super::token::ConnId;
use crate::codec::http::{HeadError, decode_request_head};
use crate::sys::os::{Os, Stream};

/// The longest request head taken, request line and headers.
const MAX_REQUEST: usize = 8 << 10;

/// Metrics connections open at once; more are closed as they are accepted.
/// A Prometheus server scrapes one at a time.
pub(crate) const MAX_METRICS_CONNS: usize = 16;

/// How long a metrics connection may live: its whole request head must be
/// in by then however slowly it trickles (each byte renews the idle
/// timeout, so that is no bound), and its answer taken.
pub(crate) const METRICS_DEADLINE: Duration = Duration::from_secs(5);

/// The metrics page being written: Prometheus text, each family with its
/// `# HELP` and `# TYPE` lines before its samples. A service adds its own
/// families through [`Service::metrics`].
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only goes up, while the process lives.
    Counter,
    /// A value now, which goes up and down.
    Gauge,
}

impl MetricsText {
    /// Starts the family `name`; its samples follow with [`sample`](Self::sample).
    pub fn family(&mut self, name: &str, kind: MetricKind, help: &str) {
        let kind = match kind {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
        };
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    /// One sample of the family just started, with labels (values escaped
    /// as the format asks).
    pub fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        self.out.push_str(name);
        for (i, (label, text)) in labels.iter().enumerate() {
            self.out.push(if i == 0 { '{' } else { ',' });
            let _ = write!(self.out, "{label}=\"");
            for c in text.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        if !labels.is_empty() {
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    /// A family with a single unlabelled sample.
    pub fn single(&mut self, name: &str, kind: MetricKind, help: &str, value: u64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    /// The text so far.
    pub fn as_str(&self) -> &str {
        &self.out
    }
}

/// The reactor's own counters.
pub(crate) fn write_stats(stats: &Stats, m: &mut MetricsText) {
    use MetricKind::{Counter, Gauge};
    let counters: [(&str, &str, u64); 24] = [
        (
            "sockloop_accepted_total",
            "Connections taken from a listener (the limit's included).",
            stats.accepted,
        ),
        (
            "sockloop_connected_total",
            "Outgoing connections established.",
            stats.connected,
        ),
        (
            "sockloop_connect_failures_total",
            "Outgoing connections that failed or timed out.",
            stats.connect_failed,
        ),
        (
            "sockloop_received_bytes_total",
            "Bytes of the streams read from peers (TLS: plaintext; no PROXY header).",
            stats.bytes_in,
        ),
        (
            "sockloop_sent_bytes_total",
            "Bytes of the streams written to peers (TLS: plaintext).",
            stats.bytes_out,
        ),
        (
            "sockloop_spliced_bytes_total",
            "Of the bytes sent, those moved by splice(2).",
            stats.bytes_spliced,
        ),
        (
            "sockloop_received_frames_total",
            "Frames decoded from peers, as the service counts them.",
            stats.frames_in,
        ),
        (
            "sockloop_sent_frames_total",
            "Frames sent to peers, as the service counts them.",
            stats.frames_out,
        ),
        (
            "sockloop_truncated_frames_total",
            "Connections that closed with a partial frame buffered.",
            stats.truncated_frames,
        ),
        (
            "sockloop_polls_total",
            "Calls to the poller's wait.",
            stats.polls,
        ),
        (
            "sockloop_events_total",
            "Readiness events the poller returned.",
            stats.events,
        ),
        (
            "sockloop_reads_total",
            "read(2) and recv(2) calls.",
            stats.reads,
        ),
        (
            "sockloop_eagain_reads_total",
            "Reads that found nothing (EAGAIN).",
            stats.eagain_reads,
        ),
        (
            "sockloop_writes_total",
            "write(2) and send(2) calls.",
            stats.writes,
        ),
        (
            "sockloop_eagain_writes_total",
            "Writes the kernel took nothing of (EAGAIN).",
            stats.eagain_writes,
        ),
        (
            "sockloop_interest_changes_total",
            "Calls that change what the poller watches.",
            stats.interest_changes,
        ),
        (
            "sockloop_stale_events_total",
            "Events for a connection that had already gone.",
            stats.stale_events,
        ),
        (
            "sockloop_tls_handshakes_total",
            "TLS handshakes completed.",
            stats.tls_handshakes,
        ),
        (
            "sockloop_tls_failures_total",
            "TLS handshakes that failed or timed out.",
            stats.tls_failures,
        ),
        (
            "sockloop_proxy_headers_total",
            "PROXY protocol headers read.",
            stats.proxy_headers,
        ),
        (
            "sockloop_proxy_failures_total",
            "Connections closed for lack of a valid PROXY header.",
            stats.proxy_failures,
        ),
        (
            "sockloop_metrics_refused_total",
            "Metrics connections closed at once: as many as taken were open.",
            stats.metrics_refused,
        ),
        (
            "sockloop_metrics_timeouts_total",
            "Metrics connections closed without a whole request head in time.",
            stats.metrics_timeouts,
        ),
        (
            "sockloop_closed_total",
            "Connections closed, for any reason.",
            stats.closed,
        ),
    ];
    for (name, help, value) in counters {
        m.single(name, Counter, help, value);
    }
    let name = "sockloop_closed_by_reason_total";
    m.family(name, Counter, "Connections closed, by reason.");
    for (reason, n) in CloseReason::NAMES.iter().zip(stats.closed_by) {
        m.sample(name, &[("reason", reason)], n);
    }
    m.single(
        "sockloop_active_connections",
        Gauge,
        "Connections open now.",
        stats.active,
    );
    let peak = stats.peak_pending_output as u64;
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
        stats.buffered_output as u64,
    );
    m.single(
        "sockloop_budget_pauses_total",
        Counter,
        "Connections not read because the output of all was over half of --max-buffered.",
        stats.budget_pauses,
    );
}

/// What a request asks for, once its head is whole (or refused).
#[derive(Debug, PartialEq, Eq)]
enum Request {
    Metrics {
        head_only: bool,
    },
    /// Another path.
    NotFound {
        head_only: bool,
    },
    /// Another method.
    NotAllowed,
    /// Not HTTP/1.x, or a head longer than [`MAX_REQUEST`]: the status.
    Refused(&'static str),
}

/// What the bytes received so far ask for, `None` until that is known;
/// with it, whether the client may have sent more than the head (then what
/// still comes is read and dropped before the close: closing with unread
/// input would send RST, and the RST would destroy the answer in flight).
fn request(input: &[u8]) -> Option<(Request, bool)> {
    let head = match decode_request_head(input, MAX_REQUEST) {
        Ok(None) => return None,
        Ok(Some(head)) => head,
        Err(HeadError::TooLarge) => {
            return Some((
                Request::Refused("431 Request Header Fields Too Large"),
                true,
            ));
        }
        Err(HeadError::BadRequestLine) => return Some((Request::Refused("400 Bad Request"), true)),
    };
    let head_only = head.method == b"HEAD";
    let request = match (head.method, head.path()) {
        (b"GET" | b"HEAD", b"/metrics") => Request::Metrics { head_only },
        (b"GET" | b"HEAD", _) => Request::NotFound { head_only },
        _ => Request::NotAllowed,
    };
    Some((request, input.len() > head.len))
}

/// A whole HTTP/1.1 response that closes its connection.
fn response(status: &str, content_type: &str, body: &str, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

impl<S: Service, O: Os> Reactor<S, O> {
    /// `id` was accepted on the metrics listener: it counts against the
    /// metrics connections' own budget, and has until the deadline.
    pub(super) fn admit_metrics(&mut self, id: ConnId) {
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        conn.flags.metrics = true;
        self.state.admission.metrics_open += 1;
        let due = self.state.stamp.after(METRICS_DEADLINE);
        self.state.add_conn_timer(due, id, ConnTimer::Request);
    }

    /// A metrics connection's deadline: one still without its whole request
    /// head is closed and counted; one answered had its time to take the
    /// answer and go.
    pub(super) fn metrics_deadline_fired(&mut self, id: ConnId) {
        let Some(conn) = self.state.conns.live(id) else {
            return;
        };
        if conn.phase != Phase::Open {
            return self.close(id, CloseReason::Local);
        }
        self.state.stats.metrics_timeouts += 1;
        warn!(
            "{id} {}: no whole request head within {METRICS_DEADLINE:?}; closing",
            self.state.peer_label(id)
        );
        self.close(id, CloseReason::FrameTimeout);
    }

    /// Bytes for a metrics connection, just read into `range` of the arena:
    /// kept until the request head is whole, then answered and closed.
    pub(super) fn answer_metrics(&mut self, id: ConnId, range: Range<usize>) {
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        conn.extend_input(&self.arena.bytes[range]);
        let Some((request, more)) = request(conn.input()) else {
            return;
        };
        conn.release_buffers();
        let socket = self.kernel.socket(id);
        if more || socket.is_some_and(|s| s.unread_len().is_ok_and(|n| n > 0)) {
            conn.reading = Reading::Discarding;
        }
        let reply = match request {
            Request::Metrics { head_only } => {
                let mut page = MetricsText::default();
                write_stats(&self.state.stats, &mut page);
                self.service.metrics(self.state.now, &mut page);
                let kind = "text/plain; version=0.0.4; charset=utf-8";
                response("200 OK", kind, page.as_str(), head_only)
            }
            Request::NotFound { head_only } => {
                response("404 Not Found", "text/plain", "try /metrics\n", head_only)
            }
            Request::NotAllowed => {
                response("405 Method Not Allowed", "text/plain", "GET only\n", false)
            }
            Request::Refused(status) => response(status, "text/plain", "", false),
        };
        self.state.replies.begin_serving(id);
        let ctx = &mut Context::new(&mut self.state, &self.arena.bytes);
        ctx.write(id, &reply);
        ctx.close(id);
        self.apply_deferred();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_line_decides_once_the_head_is_whole() {
        assert_eq!(request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"), None);
        let metrics = Request::Metrics { head_only: false };
        assert_eq!(
            request(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Some((metrics, false))
        );
        assert_eq!(
            request(b"HEAD /metrics?x=1 HTTP/1.0\n\nmore"),
            Some((Request::Metrics { head_only: true }, true))
        );
        let not_found = Request::NotFound { head_only: false };
        assert_eq!(request(b"GET / HTTP/1.1\r\n\r\n"), Some((not_found, false)));
        assert_eq!(
            request(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Some((Request::NotAllowed, false))
        );
        let bad = Some((Request::Refused("400 Bad Request"), true));
        assert_eq!(request(b"GET /metrics SPDY/3\r\n\r\n"), bad);
        assert_eq!(request(b"hello\r\n\r\n"), bad);
    }

    /// A head past the bound is refused whether it arrived in one read or
    /// in many: what counts is the bytes received, not the read.
    #[test]
    fn a_head_over_the_bound_gets_431_even_when_whole() {
        let whole = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9000));
        let unfinished = vec![b'a'; MAX_REQUEST];
        for input in [whole.as_bytes(), unfinished.as_slice()] {
            let (refused, more) = request(input).expect("decided");
            assert!(matches!(refused, Request::Refused(s) if s.starts_with("431")));
            assert!(more, "what follows is read and dropped before the close");
        }
    }

    #[test]
    fn every_sample_line_is_a_name_labels_and_a_value() {
        let mut page = MetricsText::default();
        write_stats(
            &Stats {
                accepted: 3,
                ..Stats::default()
            },
            &mut page,
        );
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
