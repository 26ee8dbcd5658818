//! The parent's side of `activation.rs` and `notify.rs`: starting a
//! process with listening sockets passed by sd_listen_fds(3)'s convention,
//! and hearing its `READY=1` on a socket of our own (sd_notify(3)'s) —
//! what a server replacing itself with a new build does.
//!
//! The child is made with fork(2) and execve(2) rather than `Command`:
//! `LISTEN_PID` must hold the child's own id, known only after the fork,
//! and between fork and exec only async-signal-safe calls may run (the
//! parent has other threads), so everything is allocated before the fork
//! and the child only writes digits into a buffer, moves descriptors and
//! resets its signals.

use std::env;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;

use super::HANDLED_SIGNALS;
use super::notify::MANAGER_NOTIFY_VAR;

/// Room for `LISTEN_PID=`, a process id's digits and the NUL.
const PID_VAR: &[u8; 11] = b"LISTEN_PID=";
const PID_DIGITS: usize = 11;

/// A child started with [`spawn_with_listeners`].
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
}

impl Child {
    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid.unsigned_abs()
    }

    /// Its exit status if it has ended (reaping it), `None` while it runs;
    /// a child killed by a signal is `128 + the signal`, as shells say.
    pub fn try_wait(&self) -> io::Result<Option<i32>> {
        let mut status = 0;
        // SAFETY: `status` is a live c_int that waitpid writes; the pid is
        // our own child's.
        let pid = Errno::result(unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) })?;
        if pid == 0 {
            return Ok(None);
        }
        Ok(Some(if libc::WIFEXITED(status) {
            libc::WEXITSTATUS(status)
        } else {
            128 + libc::WTERMSIG(status)
        }))
    }

    /// Kills it (SIGKILL) and waits for it to end, reaping it.
    pub fn kill_and_reap(&self) -> io::Result<()> {
        // SAFETY: kill(2) sends a signal; the pid is our own child's, not
        // yet reaped, so it names no other process.
        Errno::result(unsafe { libc::kill(self.pid, libc::SIGKILL) })?;
        let mut status = 0;
        // SAFETY: as in try_wait, blocking this time.
        super::retry(|| Errno::result(unsafe { libc::waitpid(self.pid, &mut status, 0) }))?;
        Ok(())
    }
}

