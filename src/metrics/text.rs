//! The Prometheus text format, written: families of samples, each family
//! with its `# HELP` and `# TYPE` lines before them.

use std::fmt::Write;

/// The metrics page being written: Prometheus text, each family with its
/// `# HELP` and `# TYPE` lines before its samples. A service adds its own
/// families through [`Service::metrics`](crate::reactor::Service::metrics).
#[derive(Debug, Default)]
pub struct MetricsText {
    out: String,
}

/// A Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Only grows (until the process restarts).
    Counter,
    /// Goes up and down.
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
