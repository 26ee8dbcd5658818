//! Telling the process that started this one how it is doing, by the
//! convention of sd_notify(3): a datagram of `KEY=VALUE` lines to the
//! Unix-domain socket that `NOTIFY_SOCKET` names — a path, or `@name` in
//! Linux's abstract namespace. systemd reads it for a `Type=notify`
//! service; a server replacing itself can read it from its successor.

use std::env;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockType, UnixAddr};

use super::birth::{SEND_FLAGS, SOCKET_FLAGS, prepare};

/// Set by a server for the process that replaces it: where the states
/// after `READY=1` go — the service manager's socket, or nowhere when
/// empty — while `READY=1` goes to `NOTIFY_SOCKET`, the old process that
/// waits for it and is gone soon after.
pub const MANAGER_NOTIFY_VAR: &str = "SOCKLOOP_MANAGER_NOTIFY_SOCKET";

/// Where the states go: a socket of our own and the addresses to send to.
pub struct Notifier {
    socket: OwnedFd,
    /// Where `READY=1` goes.
    ready_to: Target,
    /// Where every other state goes, if anywhere.
    manager: Option<Target>,
}

/// A socket to send to, and its name as it was given, for errors.
#[derive(Clone)]
struct Target {
    addr: UnixAddr,
    name: String,
}

impl Target {
    fn new(name: &str) -> io::Result<Target> {
        let addr = notify_addr(name)
            .map_err(|e| io::Error::new(e.kind(), format!("NOTIFY_SOCKET={name}: {e}")))?;
        Ok(Target {
            addr,
            name: name.to_owned(),
        })
    }
}

impl Notifier {
    /// The notifier `NOTIFY_SOCKET` asks for, if it is set (and
    /// `SOCKLOOP_MANAGER_NOTIFY_SOCKET`, if a server that replaces itself set it).
    pub fn from_env() -> io::Result<Option<Notifier>> {
        let mut notifier = match env::var("NOTIFY_SOCKET") {
            Ok(name) if !name.is_empty() => Notifier::to(&name)?,
            _ => return Ok(None),
        };
        if let Ok(manager) = env::var(MANAGER_NOTIFY_VAR) {
            notifier.manager = match manager.as_str() {
                "" => None,
                name => Some(Target::new(name)?),
            };
        }
        Ok(Some(notifier))
    }

    /// A notifier that sends to `name`: a path, or `@name` (Linux).
    pub fn to(name: &str) -> io::Result<Notifier> {
        let target = Target::new(name)?;
        Ok(Notifier {
            socket: datagram_socket()?,
            ready_to: target.clone(),
            manager: Some(target),
        })
    }

    /// Where the states after `READY=1` go: the name a successor is to be
    /// given in `SOCKLOOP_MANAGER_NOTIFY_SOCKET` (empty: nowhere).
    pub fn manager_name(&self) -> &str {
        self.manager.as_ref().map_or("", |target| &target.name)
    }

    /// `READY=1`, with this process's id: it is serving.
    pub fn ready(&self) -> io::Result<()> {
        let state = format!("READY=1\nMAINPID={}", std::process::id());
        self.send_to(&self.ready_to, &state)
    }

    /// `STOPPING=1`: a graceful shutdown has begun.
    pub fn stopping(&self) -> io::Result<()> {
        self.send("STOPPING=1")
    }

    /// One datagram of `state`, `KEY=VALUE` lines, to the service manager
    /// if there is one. It never blocks: a reader whose queue is full
    /// makes it fail (`WouldBlock`).
    pub fn send(&self, state: &str) -> io::Result<()> {
        match &self.manager {
            Some(manager) => self.send_to(manager, state),
            None => Ok(()),
        }
    }

    fn send_to(&self, target: &Target, state: &str) -> io::Result<()> {
        let fd = self.socket.as_raw_fd();
        super::retry(|| socket::sendto(fd, state.as_bytes(), &target.addr, SEND_FLAGS))
            .map(drop)
            .map_err(|e| {
                let kind = io::Error::from(e).kind();
                io::Error::new(kind, format!("{}: {e}", target.name))
            })
    }
}

