//! CPU time of any process, to price a server's work per message: macOS
//! through libproc, FreeBSD through `sysctl`, no other BSD yet.

use std::io;
use std::time::Duration;

/// User plus system time of every thread of `pid` so far.
#[cfg(target_os = "macos")]
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let pid =
        libc::c_int::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let size = std::mem::size_of::<libc::proc_taskinfo>() as libc::c_int;
    let mut info = std::mem::MaybeUninit::<libc::proc_taskinfo>::zeroed();
    // SAFETY: the buffer is a writable proc_taskinfo and `size` is its size;
    // the kernel writes at most that many bytes.
    let written = unsafe {
        libc::proc_pidinfo(
            pid,
            libc::PROC_PIDTASKINFO,
            0,
            info.as_mut_ptr().cast(),
            size,
        )
    };
    if written <= 0 {
        return Err(io::Error::last_os_error());
    }
    if written != size {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "proc_taskinfo from the kernel does not match libc's",
        ));
    }
    // SAFETY: the kernel filled the whole struct (and it started zeroed).
    let info = unsafe { info.assume_init() };
    Ok(mach_time(info.pti_total_user + info.pti_total_system))
}

/// libproc counts in Mach absolute-time units: nanoseconds on Intel, but
/// 125/3 ns on Apple silicon.
#[cfg(target_os = "macos")]
// libc would send us to the mach2 crate for this; one call does not justify it.
#[allow(deprecated)]
fn mach_time(units: u64) -> Duration {
    let mut base = libc::mach_timebase_info { numer: 1, denom: 1 };
    // SAFETY: writes one mach_timebase_info into a live local.
    let rc = unsafe { libc::mach_timebase_info(&mut base) };
    if rc != 0 || base.denom == 0 {
        return Duration::from_nanos(units);
    }
    let nanos = u128::from(units) * u128::from(base.numer) / u128::from(base.denom);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// User plus system time of every thread of `pid` so far.
#[cfg(target_os = "freebsd")]
pub fn cpu_time(pid: u32) -> io::Result<Duration> {
    let pid =
        libc::c_int::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mib = [libc::CTL_KERN, libc::KERN_PROC, libc::KERN_PROC_PID, pid];
    let size = std::mem::size_of::<libc::kinfo_proc>();
    let mut info = std::mem::MaybeUninit::<libc::kinfo_proc>::zeroed();
    let mut len = size;
    // SAFETY: `mib` is a live array of `mib.len()` ints; the kernel writes at
    // most `len` bytes into `info`, a writable kinfo_proc, and stores the
    // length written in `len`. Nothing is set (null new value, length 0).
    let rc = unsafe {
        libc::sysctl(
            mib.as_ptr(),
            mib.len() as libc::c_uint,
            info.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null(),
            0,
        )
    };
    nix::errno::Errno::result(rc)?;
    // SAFETY: zeroed and then (partly) written by the kernel: every byte is
    // initialised, and kinfo_proc is plain data.
    let info = unsafe { info.assume_init() };
    if len != size || usize::try_from(info.ki_structsize) != Ok(size) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "kinfo_proc from the kernel does not match libc's",
        ));
    }
    // The scheduler's count of the time it ran, user and system, in µs.
    Ok(Duration::from_micros(info.ki_runtime))
}

/// Not read here yet: the load generator reports "n/a".
#[cfg(not(any(target_os = "macos", target_os = "freebsd")))]
pub fn cpu_time(_pid: u32) -> io::Result<Duration> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "reading another process's CPU time is not implemented on this OS",
    ))
}

/// Whether [`pin_thread`] can work here: not on the BSDs yet (FreeBSD has
/// cpuset_setaffinity(2), macOS only affinity hints).
pub const PIN: bool = false;

/// Fails: pinning threads is only implemented on Linux.
pub fn pin_thread(_i: usize) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "pinning a thread to a CPU is only implemented on Linux",
    ))
}
