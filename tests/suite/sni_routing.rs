//! `relay --route-sni`: TLS clients routed by the server name of their
//! ClientHello, which the relay reads and passes on untouched. Two TLS
//! echo servers, for `a.test` and `b.test`, each with a self-signed
//! certificate of its own: a client that trusts only the certificate of
//! the name it asks for verifies the server it reached, so a client served
//! proves that it was routed to the right one.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustls::{ClientConnection, StreamOwned};
use sockloop::codec::client_hello;
use sockloop::tls::{Trust, client_config, server_name};

use crate::common::{IO_TIMEOUT, LogFile, Server, sockloop, wait_until};
use crate::metrics::{scrape, value, with_metrics};

/// A TLS echo server for one name, and the certificate its clients trust.
struct NamedEcho {
    name: &'static str,
    /// Holds cert.pem and key.pem, removed on drop.
    dir: PathBuf,
    server: Server,
    _log: LogFile,
}

impl NamedEcho {
    /// `sockloop cert --name NAME`, then `sockloop echo` serving it.
    fn start(name: &'static str) -> NamedEcho {
        // Tests run at once in one process: each its own directory.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let unique = format!("sockloop-sni-{name}-{}-{n}", std::process::id());
        let dir = std::env::temp_dir().join(unique);
        let dir_arg = dir.to_str().expect("a UTF-8 temp path");
        let made = sockloop(&[], &["cert", "--out", dir_arg, "--name", name])
            .output()
            .expect("run sockloop cert");
        assert!(made.status.success(), "sockloop cert: {made:?}");
        let log = LogFile::new(&format!("sni-echo-{name}"));
        let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
        let tls = ["--tls-cert", path(&cert), "--tls-key", path(&key)];
        let server = Server::start(&[], &[&["echo"][..], &tls].concat(), log.stdio());
        NamedEcho {
            name,
            dir,
            server,
            _log: log,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("cert.pem")
    }

    /// `NAME=127.0.0.1:PORT`, for --route-sni.
    fn route(&self) -> String {
        format!("{}={}", self.name, self.server.addr())
    }
}

impl Drop for NamedEcho {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// `sockloop relay ARGS`, stderr to `log`.
fn relay(args: &[&str], log: &LogFile) -> Server {
    Server::start(&[], &[&["relay"][..], args].concat(), log.stdio())
}

/// The echoes for `a.test` and `b.test` behind a relay routing each name
/// to its own.
struct Routed {
    a: NamedEcho,
    b: NamedEcho,
    relay: Server,
    log: LogFile,
}

impl Routed {
    fn start(log_name: &str) -> Routed {
        let (a, b) = (NamedEcho::start("a.test"), NamedEcho::start("b.test"));
        let log = LogFile::new(log_name);
        let relay = relay(
            &["--route-sni", &a.route(), "--route-sni", &b.route()],
            &log,
        );
        Routed { a, b, relay, log }
    }
}

/// For each `NAME=CAFILE` after the port: a Python `ssl` client asking for
/// NAME and trusting CAFILE alone, which sends a line and reads its echo.
/// One line per client: verified, not verified (and why), or closed.
const PY_CLIENTS: &str = r#"
import socket, ssl, sys
port = int(sys.argv[1])
for arg in sys.argv[2:]:
    name, cafile = arg.split("=", 1)
    ctx = ssl.create_default_context(cafile=cafile)
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
            s = ctx.wrap_socket(raw, server_hostname=name)
            line = ("hello " + name + "\n").encode()
            s.sendall(line)
            got = b""
            while len(got) < len(line):
                data = s.recv(len(line) - len(got))
                if not data:
                    raise ConnectionError("EOF after %d bytes of the echo" % len(got))
                got += data
            assert got == line, got
            s.unwrap()
            print(name, "verified and echoed")
    except ssl.SSLCertVerificationError as e:
        print(name, "not verified:", e.verify_message)
    except (ssl.SSLError, OSError) as e:
        print(name, "closed:", type(e).__name__)
"#;

/// Runs one Python client per `(name, CA)` against `port`; their lines.
fn python_clients(port: u16, clients: &[(&str, &Path)]) -> String {
    let mut command = Command::new("python3");
    command.args(["-c", PY_CLIENTS, &port.to_string()]);
    for (name, ca) in clients {
        command.arg(format!("{name}={}", ca.display()));
    }
    let out = command
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (the tests need it, with its ssl module)");
    assert!(out.status.success(), "python3: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn route_sni_sends_each_name_to_the_server_whose_certificate_it_verifies() {
    let Routed { a, b, relay, log } = Routed::start("sni-relay");
    let out = python_clients(
        relay.port,
        &[
            ("a.test", &a.ca()),
            ("b.test", &b.ca()),
            ("b.test", &b.ca()),
            ("a.test", &a.ca()),
            // The certificates tell the servers apart.
            ("a.test", &b.ca()),
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 5, "{out}\n{}", log.read());
    for (line, name) in lines[..4]
        .iter()
        .zip(["a.test", "b.test", "b.test", "a.test"])
    {
        assert_eq!(
            *line,
            format!("{name} verified and echoed"),
            "{out}\n{}",
            log.read()
        );
    }
    assert!(lines[4].starts_with("a.test not verified"), "{out}");
}

#[test]
fn a_routed_client_is_spliced_after_its_hello() {
    let (a, b) = (NamedEcho::start("a.test"), NamedEcho::start("b.test"));
    let (route_a, route_b) = (a.route(), b.route());
    let args = ["relay", "--route-sni", &route_a, "--route-sni", &route_b];
    let (relay, metrics, _log) = with_metrics(&[&args[..], &["--splice", "always"]].concat());
    let out = python_clients(relay.port, &[("a.test", &a.ca()), ("b.test", &b.ca())]);
    assert_eq!(
        out,
        "a.test verified and echoed\nb.test verified and echoed\n"
    );
    let spliced = value(&scrape(&metrics), "sockloop_spliced_bytes_total");
    assert!(spliced > 0.0, "nothing spliced");
}

/// The first flight of a rustls client asking for `name`, trusting `ca`:
/// its ClientHello, and the connection to carry on with.
fn rustls_hello(name: &str, ca: &Path) -> (ClientConnection, Vec<u8>) {
    let config = client_config(&Trust::Roots(ca.to_owned()), &[]).expect("a client config");
    let mut conn = ClientConnection::new(config, server_name(name).expect("a name")).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).expect("a ClientHello");
    (conn, hello)
}

#[test]
fn a_client_hello_sent_one_byte_at_a_time_is_routed() {
    let Routed { b, relay, log, .. } = Routed::start("sni-bytes");
    let (conn, hello) = rustls_hello("b.test", &b.ca());
    let mut socket = relay.connect();
    socket.set_nodelay(true).unwrap();
    socket.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    for byte in &hello {
        socket.write_all(std::slice::from_ref(byte)).unwrap();
        // Pacing, so that most bytes reach the relay in reads of their own.
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut tls = StreamOwned::new(conn, socket);
    tls.write_all(b"one byte at a time\n").unwrap();
    let mut echo = [0; 19];
    tls.read_exact(&mut echo)
        .unwrap_or_else(|e| panic!("no echo from b.test: {e}\n{}", log.read()));
    assert_eq!(&echo, b"one byte at a time\n");
}

#[test]
fn a_name_without_a_route_is_closed_and_logged_without_a_default() {
    let a = NamedEcho::start("a.test");
    let log = LogFile::new("sni-unknown");
    let relay = relay(&["--route-sni", &a.route()], &log);
    let out = python_clients(relay.port, &[("c.test", &a.ca())]);
    assert!(out.starts_with("c.test closed:"), "{out}\n{}", log.read());
    let line = wait_until("the warning", || {
        log.read()
            .lines()
            .find(|l| l.contains("no route for server name `c.test`"))
            .map(str::to_owned)
    });
    assert!(
        line.contains("WARN") && line.contains("127.0.0.1:"),
        "{line}"
    );
    // And a client still routed after it.
    let out = python_clients(relay.port, &[("a.test", &a.ca())]);
    assert_eq!(out.trim(), "a.test verified and echoed", "{}", log.read());
}

#[test]
fn a_name_without_a_route_goes_to_the_default_upstream() {
    let (a, b) = (NamedEcho::start("a.test"), NamedEcho::start("b.test"));
    let log = LogFile::new("sni-default");
    let default = b.server.addr().to_string();
    let relay = relay(&["--route-sni", &a.route(), "--upstream", &default], &log);
    // b.test's server presents b.test: a client asking for it by that name
    // but reaching it only as the default trusts it.
    let out = python_clients(relay.port, &[("b.test", &b.ca()), ("a.test", &a.ca())]);
    assert_eq!(
        out,
        "b.test verified and echoed\na.test verified and echoed\n",
        "{}",
        log.read()
    );
}

/// Reads until the relay ends `stream`: EOF or a reset, never bytes.
fn closed_by_relay(mut stream: TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    match stream.read(&mut [0; 64]) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the relay did not close the client: {other:?}"),
    }
}

/// A generated ClientHello asking for `name`, in one record.
fn hello_for(name: &str) -> Vec<u8> {
    let mut wire = Vec::new();
    client_hello::encode(Some(name), &[], 16384, &mut wire);
    wire
}

#[test]
fn bad_stalled_and_unrouted_hellos_cost_only_their_own_connections_and_are_counted() {
    let a = NamedEcho::start("a.test");
    let route = a.route();
    let args = ["relay", "--route-sni", &route, "--handshake-timeout", "1s"];
    let (relay, metrics, mut log) = with_metrics(&args);
    let mut plaintext = relay.connect();
    plaintext.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    closed_by_relay(plaintext);
    log.wait_for("not a TLS handshake: first byte 0x47");
    // Half a hello, then nothing: the frame timeout, at the handshake timeout.
    let mut stalled = relay.connect();
    let hello = hello_for("a.test");
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    closed_by_relay(stalled);
    log.wait_for("frame still incomplete 1s after its first byte");
    let mut unknown = relay.connect();
    unknown.write_all(&hello_for("c.test")).unwrap();
    closed_by_relay(unknown);
    log.wait_for("no route for server name `c.test`");
    let samples = scrape(&metrics);
    assert_eq!(value(&samples, "sockloop_sni_bad_hellos_total"), 1.0);
    assert_eq!(value(&samples, "sockloop_sni_unrouted_total"), 1.0);
    let out = python_clients(relay.port, &[("a.test", &a.ca())]);
    assert_eq!(out.trim(), "a.test verified and echoed");
}
