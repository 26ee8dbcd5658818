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

/// Whether [`pin_thread`] can work here.
pub const PIN: bool = true;

/// Pins the calling thread to the `i`-th CPU this process may run on
/// (counting around if `i` is past the last), and returns that CPU's number.
pub fn pin_thread(i: usize) -> io::Result<usize> {
    // SAFETY: an all-zero cpu_set_t is the empty set, a valid value.
    let mut allowed: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `allowed` is a writable cpu_set_t of `size` bytes; pid 0 is
    // the calling thread.
    let rc = unsafe { libc::sched_getaffinity(0, size, &mut allowed) };
    nix::errno::Errno::result(rc)?;
    // SAFETY: CPU_ISSET only reads the set, and every index below
    // CPU_SETSIZE lies within it.
    let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &allowed) })
        .collect();
    let cpu = *cpus
        .get(i % cpus.len().max(1))
        .ok_or_else(|| io::Error::other("sched_getaffinity reported no CPU"))?;
    // SAFETY: as above, an all-zero set is empty.
    let mut only: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes within the set for an index below CPU_SETSIZE,
    // which `cpu` is.
    unsafe { libc::CPU_SET(cpu, &mut only) };
    // SAFETY: `only` is a valid cpu_set_t of `size` bytes; pid 0 is the calling thread.
    let rc = unsafe { libc::sched_setaffinity(0, size, &only) };
    nix::errno::Errno::result(rc)?;
    Ok(cpu)
}
