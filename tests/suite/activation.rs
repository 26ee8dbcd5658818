//! Sockets passed in (systemd's socket activation: `LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`) and `READY=1` / `STOPPING=1` sent to
//! `NOTIFY_SOCKET`. The tests with `systemd-socket-activate` need Debian's
//! `systemd` package; the others pass the sockets themselves, through a
//! shell that puts them at descriptor 3 and on, and names its own process
//! id in `LISTEN_PID` before it becomes sockloop.

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{ChildStderr, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sockloop::sys::{Child, NotifyListener, spawn_with_listeners};

use crate::common::{IO_TIMEOUT, LogFile, Server, echo_all, sockloop, wait_until};

/// A path in the temporary directory, of its own in this process (the
/// tests run at once), removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("sockloop-{name}-{}-{n}", std::process::id());
        let path = std::env::temp_dir().join(file);
        let _ = std::fs::remove_file(&path);
        TempPath(path)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// `systemd-socket-activate -l LISTEN sockloop echo`: the socket is
/// opened, and sockloop started on the first connection, with the
/// activator's stderr (its own lines, then sockloop's log).
fn socket_activate(listen: &str) -> (Server, BufReader<ChildStderr>) {
    let mut command = sockloop(&["systemd-socket-activate", "-l", listen], &["echo"]);
    command.stdout(Stdio::null()).stderr(Stdio::piped());
    let mut server = Server::spawn(&mut command);
    let mut stderr = BufReader::new(server.take_stderr());
    let mut line = String::new();
    stderr
        .read_line(&mut line)
        .expect("the activator's first line");
    assert!(line.starts_with("Listening on"), "{line:?}");
    (server, stderr)
}

/// Reads `log` until a line holds `needle`; panics at its end.
fn wait_for_line(log: &mut impl BufRead, needle: &str) -> String {
    let mut line = String::new();
    loop {
        line.clear();
        let n = log.read_line(&mut line).expect("reading the log");
        assert!(n > 0, "the log ended before {needle:?}");
        if line.contains(needle) {
            return line;
        }
    }
}

/// SIGTERM, and a clean exit.
fn stop(server: Server) {
    server.signal(Signal::SIGTERM);
    exits_cleanly(server);
}

/// Waits for a server already signalled to exit, and for status 0.
fn exits_cleanly(mut server: Server) {
    assert!(server.wait_exit().success());
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn echo_serves_the_tcp_socket_systemd_passes_without_listen() {
    // The activator takes no port 0: a port that was free a moment ago.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let (server, mut log) = socket_activate(&format!("127.0.0.1:{port}"));
    let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_all(stream, b"passed in\n"), b"passed in\n");
    let said = wait_for_line(&mut log, "serving on the listening sockets passed");
    assert!(said.contains(&format!("127.0.0.1:{port}")), "{said}");
    assert!(
        said.contains("--listen 127.0.0.1:7878 is not bound"),
        "{said}"
    );
    stop(server);
}

#[test]
#[ignore = "needs systemd-socket-activate (Debian package systemd)"]
fn echo_serves_the_unix_socket_systemd_passes_and_leaves_its_file() {
    let path = TempPath::new("activated.sock");
    let (server, mut log) = socket_activate(path.0.to_str().unwrap());
    let mut stream = UnixStream::connect(&path.0).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(b"over a path\n").unwrap();
    let mut reply = [0; 12];
    stream.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"over a path\n");
    let said = wait_for_line(&mut log, "serving on the listening sockets passed");
    assert!(
        said.contains(&format!("unix:{}", path.0.display())),
        "{said}"
    );
    drop(stream);
    stop(server);
    // The file is the activator's (systemd's socket unit's), not sockloop's.
    assert!(
        path.0.exists(),
        "sockloop removed a socket file it did not make"
    );
}

/// `sockloop ARGS` with `passed` at descriptor 3 and on (through stdin and
/// stdout, which the shell moves there), `LISTEN_PID` its own, `LISTEN_FDS`
/// counting them, and `NOTIFY_SOCKET`; extra variables in `env`.
fn start_with_passed(
    passed: Vec<OwnedFd>,
    env: &[(&str, &str)],
    notify: &TempPath,
    args: &[&str],
    log: &LogFile,
) -> Server {
    let moves = ["3<&0 0</dev/null", "3<&0 4<&1 0</dev/null 1>/dev/null"];
    let script = format!(
        r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@" {}"#,
        moves[passed.len() - 1]
    );
    let mut command = sockloop(&["sh", "-c", &script], args);
    let mut passed = passed.into_iter();
    command
        .env("LISTEN_FDS", passed.len().to_string())
        .env("NOTIFY_SOCKET", &notify.0)
        .envs(env.iter().copied())
        .stdin(Stdio::from(passed.next().expect("a socket to pass")))
        .stdout(passed.next().map_or_else(Stdio::null, Stdio::from))
        .stderr(log.stdio());
    Server::spawn(&mut command)
}

/// A Unix datagram socket to read READY=1 and STOPPING=1 from.
fn notify_socket() -> (TempPath, UnixDatagram) {
    let notify = TempPath::new("notify.sock");
    let states = UnixDatagram::bind(&notify.0).expect("bind the notify socket");
    states.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    (notify, states)
}

