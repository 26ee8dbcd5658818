//! SIGUSR2: the server starts the binary at the path it was started from,
//! hands it its listening sockets, and drains once the new one is ready;
//! `--pid-file` names whichever process serves.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::activation::next_state;
use crate::common::{IO_TIMEOUT, LogFile, LogLines, Server, echo_all, sockloop, wait_until};

/// A directory of the test's own in the temporary directory, removed with
/// what it holds when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("sockloop-{name}-{}-{n}", std::process::id()));
        fs::create_dir(&dir).expect("make the test's directory");
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// The process id the pid file holds, if it holds one.
fn pid_in(file: &Path) -> Option<i32> {
    fs::read_to_string(file).ok()?.trim().parse().ok()
}

/// Whether process `pid` has ended (a zombie not yet reaped counts).
fn is_gone(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None) == Err(Errno::ESRCH) {
        return true;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // After the name in parentheses, the state: Z for a zombie.
    stat.rsplit_once(") ")
        .is_none_or(|(_, rest)| rest.starts_with('Z'))
}

/// Ends process `pid` (SIGTERM, then SIGKILL if it lingers) and waits until
/// it is gone: every generation after the first is no child of the test.
fn end_process(pid: i32) {
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    for _ in 0..400 {
        if is_gone(pid) {
            return;
        }
        thread::sleep(Duration::from_millis(10));
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    wait_until("the last server to end", || is_gone(pid).then_some(()));
}

/// Whichever process the pid file names, ended when dropped, however the
/// test ends.
struct Serving(PathBuf);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(pid) = pid_in(&self.0) {
            end_process(pid);
        }
    }
}

/// Sends SIGUSR2 to the process the pid file names and waits until the
/// upgrade is complete: the file names another process, and the old one has
/// drained and ended. Returns the new process's id.
fn upgrade(pid_file: &Path) -> i32 {
    let (old, new) = hand_over(pid_file);
    wait_until("the old process to end", || is_gone(old).then_some(()));
    new
}

/// Sends SIGUSR2 to the process the pid file names and waits until the
/// file names another process: the old id and the new.
fn hand_over(pid_file: &Path) -> (i32, i32) {
    let old = pid_in(pid_file).expect("a pid in the pid file");
    kill(Pid::from_raw(old), Signal::SIGUSR2).expect("SIGUSR2");
    let new = wait_until("a new pid in the pid file", || {
        pid_in(pid_file).filter(|&pid| pid != old)
    });
    (old, new)
}

/// What the clients saw, all threads together.
#[derive(Default)]
struct Tally {
    answered: AtomicU64,
    closed_between_requests: AtomicU64,
    failures: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn fail(&self, what: String) {
        self.failures.lock().unwrap().push(what);
    }
}

/// How one request went.
enum Reply {
    Answered,
    /// The server closed before the request was read: end of stream, and
    /// not a byte of the reply.
    ClosedBefore,
}

/// Sends `request` and reads its echo in full; an error says what broke
/// (a reset, a reply cut short, a timeout).
fn ask(stream: &mut TcpStream, request: &[u8]) -> Result<Reply, String> {
    stream
        .write_all(request)
        .map_err(|e| format!("write: {e}"))?;
    let mut reply = vec![0; request.len()];
    let mut got = 0;
    while got < reply.len() {
        match stream.read(&mut reply[got..]) {
            Ok(0) if got == 0 => return Ok(Reply::ClosedBefore),
            Ok(0) => return Err(format!("reply cut short at {got} of {}", request.len())),
            Ok(n) => got += n,
            Err(e) => return Err(format!("read after {got} bytes: {e}")),
        }
    }
    if reply != request {
        return Err(format!("reply {reply:?} to {request:?}"));
    }
    Ok(Reply::Answered)
}

fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    Ok(stream)
}

