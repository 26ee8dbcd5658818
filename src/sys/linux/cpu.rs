//! CPU time of any process, to price a server's work per message.

use std::io;
use std::time::Duration;

/// proc(5) reports times in USER_HZ ticks, which Linux fixes at 100 per second
/// on every architecture it runs on (what `sysconf(_SC_CLK_TCK)` answers).
const TICKS_PER_SECOND: u64 = 100;

/// User plus system time of every thread of `pid` so far (`/proc/PID/stat`),
/// to the nearest 10 ms tick.
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = || {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    };
    // The command name is in parentheses and may hold spaces: count fields after it.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .ok_or_else(bad)?;
    let mut fields = rest.split_whitespace().skip(11); // state is field 3, utime 14
    let mut tick_field =
        || -> io::Result<u64> { fields.next().and_then(|f| f.parse().ok()).ok_or_else(bad) };
    let ticks = tick_field()? + tick_field()?;
    Ok(Duration::from_millis(ticks * 1000 / TICKS_PER_SECOND))
}
