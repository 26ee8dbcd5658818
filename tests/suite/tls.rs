//! TLS against clients nobody here wrote (Python's `ssl`, `openssl
//! s_client`), against hostile handshakes, and through the relay both ways.
#![cfg(feature = "tls")]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;

use nix::sys::signal::Signal;
use rustls::{ClientConnection, StreamOwned};

use sockloop::app::relay::{Relay, SpliceMode};
use sockloop::reactor::{Config, ListenOptions, Reactor, Serve};
use sockloop::tls::{Trust, client_config, server_config, server_name};

use crate::common::{IO_TIMEOUT, LogFile, Rng, Server, TestServer, sockloop, wait_until};

/// A directory with `sockloop cert`'s certificate and key, removed on drop.
struct CertDir(PathBuf);

impl CertDir {
    fn new(name: &str) -> CertDir {
        let dir = std::env::temp_dir().join(format!("sockloop-tls-{name}-{}", std::process::id()));
        let out = sockloop(&[], &["cert", "--out", dir.to_str().unwrap()])
            .output()
            .expect("run sockloop cert");
        assert!(out.status.success(), "sockloop cert: {out:?}");
        CertDir(dir)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }

    /// `sockloop ARGS --tls-cert CERT --tls-key KEY`, stderr to `log`.
    fn serve(&self, args: &[&str], log: &LogFile) -> Server {
        let (cert, key) = (self.cert(), self.key());
        let tls = ["--tls-cert", path(&cert), "--tls-key", path(&key)];
        start(&[args, &tls].concat(), log)
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

impl Drop for CertDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn start(args: &[&str], log: &LogFile) -> Server {
    Server::start(&[], args, log.stdio())
}

/// Runs `script` with python3, `args` after it; its stdout.
pub(crate) fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("python3 runs (the tests need it, with its ssl module)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python3 failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Python's ssl module, verifying the server against CAFILE as
/// `localhost`: CLIENTS connections at once, each sending BYTES of its own
/// pattern in 256 KiB pieces and reading each piece's echo before the next.
const PY_ECHO: &str = r#"
import socket, ssl, sys, threading
port, cafile, clients, total = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
ctx = ssl.create_default_context(cafile=cafile)
failures = []
def client(n):
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=30)
        s = ctx.wrap_socket(raw, server_hostname="localhost")
        piece = bytes((n * 7 + i) % 251 for i in range(256 * 1024))
        sent = 0
        while sent < total:
            chunk = piece[: min(len(piece), total - sent)]
            s.sendall(chunk)
            got = bytearray()
            while len(got) < len(chunk):
                data = s.recv(len(chunk) - len(got))
                if not data:
                    raise Exception("EOF after %d of %d bytes" % (sent + len(got), total))
                got += data
            if got != chunk:
                raise Exception("echo differs at byte %d" % sent)
            sent += len(chunk)
        # close_notify, then the server's: a FIN alone would be a truncation.
        s.unwrap().close()
    except Exception as e:
        failures.append("client %d: %r" % (n, e))
threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
for t in threads: t.start()
for t in threads: t.join()
print("failures", len(failures), failures[:3])
print("verified", clients - len(failures), "clients of", total, "bytes")
"#;

fn python_echo(port: u16, cafile: &Path, clients: usize, bytes: usize) {
    let out = python(
        PY_ECHO,
        &[
            &port.to_string(),
            cafile.to_str().unwrap(),
            &clients.to_string(),
            &bytes.to_string(),
        ],
    );
    let expected = format!("verified {clients} clients of {bytes} bytes");
    assert!(out.contains(&expected), "python: {out}");
}

/// Stops `server` with SIGTERM; its final stats line.
fn stop(server: Server, log: &LogFile) -> String {
    server.signal(Signal::SIGTERM);
    let exited = server.finish();
    assert!(exited.status.success(), "{}", log.read());
    let log = log.read();
    log.lines()
        .rfind(|l| l.contains("stopped:"))
        .unwrap_or_else(|| panic!("no stats line in {log}"))
        .to_owned()
}

#[test]
fn python_ssl_echoes_10_mb_checked_against_the_certificate_sockloop_cert_wrote() {
    let certs = CertDir::new("python");
    let log = LogFile::new("tls-python");
    let server = certs.serve(&["echo"], &log);
    python_echo(server.port, &certs.cert(), 1, 10_000_000);
    let stats = stop(server, &log);
    assert!(stats.contains("bytes in 10000000, out 10000000"), "{stats}");
}

#[test]
fn openssl_s_client_completes_a_handshake_and_gets_its_line_back() {
    let certs = CertDir::new("openssl");
    let log = LogFile::new("tls-openssl");
    let server = certs.serve(&["echo"], &log);
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-verify_return_error", "-servername"])
        .arg("localhost")
        .arg("-connect")
        .arg(format!("127.0.0.1:{}", server.port))
        .arg("-CAfile")
        .arg(certs.cert())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("openssl runs (.ci/run installs it)");
    let mut stdin = client.stdin.take().unwrap();
    stdin.write_all(b"hello through openssl\n").unwrap();
    let mut line = String::new();
    let read = BufReader::new(client.stdout.take().unwrap()).read_line(&mut line);
    // Closing its input ends s_client: a close_notify, then its exit.
    drop(stdin);
    let _ = client.kill();
    let status = client.wait().unwrap();
    let mut errors = String::new();
    client
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    assert!(read.is_ok(), "{status}: {errors}");
    assert_eq!(line, "hello through openssl\n", "{status}: {errors}");
    assert!(errors.contains("verify return:1"), "{errors}");
    stop(server, &log);
}

type TlsClient = StreamOwned<ClientConnection, TcpStream>;

/// A TLS client of this crate's making, trusting `cafile`.
fn tls_client(addr: SocketAddr, cafile: &Path) -> TlsClient {
    let config = client_config(&Trust::Roots(cafile.to_owned()), &[]).unwrap();
    let conn = ClientConnection::new(config, server_name("localhost").unwrap()).unwrap();
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    StreamOwned::new(conn, stream)
}

/// Sends `total` bytes of `seed`'s pattern in 16 KiB pieces, each checked
/// as it comes back.
fn echo_checked(stream: &mut impl ReadWrite, seed: u64, total: usize) {
    let mut rng = Rng::new(seed);
    let mut sent = 0;
    while sent < total {
        let piece = rng.bytes((total - sent).min(16 << 10));
        stream.write_all(&piece).unwrap();
        let mut back = vec![0; piece.len()];
        stream.read_exact(&mut back).unwrap();
        assert!(
            back == piece,
            "client {seed}: echo differs after {sent} bytes"
        );
        sent += piece.len();
    }
}

trait ReadWrite: Read + Write {}
impl<T: Read + Write> ReadWrite for T {}

/// The first flight of a real TLS client: its ClientHello record.
fn client_hello() -> Vec<u8> {
    let config = client_config(&Trust::Anyone, &[]).unwrap();
    let mut conn = ClientConnection::new(config, server_name("localhost").unwrap()).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Reads until the server closes: EOF, or a reset.
fn closed_by_server(mut stream: TcpStream) {
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut sink = [0; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue, // an alert, or the server's first flight
            // A signal to the test process interrupted the read: no close.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server did not close the connection: {e}"),
        }
    }
}

#[test]
fn bad_handshakes_cost_only_their_own_connections() {
    let certs = CertDir::new("hostile");
    let log = LogFile::new("tls-hostile");
    let server = certs.serve(&["echo", "--handshake-timeout", "1s"], &log);
    let addr = server.addr();
    let cafile = Arc::new(certs.cert());
    let good: Vec<_> = (0..20)
        .map(|seed| {
            let cafile = Arc::clone(&cafile);
            thread::spawn(move || echo_checked(&mut tls_client(addr, &cafile), seed, 1 << 20))
        })
        .collect();

    let mut plaintext = server.connect();
    plaintext
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut garbage = server.connect();
    garbage.write_all(&client_hello()).unwrap();
    garbage.write_all(&[0x17; 300]).unwrap();
    let mut stalled = server.connect();
    let hello = client_hello();
    stalled.write_all(&hello[..hello.len() / 2]).unwrap();
    for stream in [plaintext, garbage, stalled] {
        closed_by_server(stream);
    }

    for client in good {
        client
            .join()
            .expect("every good TLS client gets its bytes back");
    }
    let stats = stop(server, &log);
    let log = log.read();
    let failed = log.matches("TLS handshake failed").count();
    assert_eq!(failed, 2, "plaintext and garbage, each a warn line:\n{log}");
    assert!(log.contains("no TLS handshake within 1s; closing"), "{log}");
    assert!(stats.contains("handshake-timeout 1"), "{stats}");
}

#[test]
fn relay_terminates_tls_for_50_python_clients_in_front_of_a_plain_echo() {
    let certs = CertDir::new("relay-in");
    let echo_log = LogFile::new("tls-relay-echo");
    let echo = start(&["echo"], &echo_log);
    let relay_log = LogFile::new("tls-relay");
    let upstream = echo.addr().to_string();
    let relay = certs.serve(&["relay", "--upstream", &upstream], &relay_log);
    python_echo(relay.port, &certs.cert(), 50, 2 << 20);
    let stats = stop(relay, &relay_log);
    // Clients that closed once they had everything: no error on either side
    // (one that closed before the relay's close_notify reached it used to be one).
    assert!(!stats.contains("error"), "{stats}");
    assert!(
        stats.contains("accepted 50, closed 100 (peer 100)"),
        "{stats}"
    );
    stop(echo, &echo_log);
}

/// The CLI refuses `--splice` with TLS, but a library user can still ask a
/// relay with a TLS client to splice bulk transfers: ciphertext cannot go
/// through a pipe as it is, so both directions must stay on copy.
#[test]
fn a_relay_told_to_splice_a_tls_client_copies_every_byte_instead() {
    let certs = CertDir::new("splice");
    let echo_log = LogFile::new("tls-splice-echo");
    let echo = start(&["echo"], &echo_log);
    let upstream = echo.addr().into();
    let tls = server_config(&certs.cert(), &certs.key(), &[]).unwrap();
    // Every 16 KiB piece fills a read chunk this small: each side asks to splice.
    let config = Config {
        read_chunk: 4 << 10,
        ..Config::default()
    };
    let make_relay = move || Relay::new(vec![upstream]).with_splice_mode(SpliceMode::Auto);
    let any = SocketAddr::from(([127, 0, 0, 1], 0)).into();
    let listen = move |reactor: &mut Reactor<Relay>| {
        reactor.listen_as(&any, &ListenOptions::default(), Serve::Tls(tls))
    };
    let relay = TestServer::start_listening(config, make_relay, listen, |_| ());
    for seed in 0..2 {
        echo_checked(&mut tls_client(relay.addr, &certs.cert()), seed, 1 << 20);
    }
    relay.stop();
    stop(echo, &echo_log);
}

/// `sockloop relay` to `upstream` over TLS, trusting `ca`'s certificate.
fn relay_over_tls(upstream: &Server, ca: &CertDir, log: &LogFile) -> Server {
    let (upstream, cert) = (upstream.addr().to_string(), ca.cert());
    let args = [
        "relay",
        "--upstream",
        &upstream,
        "--upstream-tls",
        "--upstream-ca",
        path(&cert),
    ];
    start(&args, log)
}

#[test]
fn relay_originates_tls_to_an_echo_that_serves_it() {
    let certs = CertDir::new("relay-out");
    let echo_log = LogFile::new("tls-origin-echo");
    let echo = certs.serve(&["echo"], &echo_log);
    let relay_log = LogFile::new("tls-origin-relay");
    let relay = relay_over_tls(&echo, &certs, &relay_log);
    let clients: Vec<_> = (0..10)
        .map(|seed| {
            let mut stream = relay.connect();
            thread::spawn(move || echo_checked(&mut stream, seed, 2 << 20))
        })
        .collect();
    for client in clients {
        client.join().expect("every byte back through TLS");
    }
    stop(relay, &relay_log);
    let stats = stop(echo, &echo_log);
    assert!(stats.contains("accepted 10,"), "{stats}");
}

#[test]
fn relay_refuses_an_upstream_whose_certificate_it_does_not_trust() {
    let certs = CertDir::new("untrusted");
    let other = CertDir::new("untrusted-other");
    let echo_log = LogFile::new("tls-untrusted-echo");
    let echo = certs.serve(&["echo"], &echo_log);
    let relay_log = LogFile::new("tls-untrusted-relay");
    let relay = relay_over_tls(&echo, &other, &relay_log);
    let mut client = relay.connect();
    client.write_all(b"secret\n").unwrap();
    closed_by_server(client);
    stop(relay, &relay_log);
    let log = relay_log.read();
    assert!(log.contains("TLS handshake failed"), "{log}");
    stop(echo, &echo_log);
}

/// `sockloop bench --tls` for 300 ms against `server`, trusting `ca`'s
/// certificate, with `extra` flags.
fn bench_tls(server: &Server, ca: &CertDir, extra: &[&str]) -> std::process::Output {
    let (target, cert) = (server.addr().to_string(), ca.cert());
    let args = [
        "bench",
        "--target",
        &target,
        "--tls",
        "--ca",
        path(&cert),
        "--duration",
        "300ms",
    ];
    sockloop(&[], &[&args[..], extra].concat())
        .output()
        .expect("run sockloop bench")
}

#[test]
fn bench_tls_counts_handshakes_and_verifies_every_echo() {
    let certs = CertDir::new("bench");
    let log = LogFile::new("tls-bench");
    let server = certs.serve(&["echo"], &log);
    let out = bench_tls(&server, &certs, &["--conns", "20", "--warmup", "0s"]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert!(report.contains("handshakes  20 of 20 in"), "{report}");
    assert!(report.contains("errors      0"), "{report}");
    stop(server, &log);
}

#[test]
fn bench_tls_fails_on_a_certificate_it_does_not_trust() {
    let certs = CertDir::new("bench-untrusted");
    let other = CertDir::new("bench-other");
    let log = LogFile::new("tls-bench-untrusted");
    let server = certs.serve(&["echo"], &log);
    let out = bench_tls(&server, &other, &["--conns", "3"]);
    assert!(!out.status.success());
    let errors = String::from_utf8_lossy(&out.stderr);
    assert!(errors.contains("connects failed"), "{errors}");
    stop(server, &log);
}

/// `sockloop relay` over TLS to `upstreams`, trusting `ca`'s certificate,
/// never trying again one that failed within the test, with `extra` flags
/// and its metrics on a port of its own.
fn relay_failing_over(
    upstreams: &[SocketAddr],
    ca: &CertDir,
    extra: &[&str],
    log: &LogFile,
) -> Server {
    let cert = ca.cert();
    let mut args = vec!["relay", "--upstream-tls", "--upstream-ca", path(&cert)];
    let upstreams: Vec<String> = upstreams.iter().map(SocketAddr::to_string).collect();
    for upstream in &upstreams {
        args.extend(["--upstream", upstream]);
    }
    args.extend(["--upstream-down-time", "600s", "--metrics", "127.0.0.1:0"]);
    start(&[&args[..], extra].concat(), log)
}

/// The `/metrics` page of a server started with `--metrics`, found where
/// its log says.
pub(crate) fn metrics_page(log: &LogFile) -> String {
    let addr = wait_until("the metrics address in the log", || {
        let log = log.read();
        let rest = log.split("metrics on http://").nth(1)?;
        Some(rest.split("/metrics").next()?.to_owned())
    });
    let mut stream = TcpStream::connect(&addr).expect("connect to --metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    page
}

/// Ten clients one after another, each echoed through `relay`.
fn ten_clients_echoed(relay: &Server) {
    for seed in 0..10 {
        echo_checked(&mut relay.connect(), seed, 64 << 10);
    }
}

/// `down` shows as down in the relay's metrics, `up` as up, and one
/// connect as failed.
fn shown_down(relay_log: &LogFile, down: SocketAddr, up: SocketAddr) {
    let page = metrics_page(relay_log);
    for (upstream, value) in [(down, 1), (up, 0)] {
        let sample = format!("sockloop_upstream_down{{upstream=\"{upstream}\"}} {value}\n");
        assert!(page.contains(&sample), "no {sample:?} in:\n{page}");
    }
    assert!(
        page.contains("sockloop_connect_failures_total 1\n"),
        "{page}"
    );
}

#[test]
fn an_upstream_whose_certificate_is_not_trusted_is_marked_down_and_every_client_served() {
    let (trusted, other) = (CertDir::new("failover-good"), CertDir::new("failover-bad"));
    let (good_log, bad_log) = (LogFile::new("tls-cert-good"), LogFile::new("tls-cert-bad"));
    let good = trusted.serve(&["echo"], &good_log);
    let bad = other.serve(&["echo"], &bad_log);
    let relay_log = LogFile::new("tls-cert-relay");
    // The bad one first: round-robin sends the first client there.
    let relay = relay_failing_over(&[bad.addr(), good.addr()], &trusted, &[], &relay_log);
    ten_clients_echoed(&relay);
    shown_down(&relay_log, bad.addr(), good.addr());
    let log = relay_log.read();
    let down = format!(
        "upstream {} is down (TLS handshake failed: invalid peer certificate",
        bad.addr()
    );
    assert!(log.contains(&down), "{log}");
    // An outgoing connection is not "from" its upstream.
    assert!(!log.contains(&format!("from {}", bad.addr())), "{log}");
    stop(relay, &relay_log);
    assert!(stop(good, &good_log).contains("accepted 10,"));
    stop(bad, &bad_log);
}

#[test]
fn an_upstream_that_never_answers_the_client_hello_is_marked_down_and_every_client_served() {
    let certs = CertDir::new("failover-silent");
    let echo_log = LogFile::new("tls-silent-echo");
    let echo = certs.serve(&["echo"], &echo_log);
    // Connects complete in its accept queue; nothing ever reads them.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let relay_log = LogFile::new("tls-silent-relay");
    let timeouts = ["--connect-timeout", "300ms", "--handshake-timeout", "1s"];
    let upstreams = [silent_addr, echo.addr()];
    let relay = relay_failing_over(&upstreams, &certs, &timeouts, &relay_log);
    ten_clients_echoed(&relay);
    shown_down(&relay_log, silent_addr, echo.addr());
    let log = relay_log.read();
    let down = format!("upstream {silent_addr} is down (TLS handshake timed out");
    assert!(log.contains(&down), "{log}");
    stop(relay, &relay_log);
    assert!(stop(echo, &echo_log).contains("accepted 10,"));
}

#[test]
fn a_tls_client_that_ends_without_close_notify_reaches_the_upstream_as_a_reset() {
    let certs = CertDir::new("truncated");
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap().to_string();
    let log = LogFile::new("tls-truncated-relay");
    let relay = certs.serve(&["relay", "--upstream", &up_addr], &log);
    let mut client = tls_client(relay.addr(), &certs.cert());
    client.write_all(b"half a request").unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut got = [0; 14];
    up.read_exact(&mut got).unwrap();
    assert_eq!(&got, b"half a request");
    // A FIN with no close_notify before it: the stream was cut short.
    client.sock.shutdown(Shutdown::Write).unwrap();
    let end = up.read(&mut [0; 64]);
    assert!(
        end.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the upstream saw {end:?}, not a reset"
    );
    let stats = stop(relay, &log);
    assert!(stats.contains("tls-truncated 2"), "{stats}");
    let log = log.read();
    let client_addr = client.sock.local_addr().unwrap();
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("cut short")
            && l.contains(&client_addr.to_string())),
        "{log}"
    );
}

/// A TLS echo (its certificates kept until dropped) and a client of it past
/// its handshake, with 100 bytes of `seed`'s pattern echoed.
fn echo_and_client(name: &str, seed: u64) -> (CertDir, LogFile, Server, TlsClient) {
    let certs = CertDir::new(name);
    let log = LogFile::new(&format!("tls-{name}"));
    let server = certs.serve(&["echo"], &log);
    let mut client = tls_client(server.addr(), &certs.cert());
    echo_checked(&mut client, seed, 100);
    (certs, log, server, client)
}

#[test]
fn garbage_after_the_handshake_is_a_warning_that_names_the_peer() {
    let (_certs, log, server, mut client) = echo_and_client("garbage", 1);
    // An application data record that no key decrypts.
    let mut record = vec![0x17, 0x03, 0x03, 0x00, 0x40];
    record.extend(Rng::new(2).bytes(0x40));
    client.sock.write_all(&record).unwrap();
    closed_by_server(client.sock.try_clone().unwrap());
    let peer = client.sock.local_addr().unwrap().to_string();
    let line = wait_until("a line about the garbage", || {
        log.read()
            .lines()
            .find(|l| l.contains(&peer))
            .map(str::to_owned)
    });
    assert!(line.contains("WARN") && line.contains("TLS"), "{line}");
    stop(server, &log);
}

/// `sockloop cert ARGS`, to its exit.
fn cert(args: &[&str]) -> std::process::Output {
    sockloop(&[], &[&["cert"], args].concat())
        .output()
        .expect("run sockloop cert")
}

#[test]
fn cert_refuses_to_replace_a_key_without_force() {
    let certs = CertDir::new("force");
    let dir = path(&certs.0);
    let key = std::fs::read(certs.key()).expect("the first key");
    let again = cert(&["--out", dir]);
    let stderr = String::from_utf8_lossy(&again.stderr);
    // Before the fix the second run wrote a new key over the first.
    assert!(
        !again.status.success(),
        "replaced without --force: {stderr}"
    );
    assert!(
        stderr.contains(&format!("{} exists", certs.key().display())) && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read(certs.key()).expect("the key"),
        key,
        "the key was touched"
    );
    let forced = cert(&["--out", dir, "--force"]);
    assert!(forced.status.success(), "{forced:?}");
    assert_ne!(std::fs::read(certs.key()).expect("the new key"), key);
}

#[test]
fn cert_errors_name_the_path_they_are_about() {
    // A directory cannot be made inside a file.
    let file = std::env::temp_dir().join(format!("sockloop-cert-file-{}", std::process::id()));
    std::fs::write(&file, b"not a directory").expect("write");
    let out_dir = file.join("certs");
    let out = cert(&["--out", path(&out_dir)]);
    std::fs::remove_file(&file).expect("remove");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    // Before the fix: only "Not a directory (os error 20)".
    assert!(stderr.contains(path(&out_dir)), "{stderr}");
}

#[test]
fn cert_refuses_a_name_no_certificate_can_carry() {
    let dir = std::env::temp_dir().join(format!("sockloop-cert-names-{}", std::process::id()));
    for name in ["", "two words", "a..b"] {
        let out = cert(&["--out", path(&dir), "--name", name]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "--name {name:?}: {stderr}");
        assert!(
            stderr.contains("--name") && stderr.contains("neither a DNS name"),
            "--name {name:?}: {stderr}"
        );
        assert!(
            !dir.join("cert.pem").exists(),
            "--name {name:?} wrote a certificate"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// What `client` has queued for the wire, encrypted.
fn queued_records(client: &mut ClientConnection) -> Vec<u8> {
    let mut wire = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut wire).unwrap();
    }
    wire
}

/// The close_notify comes in the same read as the records before it; the
/// server must see it then, not wait for a FIN that this client (as one
/// doing an orderly TLS shutdown) sends only after the server's close_notify.
/// The records are cut inside a header and inside a record on the way.
#[test]
fn a_close_notify_read_with_the_data_before_it_ends_the_session() {
    let (_certs, log, server, mut client) = echo_and_client("cuts", 3);
    let data = Rng::new(4).bytes(40 << 10);
    client.conn.writer().write_all(&data).unwrap();
    let mut wire = queued_records(&mut client.conn);
    client.conn.send_close_notify();
    wire.extend(queued_records(&mut client.conn));
    // Past close_notify the server must ignore this, longer than any read
    // rustls takes at once.
    wire.extend(Rng::new(5).bytes(20 << 10));
    // Within a header, within a record, then the rest at once; the pauses
    // let each part arrive as a read of its own.
    for part in [&wire[..3], &wire[3..9000], &wire[9000..]] {
        client.sock.write_all(part).unwrap();
        thread::sleep(std::time::Duration::from_millis(50));
    }
    let mut back = Vec::new();
    client
        .read_to_end(&mut back)
        .expect("the echo, then the server's close_notify");
    assert!(back == data, "{} bytes back of {}", back.len(), data.len());
    stop(server, &log);
    let log = log.read();
    assert!(!log.contains("WARN"), "{log}");
}