/// A client that keeps one connection and sends request after request,
/// connecting again whenever the server closes it between requests.
fn persistent_client(addr: SocketAddr, id: usize, tally: &Tally, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut stream = match connect(addr) {
            Ok(stream) => stream,
            Err(e) => return tally.fail(format!("client {id}: {e}")),
        };
        loop {
            n += 1;
            let request = format!("client {id} request {n}\n");
            match ask(&mut stream, request.as_bytes()) {
                Ok(Reply::Answered) => tally.answered.fetch_add(1, Ordering::Relaxed),
                Ok(Reply::ClosedBefore) => {
                    tally
                        .closed_between_requests
                        .fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Err(e) => return tally.fail(format!("client {id}, request {n}: {e}")),
            };
            if stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }
}

/// A new connection every few milliseconds, each with one request.
fn churning_client(addr: SocketAddr, tally: &Tally, stop: &AtomicBool) {
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let request = format!("new connection {n}\n");
        let asked = connect(addr).and_then(|mut stream| ask(&mut stream, request.as_bytes()));
        match asked {
            Ok(Reply::Answered) => {
                tally.answered.fetch_add(1, Ordering::Relaxed);
            }
            // Accepted by the process that drains, closed before it read:
            // the next round connects again.
            Ok(Reply::ClosedBefore) => {
                tally
                    .closed_between_requests
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => return tally.fail(format!("new connection {n}: {e}")),
        }
        thread::sleep(Duration::from_millis(3));
    }
}

/// The load's threads, stopped and joined however the test ends.
struct Load {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, persistent: usize, tally: &Arc<Tally>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for id in 0..persistent {
            let (tally, stop) = (Arc::clone(tally), Arc::clone(&stop));
            threads.push(thread::spawn(move || {
                persistent_client(addr, id, &tally, &stop);
            }));
        }
        let (tally, stop2) = (Arc::clone(tally), Arc::clone(&stop));
        threads.push(thread::spawn(move || churning_client(addr, &tally, &stop2)));
        Load { stop, threads }
    }

    fn stop(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

/// Answered requests so far, waiting until `more` than `since` have come
/// (the load goes on through the new process).
fn answered_past(tally: &Tally, since: u64, more: u64) -> u64 {
    wait_until("requests answered", || {
        let answered = tally.answered.load(Ordering::Relaxed);
        (answered >= since + more || !tally.failures.lock().unwrap().is_empty()).then_some(answered)
    })
}

#[test]
fn five_upgrades_under_load_lose_no_connection_and_cut_no_reply_short() {
    let dir = TempDir::new("upgrade");
    let pid_file = dir.join("pid");
    let log = LogFile::new("upgrade");
    let pid_arg = pid_file.to_str().unwrap();
    let args = ["echo", "--threads", "2", "--pid-file", pid_arg];
    let server = Server::start(&[], &args, log.stdio());
    let first = server.pid().as_raw();
    assert_eq!(pid_in(&pid_file), Some(first), "the pid file at start");
    let serving = Serving(pid_file.clone());
    let tally = Arc::new(Tally::default());
    let load = Load::start(server.addr(), 4, &tally);
    let mut answered = answered_past(&tally, 0, 50);
    let mut pids = vec![first];
    for _ in 0..5 {
        pids.push(upgrade(&pid_file));
        answered = answered_past(&tally, answered, 50);
        if !tally.failures.lock().unwrap().is_empty() {
            break;
        }
    }
    load.stop();
    let last = pid_in(&pid_file);
    drop(serving);
    drop(server);
    let failures = tally.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "{failures:#?}\nlog:\n{}", log.read());
    assert_eq!(pids.len(), 6, "five upgrades: {pids:?}");
    assert_eq!(last, Some(pids[5]));
    for &old in &pids[..5] {
        assert!(is_gone(old), "process {old} still there");
    }
    assert!(!pid_file.exists(), "the last process removes its pid file");
    let log = log.read();
    assert_eq!(log.matches("is ready; this one drains").count(), 5, "{log}");
    // A new process tells nobody but its predecessor it is ready.
    assert!(!log.contains("telling the service manager"), "{log}");
}

/// Under a load of new connections, some are always between their accept
/// and their first bytes when the drain begins: the old process accepted
/// them, their request is on its way. It is answered like any other.
#[test]
fn a_client_accepted_by_the_old_process_and_silent_until_its_drain_is_answered() {
    silent_until_the_drain_and_answered(&[], b"");
}

/// The same for a client that still owed its PROXY header: its first steps
/// are finished during the drain, not cut short (the TLS handshake is the
/// same step).
#[test]
fn a_client_owing_its_proxy_header_when_the_drain_begins_is_answered() {
    let header = b"PROXY TCP4 192.0.2.1 192.0.2.2 4000 80\r\n";
    silent_until_the_drain_and_answered(&["--proxy-protocol"], header);
}

/// Opens a connection that says nothing, upgrades, and once the old
/// process drains sends `first` (what it owes before any request) and a
/// request, which must be answered.
fn silent_until_the_drain_and_answered(args: &[&str], first: &[u8]) {
    let dir = TempDir::new("upgrade-silent");
    let pid_file = dir.join("pid");
    let log = LogFile::new("upgrade-silent");
    let mut server_args = vec!["echo", "--pid-file", pid_file.to_str().unwrap()];
    server_args.extend_from_slice(args);
    let server = Server::start(&[], &server_args, log.stdio());
    let _serving = Serving(pid_file.clone());
    let mut silent = connect(server.addr()).expect("connect");
    // Accepted in order: once a later client is echoed, the silent one is
    // the old process's.
    let later = [first, b"later\n"].concat();
    assert_eq!(echo_all(server.connect(), &later), b"later\n");
    let (old, _) = hand_over(&pid_file);
    wait_until("the old process to drain", || {
        log.read()
            .contains("shutting down: 1 connections")
            .then_some(())
    });
    silent.write_all(first).expect("write what it owes first");
    match ask(&mut silent, b"first request\n") {
        Ok(Reply::Answered) => {}
        Ok(Reply::ClosedBefore) => panic!("closed before its first request was answered"),
        Err(e) => panic!("{e}"),
    }
    drop(silent);
    wait_until("the old process to end", || is_gone(old).then_some(()));
}

#[test]
fn under_a_service_manager_the_new_process_becomes_the_main_one() {
    let dir = TempDir::new("upgrade-notify");
    let (pid_file, notify) = (dir.join("pid"), dir.join("notify"));
    let manager = UnixDatagram::bind(&notify).expect("bind the notify socket");
    manager.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let log = LogFile::new("upgrade-notify");
    let mut command = sockloop(&[], &["echo", "--listen", "127.0.0.1:0"]);
    command
        .args(["--pid-file", pid_file.to_str().unwrap()])
        .env("NOTIFY_SOCKET", &notify)
        .stdout(Stdio::null())
        .stderr(log.stdio());
    let server = Server::spawn(&mut command);
    let _serving = Serving(pid_file.clone());
    let old = server.pid().as_raw();
    assert_eq!(next_state(&manager), format!("READY=1\nMAINPID={old}"));
    let new = upgrade(&pid_file);
    assert_eq!(next_state(&manager), format!("MAINPID={new}"));
    kill(Pid::from_raw(new), Signal::SIGTERM).expect("SIGTERM");
    assert_eq!(next_state(&manager), "STOPPING=1", "{}", log.read());
}

/// A server started from a copy of the binary, whose copy is then
/// replaced by a script holding `body` (the "new build"), sent SIGUSR2:
/// the server, the log line that says why the upgrade failed, the pid file
/// and the copy's path.
fn upgrade_to_a_script(dir: &TempDir, body: &str) -> (Server, String, PathBuf, PathBuf) {
    let copy = dir.join("sockloop");
    let built = std::env::var_os("SOCKLOOP_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sockloop").into());
    fs::copy(&built, &copy).expect("copy the binary");
    let pid_file = dir.join("pid");
    let (copy_arg, pid_arg) = (copy.to_str().unwrap(), pid_file.to_str().unwrap());
    // The copy in the place of the binary the helper names ($1).
    let exec_copy = format!("shift; exec '{copy_arg}' \"$@\"");
    let prefix = ["sh", "-c", &exec_copy, "sh"];
    // The wait for a new process that never gets ready, made short.
    let args = ["echo", "--pid-file", pid_arg, "--ready-timeout", "1s"];
    let mut server = Server::start(&prefix, &args, Stdio::piped());
    let mut log = LogLines::new(server.take_stderr());
    // Installed as installers do: written beside it, renamed over it.
    let script = dir.join("sockloop.new");
    fs::write(&script, format!("#!/bin/sh\n{body}\n")).unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    fs::rename(&script, &copy).unwrap();
    server.signal(Signal::SIGUSR2);
    let why = log.wait_for("upgrade failed");
    (server, why, pid_file, copy)
}

