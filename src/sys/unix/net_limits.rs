//! Two of the kernel's network settings that a server and a load generator
//! must size themselves by: the cap on a listener's accept queue, and the
//! range of ephemeral ports a client connection takes its port from.

use std::ops::RangeInclusive;

/// The kernel's cap on a listener's accept queue: a larger `listen`
/// backlog is cut down to it without a word. `net.core.somaxconn` on Linux,
/// `kern.ipc.somaxconn` on macOS, FreeBSD and DragonFly, `kern.somaxconn`
/// on NetBSD; `None` where it cannot be read (OpenBSD).
pub fn somaxconn() -> Option<u32> {
    #[cfg(target_os = "linux")]
    let value = proc_numbers("/proc/sys/net/core/somaxconn").and_then(|n| n.first().copied());
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    let value = sysctl_int(c"kern.ipc.somaxconn");
    #[cfg(target_os = "netbsd")]
    let value = sysctl_int(c"kern.somaxconn");
    #[cfg(target_os = "openbsd")]
    let value: Option<u64> = None;
    value.and_then(|v| u32::try_from(v).ok())
}

/// The ports the kernel picks from for a connect without a bound port:
/// `net.ipv4.ip_local_port_range` on Linux (both ends included),
/// `net.inet.ip.portrange.first`/`last` on macOS, FreeBSD and DragonFly,
/// `net.inet.ip.anonportmin`/`anonportmax` on NetBSD; `None` where it
/// cannot be read (OpenBSD).
pub fn ephemeral_ports() -> Option<RangeInclusive<u16>> {
    #[cfg(target_os = "linux")]
    let bounds = proc_numbers("/proc/sys/net/ipv4/ip_local_port_range")
        .and_then(|n| Some((*n.first()?, *n.get(1)?)));
    #[cfg(any(
        target_vendor = "apple",
        target_os = "freebsd",
        target_os = "dragonfly"
    ))]
    let bounds =
        sysctl_int(c"net.inet.ip.portrange.first").zip(sysctl_int(c"net.inet.ip.portrange.last"));
    #[cfg(target_os = "netbsd")]
    let bounds = sysctl_int(c"net.inet.ip.anonportmin").zip(sysctl_int(c"net.inet.ip.anonportmax"));
    #[cfg(target_os = "openbsd")]
    let bounds: Option<(u64, u64)> = None;
    let (low, high) = bounds?;
    let (low, high) = (u16::try_from(low).ok()?, u16::try_from(high).ok()?);
    (low <= high).then_some(low..=high)
}

/// The whitespace-separated numbers of a `/proc/sys` file.
#[cfg(target_os = "linux")]
fn proc_numbers(path: &str) -> Option<Vec<u64>> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace().map(|n| n.parse().ok()).collect()
}

/// A sysctl that holds one C `int` (or `u_int`).
#[cfg(any(
    target_vendor = "apple",
    target_os = "freebsd",
    target_os = "dragonfly",
    target_os = "netbsd"
))]
fn sysctl_int(name: &std::ffi::CStr) -> Option<u64> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>();
    // SAFETY: the name is NUL-terminated, `value` is a writable c_int and
    // `len` holds its size; nothing is written (null new value, length 0).
    let rc = unsafe {
        libc::sysctlbyname(
            name.as_ptr(),
            (&raw mut value).cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    // Read as unsigned: FreeBSD's somaxconn is a u_int.
    (rc == 0 && len == std::mem::size_of::<libc::c_int>()).then_some(u64::from(value as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(any(target_os = "linux", target_vendor = "apple", target_os = "freebsd"))]
    #[test]
    fn the_kernel_answers_with_a_usable_backlog_cap_and_port_range() {
        let cap = somaxconn().expect("somaxconn readable here");
        assert!(cap >= 1, "somaxconn {cap}");
        let ports = ephemeral_ports().expect("port range readable here");
        assert!(
            *ports.start() >= 1 && ports.end() >= ports.start(),
            "{ports:?}"
        );
    }
}
