//! Addresses as users type them, through the built binary: IPv6 loopback,
//! Unix-domain sockets (and relays between them and TCP), the rules for a
//! socket file left behind, and a host name as upstream.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use nix::sys::signal::Signal;
use sockloop::reactor::Addr;

use crate::common::{IO_TIMEOUT, Rng, Server, sockloop};

/// A stream that can be split into a writer and a reader and half-closed.
trait Duplex: Read + Write + Send + Sized {
    fn split(&self) -> Self;
    fn finish_writing(&self);
}

impl Duplex for TcpStream {
    fn split(&self) -> Self {
        self.try_clone().unwrap()
    }
    fn finish_writing(&self) {
        self.shutdown(Shutdown::Write).unwrap();
    }
}

impl Duplex for UnixStream {
    fn split(&self) -> Self {
        self.try_clone().unwrap()
    }
    fn finish_writing(&self) {
        self.shutdown(Shutdown::Write).unwrap();
    }
}

/// Sends `data`, half-closes, and checks that exactly `expected` comes
/// back before EOF, byte for byte.
fn exchange(stream: impl Duplex, data: &[u8], expected: &[u8]) {
    let mut writer = stream.split();
    let mut reader = stream;
    let back = thread::scope(|s| {
        s.spawn(move || {
            writer.write_all(data).expect("write");
            writer.finish_writing();
        });
        let mut back = Vec::new();
        reader.read_to_end(&mut back).expect("read to EOF");
        back
    });
    assert!(
        back == expected,
        "got {} bytes back, expected {}",
        back.len(),
        expected.len()
    );
}

/// [`exchange`] with whatever listens on `addr`.
fn exchange_with(addr: &Addr, data: &[u8], expected: &[u8]) {
    match addr {
        Addr::Ip(ip) => {
            let stream = TcpStream::connect(ip).expect("connect");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            exchange(stream, data, expected);
        }
        Addr::Unix(path) => {
            let stream = UnixStream::connect(path).expect("connect");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            exchange(stream, data, expected);
        }
    }
}

/// Echoes a megabyte of seeded bytes through whatever `server` listens on.
fn echoes_a_megabyte(server: &Server, seed: u64) {
    let data = Rng::new(seed).bytes(1 << 20);
    exchange_with(server.listening(), &data, &data);
}

/// A path for a socket file, unique to this test run; removed on drop.
struct SocketPath(PathBuf);

impl SocketPath {
    fn new() -> SocketPath {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("sockloop-{}-{n}.sock", std::process::id());
        SocketPath(std::env::temp_dir().join(name))
    }

    fn listen_arg(&self) -> String {
        format!("unix:{}", self.0.display())
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn stop(mut server: Server) {
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit();
    assert!(status.success(), "exit status {status}");
}

#[test]
fn echo_and_framed_echo_serve_ipv6_loopback() {
    let echo = Server::start_on(&[], &["echo"], "[::1]:0", Stdio::null());
    assert!(matches!(echo.listening(), Addr::Ip(ip) if ip.is_ipv6()));
    echoes_a_megabyte(&echo, 1);
    let framed = Server::start_on(
        &[],
        &["echo", "--framing", "lines"],
        "[::1]:0",
        Stdio::null(),
    );
    exchange_with(framed.listening(), b"one\ntwo\r\n", b"one\ntwo\n");
}

#[test]
fn echo_and_framed_echo_serve_a_unix_socket_and_remove_it_on_exit() {
    let path = SocketPath::new();
    let echo = Server::start_on(&[], &["echo"], &path.listen_arg(), Stdio::null());
    echoes_a_megabyte(&echo, 2);
    stop(echo);
    assert!(!path.0.exists(), "the socket file outlived the server");

    let framed = Server::start_on(
        &[],
        &["echo", "--framing", "len:u16be"],
        &path.listen_arg(),
        Stdio::null(),
    );
    exchange_with(
        framed.listening(),
        b"\x00\x02hi\x00\x00",
        b"\x00\x02hi\x00\x00",
    );
    stop(framed);
    assert!(!path.0.exists());
}

#[test]
fn relays_carry_bytes_from_tcp_to_unix_and_from_unix_to_tcp() {
    let unix_path = SocketPath::new();
    let unix_echo = Server::start_on(&[], &["echo"], &unix_path.listen_arg(), Stdio::null());
    let tcp_echo = Server::start(&[], &["echo"], Stdio::null());

    let upstream = unix_path.listen_arg();
    let into_unix = Server::start(&[], &["relay", "--upstream", &upstream], Stdio::null());
    echoes_a_megabyte(&into_unix, 3);

    let relay_path = SocketPath::new();
    let upstream = tcp_echo.addr().to_string();
    let from_unix = Server::start_on(
        &[],
        &["relay", "--upstream", &upstream],
        &relay_path.listen_arg(),
        Stdio::null(),
    );
    echoes_a_megabyte(&from_unix, 4);
    drop(unix_echo);
}

#[test]
fn a_relay_serves_ipv6_and_takes_a_host_name_as_upstream() {
    let echo = Server::start(&[], &["echo"], Stdio::null());
    let by_name = format!("localhost:{}", echo.port);
    let relay = Server::start_on(
        &[],
        &["relay", "--upstream", &by_name],
        "[::1]:0",
        Stdio::null(),
    );
    echoes_a_megabyte(&relay, 5);

    let exited = {
        let mut command = sockloop(&[], &["relay", "--upstream", "no-such-host.invalid:80"]);
        command
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        Server::spawn(&mut command).finish()
    };
    assert!(!exited.status.success());
    assert!(
        exited.stderr.contains("--upstream") && exited.stderr.contains("no-such-host.invalid"),
        "the error names neither the flag nor the host:\n{}",
        exited.stderr
    );
}

/// Starts `sockloop echo --listen unix:PATH` expecting it to refuse.
fn refused_on(path: &Path) -> String {
    let mut command = sockloop(&[], &["echo"]);
    command
        .args(["--listen", &format!("unix:{}", path.display())])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let exited = Server::spawn(&mut command).finish();
    assert!(!exited.status.success(), "it started: {}", exited.stdout);
    exited.stderr
}

#[test]
fn a_stale_socket_file_is_replaced_but_a_live_one_and_other_files_are_not() {
    let path = SocketPath::new();
    // Left behind by a server that is gone: nobody answers on it.
    drop(UnixListener::bind(&path.0).unwrap());
    assert!(path.0.exists());
    let echo = Server::start_on(&[], &["echo"], &path.listen_arg(), Stdio::null());
    echoes_a_megabyte(&echo, 6);

    // A second server on the path of a live one is refused, and the first
    // one keeps its file and its clients.
    let error = refused_on(&path.0);
    assert!(error.contains("another server answers on it"), "{error}");
    echoes_a_megabyte(&echo, 7);
    stop(echo);

    // A file that is not a socket is never replaced.
    std::fs::write(&path.0, b"precious").unwrap();
    let error = refused_on(&path.0);
    assert!(error.contains("is not a socket"), "{error}");
    assert_eq!(std::fs::read(&path.0).unwrap(), b"precious");
}