/// The old process still serves, still named in the pid file; it removes
/// the file as it exits.
fn serves_on_then_exits(mut server: Server, pid_file: &Path) {
    assert_eq!(pid_in(pid_file), Some(server.pid().as_raw()));
    let stream = server.connect();
    assert_eq!(echo_all(stream, b"still here\n"), b"still here\n");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    assert!(!pid_file.exists(), "the pid file is removed at exit");
}

#[test]
fn a_new_binary_that_exits_at_once_leaves_the_old_process_serving() {
    let dir = TempDir::new("failed-upgrade");
    let (server, why, pid_file, copy) = upgrade_to_a_script(&dir, "exit 1");
    assert!(why.contains("exited with status 1"), "{why}");
    assert!(why.contains(copy.to_str().unwrap()), "{why}");
    serves_on_then_exits(server, &pid_file);
}

#[test]
fn a_new_process_that_never_says_ready_is_killed_and_the_old_one_serves_on() {
    let dir = TempDir::new("late-upgrade");
    // exec: the process the server started is the one that hangs.
    let (server, why, pid_file, _) = upgrade_to_a_script(&dir, "exec sleep 60");
    assert!(why.contains("not ready within 1s; killed"), "{why}");
    let hung: i32 = why
        .split("(process ")
        .nth(1)
        .and_then(|rest| rest.split(')').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no process id in {why}"));
    assert!(is_gone(hung), "process {hung} still there");
    serves_on_then_exits(server, &pid_file);
}
