//! The counters over HTTP, in the Prometheus text format: a listener opened
//! with [`Reactor::listen_metrics`] has its connections answered here,
//! never by the service. One request per connection: its head is bounded
//! (a client that sends more without finishing it gets 431), the answer is
//! queued like any reply, and the connection closes once it is flushed, so
//! a scrape never blocks the loop and costs no more than a small client.

use std::fmt::Write;
use std::ops::Range;

use super::Reactor;
use super::close::CloseReason;
use super::service::{Context, Service};
use super::stats::Stats;
use super::token::ConnId;
use crate::sys::os::Os;

/// The longest request head taken, request line and headers.
const MAX_REQUEST: usize = 8 << 10;

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
    Counter,
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
    let counters: [(&str, &str, u64); 22] = [
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
}

/// What a request head asks for.
#[derive(Debug, PartialEq, Eq)]
enum Request {
    /// Not all in yet.
    Incomplete,
    Metrics,
    /// Another path.
    NotFound,
    /// Another method.
    NotAllowed,
    /// Not HTTP/1.x, or a head longer than [`MAX_REQUEST`].
    Bad(&'static str),
}

/// Reads the request line once the head (up to its blank line) is in.
fn parse(head: &[u8]) -> Request {
    let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") else {
        // Some clients end lines with a bare LF.
        if head.windows(2).any(|w| w == b"\n\n") {
            return parse_line(head);
        }
        return if head.len() > MAX_REQUEST {
            Request::Bad("431 Request Header Fields Too Large")
        } else {
            Request::Incomplete
        };
    };
    parse_line(&head[..end])
}

fn parse_line(head: &[u8]) -> Request {
    let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let mut words = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (words.next(), words.next(), words.next(), words.next())
    else {
        return Request::Bad("400 Bad Request");
    };
    if !version.starts_with(b"HTTP/1.") {
        return Request::Bad("400 Bad Request");
    }
    let path = target.split(|&b| b == b'?').next().unwrap_or_default();
    match (method, path) {
        (b"GET" | b"HEAD", b"/metrics") => Request::Metrics,
        (b"GET" | b"HEAD", _) => Request::NotFound,
        _ => Request::NotAllowed,
    }
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
    /// Bytes for a metrics connection, just read into `range` of the arena:
    /// kept until the request head is whole, then answered and closed.
    pub(super) fn answer_metrics(&mut self, id: ConnId, range: Range<usize>) {
        let stamp = self.state.stamp;
        let Some(conn) = self.state.conns.live_mut(id) else {
            return;
        };
        conn.extend_input(&self.arena.bytes[range], stamp);
        let head = conn.input();
        let head_only = head.starts_with(b"HEAD ");
        let reply = match parse(head) {
            Request::Incomplete => return,
            Request::Metrics => {
                let mut page = MetricsText::default();
                write_stats(&self.state.stats, &mut page);
                self.service.metrics(self.state.now, &mut page);
                let kind = "text/plain; version=0.0.4; charset=utf-8";
                response("200 OK", kind, page.as_str(), head_only)
            }
            Request::NotFound => {
                response("404 Not Found", "text/plain", "try /metrics\n", head_only)
            }
            Request::NotAllowed => {
                response("405 Method Not Allowed", "text/plain", "GET only\n", false)
            }
            Request::Bad(status) => response(status, "text/plain", "", false),
        };
        conn.release_buffers();
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
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n"),
            Request::Incomplete
        );
        assert_eq!(
            parse(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"),
            Request::Metrics
        );
        assert_eq!(parse(b"GET /metrics?x=1 HTTP/1.0\n\n"), Request::Metrics);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), Request::NotFound);
        assert_eq!(
            parse(b"POST /metrics HTTP/1.1\r\n\r\n"),
            Request::NotAllowed
        );
        assert_eq!(
            parse(b"GET /metrics SPDY/3\r\n\r\n"),
            Request::Bad("400 Bad Request")
        );
        assert_eq!(parse(b"hello\r\n\r\n"), Request::Bad("400 Bad Request"));
        let long = vec![b'a'; MAX_REQUEST + 1];
        assert!(matches!(parse(&long), Request::Bad(s) if s.starts_with("431")));
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
