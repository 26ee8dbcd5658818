//! Client certificates (`--tls-client-ca`, `--upstream-cert`) and several
//! server certificates picked by SNI, against Python's `ssl` as the other
//! side; certificates made here with rcgen, each test its own CAs.
#![cfg(feature = "tls")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};

use nix::sys::signal::Signal;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::{ClientConnection, StreamOwned};

use crate::common::{IO_TIMEOUT, LogFile, Server, wait_until};
use crate::tls::{metrics_page, python};

/// A directory of certificates and keys made for one test, removed on drop.
struct Pki(PathBuf);

/// A certificate authority of a [`Pki`]: it signs leaves.
struct Ca {
    cert: Certificate,
    key: KeyPair,
    /// Its certificate, the file clients and servers trust.
    pem: PathBuf,
}

/// A leaf certificate's files.
struct Leaf {
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(test: &str) -> Pki {
        let dir = std::env::temp_dir().join(format!("sockloop-mtls-{test}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Pki(dir)
    }

    fn write(&self, file: &str, text: &str) -> PathBuf {
        let path = self.0.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
        path
    }

    fn ca(&self, name: &str) -> Ca {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem = self.write(&format!("{name}.pem"), &cert.pem());
        Ca { cert, key, pem }
    }

    /// A leaf signed by `ca`: for a server with `names` (SAN DNS names, and
    /// 127.0.0.1), or for a client with the common name `cn`.
    fn leaf(&self, ca: &Ca, file: &str, cn: Option<&str>, names: &[&str]) -> Leaf {
        let mut sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let usage = match cn {
            Some(cn) => {
                sans.clear();
                sans.push(format!("{cn}.clients.test"));
                ExtendedKeyUsagePurpose::ClientAuth
            }
            None => {
                sans.push("127.0.0.1".into());
                ExtendedKeyUsagePurpose::ServerAuth
            }
        };
        let mut params = CertificateParams::new(sans).unwrap();
        if let Some(cn) = cn {
            params.distinguished_name.push(DnType::CommonName, cn);
        }
        params.extended_key_usages = vec![usage];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
        Leaf {
            cert: self.write(&format!("{file}.pem"), &cert.pem()),
            key: self.write(&format!("{file}.key"), &key.serialize_pem()),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temp path")
}

/// One TLS client of Python's: trusts the server certificates of CAFILE,
/// presents CERT and KEY unless they are `-`, sends `ping` and waits for it
/// back. Prints its own port, then `echoed` or `refused` with why.
const PY_CLIENT: &str = r#"
import socket, ssl, sys
port, cafile, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(cafile)
if cert != "-":
    ctx.load_cert_chain(cert, key)
raw = socket.create_connection(("127.0.0.1", port), timeout=10)
print("port", raw.getsockname()[1], flush=True)
try:
    s = ctx.wrap_socket(raw, server_hostname="127.0.0.1")
    # TLS 1.3: the server checks the client's certificate after the client
    # has finished its handshake, so a refusal comes on the first read.
    s.sendall(b"ping")
    got = s.recv(4)
    print("echoed" if got == b"ping" else "refused: got %r" % got)
except (ssl.SSLError, OSError) as e:
    print("refused:", e)
"#;

/// Python's client to `port` (see [`PY_CLIENT`]), presenting `leaf` if
/// given: its port and what happened.
fn python_client(port: u16, server_ca: &Ca, leaf: Option<&Leaf>) -> (u16, String) {
    let (cert, key) = leaf.map_or(("-", "-"), |l| (path(&l.cert), path(&l.key)));
    let out = python(
        PY_CLIENT,
        &[&port.to_string(), path(&server_ca.pem), cert, key],
    );
    let (first, outcome) = out.split_once('\n').expect("two lines");
    let port = first.strip_prefix("port ").and_then(|p| p.parse().ok());
    (port.expect("its port"), outcome.trim().to_owned())
}

/// `sockloop ARGS`, stderr to `log`.
fn start(args: &[&str], log: &LogFile) -> Server {
    Server::start(&[], args, log.stdio())
}

/// A rustls client of `addr` trusting `ca`, presenting `leaf`, that has
/// sent `ping` (the handshake done).
fn tls_client(addr: SocketAddr, ca: &Ca, leaf: &Leaf) -> StreamOwned<ClientConnection, TcpStream> {
    let presented = (leaf.cert.clone(), leaf.key.clone());
    let trust = sockloop::tls::Trust::Roots(ca.pem.clone());
    let config = sockloop::tls::client_config_presenting(&trust, &[], Some(&presented)).unwrap();
    let name = sockloop::tls::server_name("127.0.0.1").unwrap();
    let conn = ClientConnection::new(config, name).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let mut stream = StreamOwned::new(conn, tcp);
    stream.write_all(b"ping").unwrap();
    stream.flush().unwrap();
    stream
}

/// [`tls_client`], once `ping` has come back: a connection held open.
fn held_client(addr: SocketAddr, ca: &Ca, leaf: &Leaf) -> StreamOwned<ClientConnection, TcpStream> {
    let mut stream = tls_client(addr, ca, leaf);
    let mut back = [0; 4];
    stream.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    stream
}

/// The flags of a listener that serves `leaf` to clients with a
/// certificate `clients` signed, and to no others.
fn mutual_tls<'a>(leaf: &'a Leaf, clients: &'a Ca) -> [&'a str; 6] {
    let (cert, key, ca) = (path(&leaf.cert), path(&leaf.key), path(&clients.pem));
    ["--tls-cert", cert, "--tls-key", key, "--tls-client-ca", ca]
}

/// The connection table (SIGUSR1) once it shows `needle`: the row with it.
fn table_row(server: &Server, log: &LogFile, needle: &str) -> String {
    server.signal(Signal::SIGUSR1);
    wait_until("the connection table", || {
        let log = log.read();
        log.lines().find(|l| l.contains(needle)).map(str::to_owned)
    })
}

/// The value of the counter `name` on the metrics page of a server started
/// with `--metrics`.
fn counter(log: &LogFile, name: &str) -> u64 {
    let page = metrics_page(log);
    let line = (page.lines())
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    line[name.len() + 1..].parse().unwrap()
}

/// The warning about the client at `port`.
fn warning_about(log: &LogFile, port: u16) -> String {
    let peer = format!("127.0.0.1:{port}");
    wait_until("a warning naming the client", || {
        let log = log.read();
        (log.lines())
            .find(|l| l.contains("WARN") && l.contains(&peer))
            .map(str::to_owned)
    })
}

#[test]
fn under_tls_client_ca_only_a_client_with_a_certificate_it_signed_is_served_and_named() {
    let pki = Pki::new("client-ca");
    let (clients, strangers, servers) = (pki.ca("clients"), pki.ca("strangers"), pki.ca("servers"));
    let server_leaf = pki.leaf(&servers, "server", None, &["localhost"]);
    let alice = pki.leaf(&clients, "alice", Some("alice"), &[]);
    let mallory = pki.leaf(&strangers, "mallory", Some("mallory"), &[]);
    let log = LogFile::new("mtls-echo");
    let tls = mutual_tls(&server_leaf, &clients);
    let server = start(
        &[&["echo"], &tls[..], &["--metrics", "127.0.0.1:0"]].concat(),
        &log,
    );
    let (none_port, none) = python_client(server.port, &servers, None);
    assert!(none.starts_with("refused"), "no certificate: {none}");
    let line = warning_about(&log, none_port);
    assert!(line.contains("client certificate: none sent"), "{line}");
    let (other_port, other) = python_client(server.port, &servers, Some(&mallory));
    assert!(other.starts_with("refused"), "another CA's: {other}");
    let line = warning_about(&log, other_port);
    assert!(line.contains("client certificate refused"), "{line}");
    let (_, good) = python_client(server.port, &servers, Some(&alice));
    assert_eq!(good, "echoed");

    let held = held_client(server.addr(), &servers, &alice);
    let port = held.sock.local_addr().unwrap().port();
    let row = table_row(&server, &log, &format!("127.0.0.1:{port} "));
    assert!(row.contains("client=\"alice\""), "{row}");
    assert_eq!(counter(&log, "sockloop_tls_client_refusals_total"), 2);
    assert_eq!(counter(&log, "sockloop_tls_client_certs_total"), 2);
}

/// Reads a PROXY v2 header from `stream` and returns its TLV fields
/// (type, value), read here by hand rather than by sockloop's decoder.
fn v2_tlvs(stream: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut fixed = [0; 16];
    stream.read_exact(&mut fixed).unwrap();
    assert_eq!(&fixed[..12], b"\r\n\r\n\0\r\nQUIT\n");
    assert_eq!((fixed[12], fixed[13]), (0x21, 0x11), "PROXY, TCP over IPv4");
    let mut rest = vec![0; usize::from(u16::from_be_bytes([fixed[14], fixed[15]]))];
    stream.read_exact(&mut rest).unwrap();
    fields(&rest[12..])
}

/// Type-length-value fields, one after another.
fn fields(mut bytes: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut found = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(u16::from_be_bytes([bytes[1], bytes[2]]));
        found.push((bytes[0], bytes[3..3 + len].to_vec()));
        bytes = &bytes[3 + len..];
    }
    found
}

#[test]
fn a_relay_names_the_client_of_a_verified_certificate_in_the_proxy_v2_ssl_field() {
    let pki = Pki::new("proxy-ssl");
    let (clients, servers) = (pki.ca("clients"), pki.ca("servers"));
    let server_leaf = pki.leaf(&servers, "relay", None, &["localhost"]);
    let alice = pki.leaf(&clients, "alice", Some("alice"), &[]);
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    let log = LogFile::new("mtls-relay");
    let upstream_addr = upstream.local_addr().unwrap().to_string();
    let relay_args = ["relay", "--upstream", &upstream_addr, "--send-proxy", "v2"];
    let tls = mutual_tls(&server_leaf, &clients);
    let relay = start(&[&relay_args[..], &tls[..]].concat(), &log);
    let _client = tls_client(relay.addr(), &servers, &alice);
    let (mut up, _) = upstream.accept().unwrap();
    up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    let tlvs = v2_tlvs(&mut up);
    let ssl = tlvs
        .iter()
        .find(|(kind, _)| *kind == 0x20)
        .expect("an SSL field");
    // PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS, verify 0.
    assert_eq!(ssl.1[..5], [0x07, 0, 0, 0, 0], "{tlvs:?}");
    let sub = fields(&ssl.1[5..]);
    assert!(sub.contains(&(0x21, b"TLSv1.3".to_vec())), "{sub:?}");
    assert!(sub.contains(&(0x22, b"alice".to_vec())), "{sub:?}");
    let mut ping = [0; 4];
    up.read_exact(&mut ping).unwrap();
    assert_eq!(&ping, b"ping", "the client's bytes after the header");
}

#[test]
fn a_relay_presents_its_upstream_cert_to_an_upstream_that_asks_for_one() {
    let pki = Pki::new("upstream-cert");
    let (clients, servers) = (pki.ca("clients"), pki.ca("servers"));
    let echo_leaf = pki.leaf(&servers, "echo", None, &["localhost"]);
    let relay_leaf = pki.leaf(&clients, "relay", Some("relay-7"), &[]);
    let echo_log = LogFile::new("mtls-upstream-echo");
    let echo = start(
        &[&["echo"], &mutual_tls(&echo_leaf, &clients)[..]].concat(),
        &echo_log,
    );
    let relay_log = LogFile::new("mtls-upstream-relay");
    let upstream = echo.addr().to_string();
    let relay = start(
        &[
            "relay",
            "--upstream",
            &upstream,
            "--upstream-tls",
            "--upstream-ca",
            path(&servers.pem),
            "--upstream-cert",
            path(&relay_leaf.cert),
            "--upstream-key",
            path(&relay_leaf.key),
        ],
        &relay_log,
    );
    let mut client = relay.connect();
    client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    client.write_all(b"ping").unwrap();
    let mut back = [0; 4];
    client.read_exact(&mut back).unwrap();
    assert_eq!(&back, b"ping");
    let row = table_row(&echo, &echo_log, "client=");
    assert!(row.contains("client=\"relay-7\""), "{row}");
}

/// Python's client asking for each `NAME|CHECK|CAFILE` in turn (NAME empty:
/// no SNI; CHECK 0: the chain is verified but not the name): `ok NAME` if
/// the certificate served verified against CAFILE, `failed NAME: why` if not.
const PY_SNI: &str = r#"
import socket, ssl, sys
port = int(sys.argv[1])
for spec in sys.argv[2:]:
    name, check, cafile = spec.split("|")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = check == "1"
    ctx.load_verify_locations(cafile)
    try:
        raw = socket.create_connection(("127.0.0.1", port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname=name or None) as s:
            s.sendall(b"ping")
            assert s.recv(4) == b"ping"
        print("ok", name)
    except (ssl.SSLError, OSError, AssertionError) as e:
        print("failed %s: %s" % (name, e))
"#;

#[test]
fn of_several_certificates_the_one_for_the_name_asked_for_is_served_else_the_first() {
    let pki = Pki::new("several");
    let (ca_a, ca_b, ca_w) = (pki.ca("a-ca"), pki.ca("b-ca"), pki.ca("w-ca"));
    let a = pki.leaf(&ca_a, "a", None, &["a.test"]);
    let b = pki.leaf(&ca_b, "b", None, &["b.test"]);
    // Two more in a directory, served after those of the flags.
    let w = pki.leaf(&ca_w, "dir/w", None, &["*.w.test"]);
    pki.leaf(&ca_a, "dir/v", None, &["b.test"]);
    let dir = w.cert.parent().unwrap();
    let log = LogFile::new("mtls-several");
    let mut args = vec!["echo", "--tls-cert-dir", path(dir)];
    for leaf in [&a, &b] {
        args.extend(["--tls-cert", path(&leaf.cert), "--tls-key", path(&leaf.key)]);
    }
    let server = start(&args, &log);
    let spec =
        |name: &str, check: bool, ca: &Ca| format!("{name}|{}|{}", u8::from(check), path(&ca.pem));
    let cases = [
        spec("b.test", true, &ca_b),
        spec("a.test", true, &ca_a),
        spec("x.w.test", true, &ca_w),
        // The first certificate, a.test's: without SNI, or for a name none has.
        spec("", false, &ca_a),
        spec("c.test", false, &ca_a),
        // Proof that the CA files tell the certificates apart.
        spec("b.test", false, &ca_a),
    ];
    let port = server.port.to_string();
    let args: Vec<&str> = [&port]
        .into_iter()
        .chain(&cases)
        .map(String::as_str)
        .collect();
    let out = python(PY_SNI, &args);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines[..5],
        ["ok b.test", "ok a.test", "ok x.w.test", "ok ", "ok c.test"],
        "{out}"
    );
    assert!(lines[5].starts_with("failed b.test"), "{out}");
}
