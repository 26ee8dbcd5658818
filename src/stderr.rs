//! The process's standard error, written off the event loop.
//!
//! Log records, `--trace` lines and the SIGUSR1 connection table all go
//! through one queue, bounded in bytes, in the order they were made. A thread
//! of its own drains it and does the blocking writes, so a caller takes a lock
//! and copies its record, and never waits for whoever reads stderr. When that
//! reader falls so far behind that the queue is full, a record is dropped
//! whole and counted, and the writer says how many once stderr takes bytes
//! again. The writer starts with the first record, so a library user who set
//! nothing up still sees trace output.

use std::env;
use std::fmt::{self, Write as _};
use std::io::{self, IsTerminal, Write};
use std::mem;
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use crate::sys::spawn_without_signals;

/// Bytes queued at most: the connection table of the most connections a
/// process can hold (~19,000, about 2 MB) fits, with room for lines around it.
const QUEUE_BYTES: usize = 4 << 20;

/// What a batch buffer keeps between bursts, so one big table does not hold
/// megabytes for the rest of the run.
const KEEP_BYTES: usize = 64 << 10;

/// Queues one record, followed by a newline. `args` may span several lines
/// (the connection table does); they stay together. `args` is formatted under
/// the queue's lock: its `Display` must not write to this module itself.
pub fn line(args: fmt::Arguments<'_>) {
    push(|out| writeln!(out, "{args}"));
}

/// Waits until every record queued so far is written, or `timeout` passes.
/// For the end of `main`: what was logged last (how the run ended, an error)
/// reaches a stderr that is being read, and one that nobody reads cannot keep
/// the process from exiting.
pub fn flush(timeout: Duration) {
    if WRITER_STARTED.get() != Some(&true) {
        return;
    }
    let deadline = Instant::now() + timeout;
    let mut queue = lock();
    while !queue.is_empty() || queue.writing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        queue = SHARED
            .written
            .wait_timeout(queue, left)
            .unwrap_or_else(PoisonError::into_inner)
            .0;
    }
}

/// Installs `env_logger` (its `RUST_LOG` filter, `default_filter` when that is
/// unset, and its format) writing through this queue.
pub fn init_logger(default_filter: &str) {
    let mut builder =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter));
    builder.target(env_logger::Target::Pipe(Box::new(LogRecords)));
    // env_logger colours only the terminals it writes to itself: keep the
    // colours a terminal stderr had, unless the user chose otherwise.
    let style_unset = env::var("RUST_LOG_STYLE").map_or(true, |style| style == "auto");
    if style_unset && env::var_os("NO_COLOR").is_none() && io::stderr().is_terminal() {
        builder.write_style(env_logger::WriteStyle::Always);
    }
    builder.init();
}

/// env_logger's target. It formats a record into a buffer of its own and
/// hands it over in one `write_all`, so each `write` here is one whole record.
struct LogRecords;

