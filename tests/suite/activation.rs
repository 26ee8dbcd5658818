//! Sockets passed in (systemd's socket activation: `LISTEN_PID`,
//! `LISTEN_FDS`, `LISTEN_FDNAMES`) and `READY=1` / `STOPPING=1` sent to
//! `NOTIFY_SOCKET`. The tests with `systemd-socket-activate` need Debian's
//! `systemd` package; the others pass the sockets themselves, through a
//! shell that puts them at descriptor 3 and on, and names its own process
//! id in `LISTEN_PID` before it becomes sockloop.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{ChildStderr, Stdio};

use nix::sys::signal::Signal;

use crate::common::{IO_TIMEOUT, LogFile, Server, echo_all, sockloop};

/// A path in the temporary directory, removed when dropped.
struct TempPath(PathBuf);

impl TempPath {
    fn new(name: &str) -> TempPath {
        let file = format!("sockloop-{name}-{}", std::process::id());
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

/// `sockloop ARGS` with `passed` at descriptor 3 (through stdin and the
/// shell), `LISTEN_PID` its own, `LISTEN_FDS=1`, and `NOTIFY_SOCKET`.
fn start_with_passed(passed: OwnedFd, notify: &TempPath, args: &[&str], log: &LogFile) -> Server {
    let script = r#"LISTEN_PID=$$; export LISTEN_PID; exec "$0" "$@" 3<&0 0</dev/null"#;
    let mut command = sockloop(&["sh", "-c", script], args);
    command
        .env("LISTEN_FDS", "1")
        .env("NOTIFY_SOCKET", &notify.0)
        .stdin(Stdio::from(passed))
        .stdout(Stdio::null())
        .stderr(log.stdio());
    Server::spawn(&mut command)
}

/// The next datagram on `socket`, as text.
fn next_state(socket: &UnixDatagram) -> String {
    let mut buf = [0; 512];
    let n = socket.recv(&mut buf).expect("a datagram within IO_TIMEOUT");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn a_passed_socket_is_served_by_every_reactor_after_ready_on_notify_socket() {
    let notify = TempPath::new("notify.sock");
    let states = UnixDatagram::bind(&notify.0).expect("bind the notify socket");
    states.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let log = LogFile::new("activation");
    let args = ["echo", "--listen", "127.0.0.1:1", "--threads", "2"];
    let server = start_with_passed(OwnedFd::from(listener), &notify, &args, &log);

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
