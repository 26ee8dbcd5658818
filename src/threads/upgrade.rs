//! SIGUSR2: a binary upgrade. The supervisor starts the program found at
//! the path this process was started from (the new build, once installed
//! there) with the same arguments, hands it every listening socket as
//! systemd would (`LISTEN_FDS`), and waits for its `READY=1` on a socket of
//! its own (`NOTIFY_SOCKET`). Only then does this process drain; until
//! then, and if the new one never gets ready, it serves as before.

use std::env;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::sys::{Child, Listener, NotifyListener, spawn_with_listeners};

/// How often, while waiting, to look whether the new process has ended.
const LOOK_EVERY: Duration = Duration::from_millis(50);

/// What an upgrade starts and what it hands over.
pub struct Upgrade {
    program: PathBuf,
    args: Vec<OsString>,
    /// Every listening socket, with its name for `LISTEN_FDNAMES`.
    listeners: Vec<(String, Listener)>,
    /// How long the new process has to say `READY=1`.
    ready_within: Duration,
}

impl Upgrade {
    /// An upgrade to the program this process was started as, with its
    /// arguments, handing over `listeners`. Make it at start: the path is
    /// taken as it is now.
    ///
    /// The path is `argv[0]` when it names one (made absolute): a symbolic
    /// link switched to a new release then starts the new release. Else
    /// (found on `PATH`) it is [`env::current_exe`], read now — after the
    /// file is replaced, Linux's `/proc/self/exe` names the old, deleted
    /// one.
    pub fn new(listeners: Vec<(String, Listener)>, ready_within: Duration) -> io::Result<Upgrade> {
        let mut args = env::args_os();
        let program = program_path(
            args.next().map(PathBuf::from),
            env::current_dir,
            env::current_exe,
        )?;
        Ok(Upgrade {
            program,
            args: args.collect(),
            listeners,
            ready_within,
        })
    }

    /// Starts the new process and waits until it is ready: its id, or why
    /// it is not serving (it could not start, it ended, or it took too
    /// long and was killed). A process that did not get ready is reaped.
    /// `manager` is where its states after `READY=1` go (see
    /// [`Notifier::manager_name`](crate::sys::Notifier::manager_name)).
    pub(super) fn start_successor(&self, manager: &str) -> Result<u32, String> {
        let program = self.program.display();
        let notify =
            NotifyListener::in_private_dir().map_err(|e| format!("a notify socket: {e}"))?;
        let passed: Vec<(&str, BorrowedFd<'_>)> = self
            .listeners
            .iter()
            .map(|(name, listener)| (name.as_str(), listener.as_fd()))
            .collect();
        let child =
            spawn_with_listeners(&self.program, &self.args, &passed, notify.path(), manager)
                .map_err(|e| format!("starting {program}: {e}"))?;
        let pid = child.id();
        let deadline = Instant::now() + self.ready_within;
        let not_ready = loop {
            match notify.wait_ready(pid, LOOK_EVERY) {
                Ok(true) => return Ok(pid),
                Ok(false) => {}
                Err(e) => break format!("reading {}: {e}", notify.path().display()),
            }
            match child.try_wait() {
                Ok(None) if Instant::now() < deadline => {}
                Ok(None) => break format!("not ready within {:?}", self.ready_within),
                Ok(Some(status)) => {
                    return Err(format!(
                        "{program} (process {pid}) exited with status {status} before it was ready"
                    ));
                }
                Err(e) => break format!("waiting for it: {e}"),
            }
        };
        Err(format!(
            "{program} (process {pid}): {not_ready}; {}",
            killed(&child)
        ))
    }

    /// Leaves the Unix-domain socket files to the new process, which
    /// serves them now.
    pub(super) fn leave_files(&mut self) {
        for (_, listener) in &mut self.listeners {
            listener.leave_file();
        }
    }
}

/// `argv0` made absolute against `cwd` if it names a path, else `exe`.
fn program_path(
    argv0: Option<PathBuf>,
    cwd: impl FnOnce() -> io::Result<PathBuf>,
    exe: impl FnOnce() -> io::Result<PathBuf>,
) -> io::Result<PathBuf> {
    match argv0 {
        Some(path) if path.components().count() > 1 => Ok(cwd()?.join(path)),
        _ => exe(),
    }
}

/// Kills and reaps `child`, and says so.
fn killed(child: &Child) -> String {
    match child.kill_and_reap() {
        Ok(()) => "killed".to_owned(),
        Err(e) => format!("killing it failed: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn the_program_is_argv0_made_absolute_unless_it_was_found_on_path() {
        let cwd = || Ok(PathBuf::from("/srv"));
        let exe = || Ok(PathBuf::from("/opt/sockloop-1.2/sockloop"));
        let path = |argv0: &str| program_path(Some(argv0.into()), cwd, exe).unwrap();
        assert_eq!(
            path("/usr/local/bin/sockloop"),
            Path::new("/usr/local/bin/sockloop")
        );
        assert_eq!(path("bin/sockloop"), Path::new("/srv/bin/sockloop"));
        assert_eq!(path("./sockloop"), Path::new("/srv/./sockloop"));
        // A bare name was found on PATH: where the executable is.
        assert_eq!(path("sockloop"), Path::new("/opt/sockloop-1.2/sockloop"));
        assert_eq!(
            program_path(None, cwd, exe).unwrap(),
            Path::new("/opt/sockloop-1.2/sockloop")
        );
    }
}
