//! A relay's upstreams as a file says them, and the set every reactor's
//! relay takes its new connects from: read once at start, then again on
//! each SIGHUP, replaced only by a file that is good from top to bottom.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use crate::reactor::Addr;

/// A line of an upstreams file that is not an upstream, or a file with none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamsError {
    /// Line `number` (from 1) holds `text`, which is no address: `why`.
    BadLine {
        /// The line's number, the first line being 1.
        number: usize,
        /// The line as written, without its comment.
        text: String,
        /// What the address parser said.
        why: String,
    },
    /// Nothing but comments and blank lines: a relay needs an upstream.
    Empty,
}

impl fmt::Display for UpstreamsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadLine { number, text, why } => write!(f, "line {number} `{text}`: {why}"),
            Self::Empty => f.write_str("no upstream in it (only comments and blank lines)"),
        }
    }
}

impl std::error::Error for UpstreamsError {}

/// The upstreams of a file's `text`, one a line, in order: `#` starts a
/// comment, blank lines and the blanks around an address do not count.
/// `parse` reads one address; given a pure one, so is this (the command
/// line's looks host names up). The first bad line refuses the whole file.
pub fn parse_upstreams(
    text: &str,
    parse: impl Fn(&str) -> Result<Addr, String>,
) -> Result<Vec<Addr>, UpstreamsError> {
    let mut upstreams = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let text = line.split('#').next().unwrap_or_default().trim();
        if text.is_empty() {
            continue;
        }
        let addr = parse(text).map_err(|why| UpstreamsError::BadLine {
            number: i + 1,
            text: text.to_owned(),
            why,
        })?;
        upstreams.push(addr);
    }
    if upstreams.is_empty() {
        return Err(UpstreamsError::Empty);
    }
    Ok(upstreams)
}

/// One set of upstreams and its generation: 1 for the set a relay starts
/// with, one more for each reload accepted since.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamSet {
    /// 1 at start, +1 per accepted reload.
    pub generation: u64,
    /// The upstreams, in the file's order.
    pub addrs: Vec<Addr>,
}

/// The latest accepted set, shared between whoever reloads it (the
/// supervisor, on SIGHUP) and the relay of every reactor, which looks here
/// when woken and before it pairs a new client
/// ([`Relay::with_reloads`](super::Relay::with_reloads)); and the count of
/// reloads refused, for `/metrics`.
#[derive(Debug)]
pub struct CurrentUpstreams {
    latest: Mutex<Arc<UpstreamSet>>,
    /// The latest set's generation, read without the lock: what a new
    /// client costs a relay whose set is up to date.
    generation: AtomicU64,
    rejected: AtomicU64,
}

impl CurrentUpstreams {
    /// Generation 1: the set a relay starts with.
    pub fn new(addrs: Vec<Addr>) -> CurrentUpstreams {
        CurrentUpstreams {
            latest: Mutex::new(Arc::new(UpstreamSet {
                generation: 1,
                addrs,
            })),
            generation: AtomicU64::new(1),
            rejected: AtomicU64::new(0),
        }
    }

    /// The latest set's generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The latest accepted set.
    pub fn latest(&self) -> Arc<UpstreamSet> {
        // A panic elsewhere cannot leave a half-written Arc behind.
        self.latest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Makes the upstreams `parsed` the latest set, as the next
    /// generation, which it returns; if `parsed` is an error, counts a
    /// reload refused and keeps the latest set.
    pub fn reload<E>(&self, parsed: Result<Vec<Addr>, E>) -> Result<u64, E> {
        let addrs = parsed.inspect_err(|_| {
            self.rejected.fetch_add(1, Ordering::Relaxed);
        })?;
        let mut latest = self.latest.lock().unwrap_or_else(PoisonError::into_inner);
        let generation = latest.generation + 1;
        *latest = Arc::new(UpstreamSet { generation, addrs });
        self.generation.store(generation, Ordering::Release);
        Ok(generation)
    }

    /// Reloads refused so far.
    pub fn rejected(&self) -> u64 {
        self.rejected.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vec<Addr>, UpstreamsError> {
        parse_upstreams(text, |line| line.parse().map_err(|e| format!("{e}")))
    }

    fn addrs(list: &[&str]) -> Vec<Addr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn comments_blank_lines_and_blanks_around_an_address_do_not_count() {
        let file = "# the pool\n\n  127.0.0.1:7001  \n\t[::1]:7002 # the v6 one\n   \n#127.0.0.1:9\nunix:/run/up.sock\n";
        assert_eq!(
            parse(file),
            Ok(addrs(&[
                "127.0.0.1:7001",
                "[::1]:7002",
                "unix:/run/up.sock"
            ]))
        );
        // No newline at the end, and Windows line ends.
        assert_eq!(
            parse("127.0.0.1:1\r\n127.0.0.1:2"),
            Ok(addrs(&["127.0.0.1:1", "127.0.0.1:2"]))
        );
    }

    #[test]
    fn a_bad_line_is_named_by_its_number_and_its_text() {
        let refused =
            parse("# upstreams\n127.0.0.1:7001\n\nnot-an-address # typo\n127.0.0.1:7003\n");
        let Err(UpstreamsError::BadLine { number, text, why }) = &refused else {
            panic!("accepted: {refused:?}");
        };
        assert_eq!((*number, text.as_str()), (4, "not-an-address"));
        assert!(why.contains("not an address"), "{why}");
        let shown = refused.unwrap_err().to_string();
        assert!(shown.starts_with("line 4 `not-an-address`: "), "{shown}");
        // A port out of range is no address either.
        assert!(matches!(
            parse("127.0.0.1:70000"),
            Err(UpstreamsError::BadLine { number: 1, .. })
        ));
    }

    #[test]
    fn a_file_with_no_upstream_is_refused() {
        assert_eq!(parse(""), Err(UpstreamsError::Empty));
        assert_eq!(parse("# none yet\n\n   \n"), Err(UpstreamsError::Empty));
    }

    #[test]
    fn each_reload_is_the_next_generation_and_a_bad_file_keeps_the_set() {
        let current = CurrentUpstreams::new(addrs(&["127.0.0.1:1"]));
        assert_eq!(current.latest().generation, 1);
        assert_eq!(current.reload(parse("127.0.0.1:2\n")), Ok(2));
        let refused = current.reload(parse("127.0.0.1:3\n127.0.0.1:x\n"));
        assert!(matches!(
            refused,
            Err(UpstreamsError::BadLine { number: 2, .. })
        ));
        assert_eq!(
            current.reload(parse("# emptied\n")),
            Err(UpstreamsError::Empty)
        );
        let latest = current.latest();
        assert_eq!(current.generation(), 2);
        assert_eq!(
            (latest.generation, &latest.addrs, current.rejected()),
            (2, &addrs(&["127.0.0.1:2"]), 2)
        );
    }
}