/// The address `NOTIFY_SOCKET` names.
fn notify_addr(name: &str) -> io::Result<UnixAddr> {
    match name.strip_prefix('@') {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        Some(name) => Ok(UnixAddr::new_abstract(name.as_bytes())?),
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        Some(_) => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "an abstract socket name (@): only Linux has them",
        )),
        None => Ok(UnixAddr::new(name)?),
    }
}

/// A non-blocking, close-on-exec Unix-domain datagram socket.
fn datagram_socket() -> io::Result<OwnedFd> {
    let socket = socket::socket(AddressFamily::Unix, SockType::Datagram, SOCKET_FLAGS, None)?;
    prepare(&socket)?;
    Ok(socket)
}

/// The socket a child's states come to: its path is the child's
/// `NOTIFY_SOCKET`. The file is removed when it closes.
pub struct NotifyListener {
    socket: OwnedFd,
    path: PathBuf,
    /// The directory made for it, removed after it.
    dir: Option<PathBuf>,
}

impl NotifyListener {
    /// Binds a datagram socket at `path`, which must not exist.
    pub fn bind(path: &Path) -> io::Result<NotifyListener> {
        let socket = datagram_socket()?;
        socket::bind(socket.as_raw_fd(), &UnixAddr::new(path)?)?;
        Ok(NotifyListener {
            socket,
            path: path.to_owned(),
            dir: None,
        })
    }

    /// Binds one in a directory of its own, made in the temporary
    /// directory and open to this user only, so that no other user can
    /// send it a `READY=1`; both are removed when it closes.
    pub fn in_private_dir() -> io::Result<NotifyListener> {
        static MADE: AtomicU64 = AtomicU64::new(0);
        let n = MADE.fetch_add(1, Ordering::Relaxed);
        let name = format!("sockloop-{}-{n}", std::process::id());
        let dir = env::temp_dir().join(name);
        fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let bound = NotifyListener::bind(&dir.join("notify"));
        let Ok(mut listener) = bound else {
            let _ = fs::remove_dir(&dir);
            return bound;
        };
        listener.dir = Some(dir);
        Ok(listener)
    }

    /// Where it listens.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Waits up to `timeout` for `READY=1` from process `pid` (the
    /// `MAINPID` it names, if it names one): true once it came, false when
    /// the time ran out first. Other states are read and passed over.
    pub fn wait_ready(&self, pid: u32, timeout: Duration) -> io::Result<bool> {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
            let mut fds = [PollFd::new(self.socket.as_fd(), PollFlags::POLLIN)];
            if super::retry(|| poll(&mut fds, wait))? == 0 {
                return Ok(false);
            }
            let fd = self.socket.as_raw_fd();
            let n = match super::retry(|| socket::recv(fd, &mut buf, MsgFlags::empty())) {
                Ok(n) => n,
                Err(nix::errno::Errno::EAGAIN) => continue,
                Err(e) => return Err(e.into()),
            };
            if says_ready(&String::from_utf8_lossy(&buf[..n]), pid) {
                return Ok(true);
            }
        }
    }
}

impl Drop for NotifyListener {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
        if let Some(dir) = &self.dir {
            let _ = fs::remove_dir(dir);
        }
    }
}

/// Whether `state` holds `READY=1` from `pid`: its `MAINPID`, if named.
fn says_ready(state: &str, pid: u32) -> bool {
    let mut ready = false;
    let mut from = None;
    for line in state.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => ready = true,
            Some(("MAINPID", main)) => from = main.parse::<u32>().ok(),
            _ => {}
        }
    }
    ready && from.is_none_or(|main| main == pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_counts_only_from_the_process_it_names() {
        assert!(says_ready("READY=1", 7));
        assert!(says_ready("READY=1\nMAINPID=7", 7));
        assert!(says_ready("STATUS=up\nMAINPID=7\nREADY=1\n", 7));
        assert!(!says_ready("READY=1\nMAINPID=8", 7));
        assert!(!says_ready("STOPPING=1", 7));
        assert!(!says_ready("READY=0\nMAINPID=7", 7));
    }
}