impl Write for LogRecords {
    fn write(&mut self, record: &[u8]) -> io::Result<usize> {
        push(|out| out.push(record));
        Ok(record.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

struct Shared {
    queue: Mutex<Queue>,
    /// The writer waits here for records.
    queued: Condvar,
    /// [`flush`] waits here for the writer to finish a batch.
    written: Condvar,
}

static SHARED: Shared = Shared {
    queue: Mutex::new(Queue::new(QUEUE_BYTES)),
    queued: Condvar::new(),
    written: Condvar::new(),
};

/// Whether the writer thread runs; set by the first record.
static WRITER_STARTED: OnceLock<bool> = OnceLock::new();

// A record whose `Display` panicked under the lock leaves at worst a part of
// itself behind: better than losing every diagnostic after it.
fn lock() -> MutexGuard<'static, Queue> {
    SHARED.queue.lock().unwrap_or_else(PoisonError::into_inner)
}

fn push(record: impl FnOnce(&mut Bounded<'_>) -> fmt::Result) {
    let started =
        *WRITER_STARTED.get_or_init(|| spawn_without_signals("stderr", write_batches).is_ok());
    if !started {
        // No thread to write for us (the process is out of threads): write
        // in place, blocking, as eprintln! would.
        let mut bytes = Vec::new();
        let _ = record(&mut Bounded::new(&mut bytes, usize::MAX));
        let _ = io::stderr().write_all(&bytes);
        return;
    }
    // Waking costs a syscall: only the first record after a quiet spell pays it.
    if lock().push(record) {
        SHARED.queued.notify_one();
    }
}

/// The writer thread: takes everything queued at once and writes it with
/// stderr's blocking writes, outside the lock.
fn write_batches() {
    let mut batch = Vec::new();
    loop {
        {
            let mut queue = lock();
            while queue.is_empty() {
                queue.writer_asleep = true;
                queue = SHARED
                    .queued
                    .wait(queue)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            queue.writer_asleep = false;
            queue.take(&mut batch);
            queue.writing = true;
        }
        // A reader that went away (EPIPE) leaves nobody to tell: drop the batch.
        let _ = io::stderr().lock().write_all(&batch);
        batch.clear();
        batch.shrink_to(KEEP_BYTES);
        lock().writing = false;
        SHARED.written.notify_all();
    }
}

/// Records waiting for the writer, in order, and how many did not fit.
struct Queue {
    pending: Vec<u8>,
    limit: usize,
    dropped: u64,
    /// The writer waits for records: the next one must wake it.
    writer_asleep: bool,
    /// The writer holds a batch it has not finished writing.
    writing: bool,
}

impl Queue {
    const fn new(limit: usize) -> Queue {
        Queue {
            pending: Vec::new(),
            limit,
            dropped: 0,
            writer_asleep: false,
            writing: false,
        }
    }

    /// Appends one record whole, or drops and counts it if it does not fit.
    /// True if the writer sleeps and must be woken.
    fn push(&mut self, record: impl FnOnce(&mut Bounded<'_>) -> fmt::Result) -> bool {
        let start = self.pending.len();
        if record(&mut Bounded::new(&mut self.pending, self.limit)).is_err() {
            self.pending.truncate(start);
            self.dropped += 1;
        }
        mem::take(&mut self.writer_asleep)
    }

    /// Moves everything queued into `batch` (empty), then a notice of how
    /// many records were dropped since the last one, if any were.
    fn take(&mut self, batch: &mut Vec<u8>) {
        mem::swap(&mut self.pending, batch);
        match mem::take(&mut self.dropped) {
            0 => {}
            dropped => {
                let _ = writeln!(
                    batch,
                    "sockloop: {dropped} diagnostic messages dropped: stderr is not keeping up"
                );
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty() && self.dropped == 0
    }
}

/// Where a record is written: it fails, rather than grow past `limit`.
struct Bounded<'a> {
    out: &'a mut Vec<u8>,
    limit: usize,
}

impl<'a> Bounded<'a> {
    fn new(out: &'a mut Vec<u8>, limit: usize) -> Bounded<'a> {
        Bounded { out, limit }
    }

    fn push(&mut self, bytes: &[u8]) -> fmt::Result {
        if bytes.len() > self.limit.saturating_sub(self.out.len()) {
            return Err(fmt::Error);
        }
        self.out.extend_from_slice(bytes);
        Ok(())
    }
}

impl fmt::Write for Bounded<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push(s.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::Queue;
    use std::fmt::Write as _;

    fn taken(queue: &mut Queue) -> String {
        let mut batch = Vec::new();
        queue.take(&mut batch);
        String::from_utf8(batch).expect("utf-8")
    }

    #[test]
    fn full_queue_drops_whole_records_counts_them_and_keeps_order() {
        let mut queue = Queue::new(20);
        queue.push(|out| writeln!(out, "one"));
        queue.push(|out| out.push(b"two\n"));
        // Fits only in part: none of it may stay.
        queue.push(|out| writeln!(out, "{}", "x".repeat(15)));
        queue.push(|out| writeln!(out, "three"));
        queue.push(|out| writeln!(out, "four, too long"));
        assert_eq!(
            taken(&mut queue),
            "one\ntwo\nthree\n\
             sockloop: 2 diagnostic messages dropped: stderr is not keeping up\n"
        );
        assert!(queue.is_empty());

        // Taken, the queue has room again, and the count starts over.
        queue.push(|out| writeln!(out, "{}", "y".repeat(19)));
        assert_eq!(taken(&mut queue), format!("{}\n", "y".repeat(19)));
    }

    #[test]
    fn only_the_first_record_after_the_writer_sleeps_wakes_it() {
        let mut queue = Queue::new(100);
        assert!(!queue.push(|out| writeln!(out, "writer busy")));
        queue.writer_asleep = true;
        assert!(queue.push(|out| writeln!(out, "wakes it")));
        assert!(!queue.push(|out| writeln!(out, "already woken")));
        // A dropped record must still wake it, to report the drop.
        queue.writer_asleep = true;
        assert!(queue.push(|out| writeln!(out, "{}", "z".repeat(100))));
    }
}
