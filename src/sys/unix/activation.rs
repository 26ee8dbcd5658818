//! Listening sockets handed over by the process that started this one —
//! systemd's socket activation, or a server handing its sockets to the
//! one that replaces it — by the convention of sd_listen_fds(3):
//! `LISTEN_FDS` descriptors from 3 on, meant for the process whose id is
//! `LISTEN_PID`, named (optionally) by the colon-separated
//! `LISTEN_FDNAMES`.

use std::env;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;

use super::socket::Listener;

/// The first descriptor passed: 0, 1 and 2 are the standard streams.
const FIRST_FD: RawFd = 3;

/// The variables of the convention, unset once read.
const VARIABLES: [&str; 3] = ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"];

/// Set by the first [`take_passed_listeners`]: the descriptors have an
/// owner from then on.
static TAKEN: AtomicBool = AtomicBool::new(false);

/// A listening socket this process was given, and the name it was given
/// with.
pub struct PassedListener {
    /// Its name in `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`,
    /// which defaults to the socket unit's name); `None` without one.
    pub name: Option<String>,
    /// The socket, non-blocking and close-on-exec.
    pub listener: Listener,
}

/// Takes the listening sockets passed to this process, if the environment
/// says there are some for it, and unsets `LISTEN_PID`, `LISTEN_FDS` and
/// `LISTEN_FDNAMES`, as sd_listen_fds(3) does when asked to, so that no
/// process started later mistakes them for its own. Empty when there are
/// none; the second call finds none. Call it first thing in `main`, before
/// any other thread starts: changing the environment of a process whose
/// other threads may read it (C's `getenv`) is not safe.
pub fn take_passed_listeners() -> io::Result<Vec<PassedListener>> {
    let read = |name| env::var(name).ok();
    let announced = announced(
        read("LISTEN_PID").as_deref(),
        read("LISTEN_FDS").as_deref(),
        read("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    for name in VARIABLES {
        // SAFETY: std's own readers and writers of the environment take the
        // lock remove_var takes; the caller runs no other thread yet (the
        // doc's condition), so no C code reads it meanwhile.
        unsafe { env::remove_var(name) };
    }
    let Some(names) = announced? else {
        return Ok(Vec::new());
    };
    if TAKEN.swap(true, Ordering::SeqCst) {
        return Ok(Vec::new());
    }
    let mut passed = Vec::with_capacity(names.len());
    for (fd, name) in (FIRST_FD..).zip(names) {
        let listener = adopt(fd)
            .map_err(|e| io::Error::new(e.kind(), format!("descriptor {fd} of LISTEN_FDS: {e}")))?;
        passed.push(PassedListener { name, listener });
    }
    Ok(passed)
}

/// Descriptor `fd`, if it is open, as this process's own listener.
fn adopt(fd: RawFd) -> io::Result<Listener> {
    // SAFETY: F_GETFD only reads the descriptor's flags; a number that is
    // not open fails with EBADF.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_GETFD) })?;
    // SAFETY: `fd` is open, and by the convention it was passed for this
    // process to own; TAKEN makes sure it is taken over once.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Listener::adopt(fd)
}

/// The names of the descriptors passed (`None` for each one unnamed), if
/// the variables say some were passed to process `own_pid`; an error if
/// they are not what the convention says.
fn announced(
    pid: Option<&str>,
    count: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> io::Result<Option<Vec<Option<String>>>> {
    let invalid = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    let (Some(pid), Some(count)) = (pid, count) else {
        return Ok(None);
    };
    let Ok(pid) = pid.parse::<u32>() else {
        return invalid(format!("LISTEN_PID={pid:?} is not a process id"));
    };
    // Meant for another process (ours inherited the environment).
    if pid != own_pid {
        return Ok(None);
    }
    let Ok(count) = count.parse::<usize>() else {
        return invalid(format!("LISTEN_FDS={count:?} is not a count"));
    };
    let names: Vec<Option<String>> = match names {
        None => vec![None; count],
        Some(names) => names
            .split(':')
            .map(|name| Some(name.to_owned()).filter(|name| !name.is_empty()))
            .collect(),
    };
    if names.len() != count {
        let n = names.len();
        return invalid(format!(
            "LISTEN_FDNAMES has {n} names for LISTEN_FDS={count}"
        ));
    }
    Ok((count > 0).then_some(names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variables_announce_descriptors_only_to_the_process_they_name() {
        let names = |n: &[Option<&str>]| Some(n.iter().map(|s| s.map(str::to_owned)).collect());
        let seen = announced(Some("42"), Some("2"), None, 42).unwrap();
        assert_eq!(seen, names(&[None, None]));
        let seen = announced(Some("42"), Some("2"), Some("web:metrics"), 42).unwrap();
        assert_eq!(seen, names(&[Some("web"), Some("metrics")]));
        let seen = announced(Some("42"), Some("2"), Some(":metrics"), 42).unwrap();
        assert_eq!(seen, names(&[None, Some("metrics")]));
        // Another process's, none at all, or only half the convention.
        assert_eq!(announced(Some("41"), Some("2"), None, 42).unwrap(), None);
        assert_eq!(announced(Some("42"), Some("0"), None, 42).unwrap(), None);
        assert_eq!(announced(None, Some("2"), None, 42).unwrap(), None);
        assert_eq!(announced(Some("42"), None, None, 42).unwrap(), None);
    }

    #[test]
    fn variables_that_break_the_convention_are_an_error_that_names_them() {
        for (pid, count, names, says) in [
            ("x", "1", None, "LISTEN_PID=\"x\""),
            ("42", "-1", None, "LISTEN_FDS=\"-1\""),
            (
                "42",
                "2",
                Some("one"),
                "LISTEN_FDNAMES has 1 names for LISTEN_FDS=2",
            ),
        ] {
            let e = announced(Some(pid), Some(count), names, 42).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