/// The next datagram on `socket`, as text.
pub(crate) fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0; 512];
    let n = socket.recv(&mut buf).expect("a datagram within IO_TIMEOUT");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_passed_socket_is_served_by_every_reactor_after_ready_on_notify_socket() {
    let (notify, states) = notify_socket();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let log = LogFile::new("activation");
    let args = ["echo", "--listen", "127.0.0.1:1", "--threads", "2"];
    let server = start_with_passed(vec![listener.into()], &[], &notify, &args, &log);

    let ready = next_state(&states);
    assert_eq!(ready, format!("READY=1\nMAINPID={}", server.pid()));
    // Ready means serving: the echo answers at once, from either reactor.
    for i in 0..8u8 {
        let stream = TcpStream::connect(addr).expect("connect to the passed socket");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert_eq!(echo_all(stream, &[i; 100]), [i; 100]);
    }
    let said = log.read();
    assert!(
        said.contains(&format!(
            "passed (LISTEN_FDS): {addr}, shared by 2 reactors"
        )),
        "{said}"
    );
    server.signal(Signal::SIGTERM);
    assert_eq!(next_state(&states), "STOPPING=1");
    exits_cleanly(server);
}

#[test]
fn a_passed_socket_named_metrics_serves_the_metrics_and_the_other_the_echo() {
    let (notify, states) = notify_socket();
    let echo = TcpListener::bind("127.0.0.1:0").unwrap();
    let metrics = TcpListener::bind("127.0.0.1:0").unwrap();
    let (echo_addr, metrics_addr) = (echo.local_addr().unwrap(), metrics.local_addr().unwrap());
    let log = LogFile::new("activation-metrics");
    let names = [("LISTEN_FDNAMES", "echo:metrics")];
    let passed = vec![echo.into(), metrics.into()];
    let server = start_with_passed(passed, &names, &notify, &["echo"], &log);
    assert!(next_state(&states).starts_with("READY=1\n"));

    let client = TcpStream::connect(echo_addr).expect("connect to the echo");
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_all(client, b"not metrics\n"), b"not metrics\n");
    let mut scrape = TcpStream::connect(metrics_addr).expect("connect to the metrics");
    scrape.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    scrape
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    scrape.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("sockloop_accepted_total"), "{answer}");
    let said = log.read();
    assert!(
        said.contains(&format!("metrics on http://{metrics_addr}/metrics")),
        "{said}"
    );
    stop(server);
}

/// A child of [`spawn_with_listeners`], killed and reaped however the
/// test ends.
struct Successor(Child);

impl Successor {
    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.0.id() as i32), signal).expect("signal the successor");
    }

    fn wait_exit(&self) -> i32 {
        wait_until("the successor to exit", || {
            self.0.try_wait().expect("waitpid")
        })
    }
}

impl Drop for Successor {
    fn drop(&mut self) {
        if self.0.try_wait().is_ok_and(|status| status.is_none()) {
            self.signal(Signal::SIGKILL);
            self.wait_exit();
        }
    }
}

#[test]
fn a_successor_given_the_listener_says_ready_and_serves_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let notify = TempPath::new("successor.sock");
    let ready = NotifyListener::bind(&notify.0).expect("bind the notify socket");
    let bin = std::env::var_os("SOCKLOOP_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sockloop").into());
    let args = ["echo", "--listen", "127.0.0.1:1"].map(OsString::from);
    let passed = [("echo", listener.as_fd())];
    let child =
        spawn_with_listeners(bin.as_ref(), &args, &passed, ready.path(), "").expect("spawn");
    let successor = Successor(child);
    // This process's copy may go: the successor has its own.
    drop(listener);
    let said = ready.wait_ready(successor.0.id(), IO_TIMEOUT);
    assert!(said.expect("reading the notify socket"), "no READY=1");
    let stream = TcpStream::connect(addr).expect("connect to the handed-over socket");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    assert_eq!(echo_all(stream, b"handed over\n"), b"handed over\n");
    successor.signal(Signal::SIGTERM);
    assert_eq!(successor.wait_exit(), 0);
}

#[test]
fn the_pid_file_holds_the_id_while_serving_and_goes_at_exit_unless_replaced() {
    let pid_file = TempPath::new("echo.pid");
    let path = pid_file.0.to_str().unwrap();
    let server = Server::start(&[], &["echo", "--pid-file", path], Stdio::null());
    let written = std::fs::read_to_string(&pid_file.0).expect("the pid file, once listening");
    assert_eq!(written, format!("{}\n", server.pid()));
    stop(server);
    assert!(!pid_file.0.exists(), "the pid file outlived its server");

    // A successor wrote its own id: that file stays.
    let server = Server::start(&[], &["echo", "--pid-file", path], Stdio::null());
    std::fs::write(&pid_file.0, "4194304\n").unwrap();
    stop(server);
    let kept = std::fs::read_to_string(&pid_file.0).expect("the successor's pid file");
    assert_eq!(kept, "4194304\n");
}