/// Starts `program` with `args`, this process's environment (less the
/// variables of both conventions) and stdio, `listeners` at descriptors 3
/// and on with their names in `LISTEN_FDNAMES`, `LISTEN_FDS`, `LISTEN_PID`
/// (the child's id), `NOTIFY_SOCKET=notify` for its `READY=1`, and
/// `manager` in `SOCKLOOP_MANAGER_NOTIFY_SOCKET` for its states after that.
pub fn spawn_with_listeners(
    program: &Path,
    args: &[OsString],
    listeners: &[(&str, BorrowedFd<'_>)],
    notify: &Path,
    manager: &str,
) -> io::Result<Child> {
    let path = c_string(program.as_os_str())?;
    let argv: Vec<CString> = std::iter::once(program.as_os_str())
        .chain(args.iter().map(OsString::as_os_str))
        .map(c_string)
        .collect::<io::Result<_>>()?;
    let names: Vec<&str> = listeners.iter().map(|(name, _)| *name).collect();
    let mut envp = inherited_env()?;
    envp.push(c_string(OsStr::new(&format!(
        "LISTEN_FDS={}",
        listeners.len()
    )))?);
    envp.push(c_string(OsStr::new(&format!(
        "LISTEN_FDNAMES={}",
        names.join(":")
    )))?);
    let mut notify_var = OsString::from("NOTIFY_SOCKET=");
    notify_var.push(notify);
    envp.push(c_string(&notify_var)?);
    let manager_var = format!("{MANAGER_NOTIFY_VAR}={manager}");
    envp.push(c_string(OsStr::new(&manager_var))?);
    let mut pid_var = [0u8; PID_VAR.len() + PID_DIGITS];
    pid_var[..PID_VAR.len()].copy_from_slice(PID_VAR);
    let fds: Vec<RawFd> = listeners.iter().map(|(_, fd)| fd.as_raw_fd()).collect();
    if fds.len() > MAX_PASSED {
        let e = format!(
            "{} listening sockets: at most {MAX_PASSED} are passed",
            fds.len()
        );
        return Err(io::Error::new(io::ErrorKind::InvalidInput, e));
    }
    let argv = null_terminated(argv.iter().map(|s| s.as_ptr()));
    // The first slot is LISTEN_PID's, filled in the child.
    let mut envp =
        null_terminated(std::iter::once(std::ptr::null()).chain(envp.iter().map(|s| s.as_ptr())));
    // SAFETY: the child runs only `exec_child`, which makes async-signal-safe
    // calls on memory allocated before the fork; the parent goes on as before.
    let pid = Errno::result(unsafe { libc::fork() })?;
    if pid == 0 {
        // SAFETY: this is the child just forked; the arrays are as
        // exec_child asks, built above.
        unsafe { exec_child(&path, &argv, &mut envp, &mut pid_var, &fds) }
    }
    Ok(Child { pid })
}

/// How many listening sockets [`spawn_with_listeners`] passes at most.
const MAX_PASSED: usize = 64;

/// In the child after the fork: `LISTEN_PID` into `envp[0]`, the
/// descriptors to 3 and on, the signals back to their defaults, then the
/// program; never returns (exit status 127 if any of it fails).
///
/// # Safety
/// Only in a child just forked: `argv` and `envp` are null-terminated
/// arrays of pointers to NUL-terminated strings but for `envp[0]`, and
/// `fds` are open and at most [`MAX_PASSED`].
unsafe fn exec_child(
    path: &CString,
    argv: &[*const libc::c_char],
    envp: &mut [*const libc::c_char],
    pid_var: &mut [u8],
    fds: &[RawFd],
) -> ! {
    // SAFETY: every call below is async-signal-safe, and touches only
    // memory allocated before the fork.
    unsafe {
        write_digits(&mut pid_var[PID_VAR.len()..], libc::getpid().unsigned_abs());
        envp[0] = pid_var.as_ptr().cast();
        // Each out of the way first: a source may sit where another goes.
        let above = 3 + fds.len() as RawFd;
        let mut moved = [-1 as RawFd; MAX_PASSED];
        for (slot, &fd) in moved.iter_mut().zip(fds) {
            *slot = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, above);
        }
        for (i, &fd) in moved[..fds.len()].iter().enumerate() {
            // dup2 clears close-on-exec on the copy it makes.
            if fd < 0 || libc::dup2(fd, 3 + i as RawFd) < 0 {
                libc::_exit(127);
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        for signal in HANDLED_SIGNALS {
            libc::signal(signal as libc::c_int, libc::SIG_DFL);
        }
        libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
        libc::_exit(127)
    }
}

/// Writes `n` in decimal at the start of `buf`, then a NUL; no allocation.
fn write_digits(buf: &mut [u8], mut n: u32) {
    let mut digits = [0u8; 10];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (i, digit) in digits[..len].iter().rev().enumerate() {
        buf[i] = *digit;
    }
    buf[len] = 0;
}

/// This process's environment as `KEY=VALUE` strings, less what the
/// child is to be given anew.
fn inherited_env() -> io::Result<Vec<CString>> {
    const REPLACED: [&str; 5] = [
        "LISTEN_PID",
        "LISTEN_FDS",
        "LISTEN_FDNAMES",
        "NOTIFY_SOCKET",
        MANAGER_NOTIFY_VAR,
    ];
    env::vars_os()
        .filter(|(key, _)| !REPLACED.iter().any(|r| key == r))
        .map(|(key, value)| {
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            c_string(&pair)
        })
        .collect()
}

fn c_string(text: &OsStr) -> io::Result<CString> {
    CString::new(text.as_bytes()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

fn null_terminated(
    pointers: impl Iterator<Item = *const libc::c_char>,
) -> Vec<*const libc::c_char> {
    pointers.chain(std::iter::once(std::ptr::null())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_id_is_written_in_decimal_and_ended_with_nul() {
        for (n, text) in [
            (0, "0"),
            (7, "7"),
            (4_194_304, "4194304"),
            (u32::MAX, "4294967295"),
        ] {
            let mut buf = [b'x'; PID_DIGITS];
            write_digits(&mut buf, n);
            assert_eq!(&buf[..text.len()], text.as_bytes());
            assert_eq!(buf[text.len()], 0);
        }
    }
}
