//! `--metrics ADDR`: the counters at `GET /metrics`, in the Prometheus text
//! format, served by the same loop as the clients.

use std::collections::{HashMap, HashSet};
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use crate::common::{IO_TIMEOUT, LogLines, Server, echo_all, round_trip, wait_until};

/// A server started with `--metrics 127.0.0.1:0`, where its metrics are,
/// and its log from there on.
pub(crate) fn with_metrics(args: &[&str]) -> (Server, String, LogLines) {
    let args = [args, &["--metrics", "127.0.0.1:0"]].concat();
    let mut server = Server::start(&[], &args, Stdio::piped());
    let mut log = LogLines::new(server.take_stderr());
    let line = log.wait_for("metrics on http://");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.strip_suffix("/metrics"))
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (server, addr, log)
}

/// One HTTP request; the status line and the body.
fn get(addr: &str, request: &str) -> (String, String) {
    let mut stream = TcpStream::connect(addr).expect("connect to --metrics");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    // The server closes after its answer.
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap_or_default().to_owned();
    let length = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|n| n.parse::<usize>().ok());
    assert_eq!(length, Some(body.len()), "{head}");
    (status, body.to_owned())
}

/// Parses Prometheus text: every sample (`name{labels} value`) must belong
/// to a family announced by `# HELP` and `# TYPE` lines before it. Returns
/// each sample's value by `name{labels}`.
fn parse_prometheus(text: &str) -> HashMap<String, f64> {
    let mut typed = HashSet::new();
    let mut helped = HashSet::new();
    let mut samples = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("# HELP name text");
            assert!(!help.is_empty(), "{line}");
            helped.insert(name.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            typed.insert(name.to_owned());
        } else {
            assert!(!line.starts_with('#') && !line.is_empty(), "{line:?}");
            let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            let name = match series.split_once('{') {
                Some((name, labels)) => {
                    let labels = labels.strip_suffix('}').expect("labels closed");
                    for pair in labels.split(',') {
                        let (label, quoted) = pair.split_once('=').expect("label=value");
                        assert!(valid_name(label), "{line}");
                        assert!(quoted.starts_with('"') && quoted.ends_with('"'), "{line}");
                    }
                    name
                }
                None => series,
            };
            assert!(valid_name(name), "{line}");
            assert!(
                typed.contains(name) && helped.contains(name),
                "no HELP/TYPE before {line}"
            );
            assert!(
                samples.insert(series.to_owned(), value).is_none(),
                "twice: {line}"
            );
        }
    }
    samples
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

pub(crate) fn scrape(addr: &str) -> HashMap<String, f64> {
    let (status, body) = get(addr, "GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n");
    assert_eq!(status, "HTTP/1.1 200 OK");
    parse_prometheus(&body)
}

pub(crate) fn value(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples
        .get(series)
        .unwrap_or_else(|| panic!("no {series} in {samples:?}"))
}

#[test]
fn the_counters_move_with_echo_traffic() {
    let (server, addr, _log) = with_metrics(&["echo"]);
    let before = scrape(&addr);
    // The scrape's own connection is the one open.
    assert_eq!(value(&before, "sockloop_active_connections"), 1.0);

    const CLIENTS: usize = 3;
    const BYTES: usize = 10_000;
    for _ in 0..CLIENTS {
        assert_eq!(echo_all(server.connect(), &[7; BYTES]).len(), BYTES);
    }
    let held = server.connect();
    let after = wait_until("the echo clients' closes to be counted", || {
        let now = scrape(&addr);
        let closed = value(&now, "sockloop_closed_by_reason_total{reason=\"peer\"}");
        (closed >= value(&before, "sockloop_closed_by_reason_total{reason=\"peer\"}") + 3.0)
            .then_some(now)
    });
    let grew = |series: &str| value(&after, series) - value(&before, series);
    // Each scrape is a connection too: at least the clients' were counted.
    assert!(grew("sockloop_accepted_total") >= (CLIENTS + 1) as f64);
    assert!(grew("sockloop_received_bytes_total") >= (CLIENTS * BYTES) as f64);
    assert!(grew("sockloop_sent_bytes_total") >= (CLIENTS * BYTES) as f64);
    assert!(grew("sockloop_events_total") > 0.0);
    assert!(grew("sockloop_reads_total") >= CLIENTS as f64);
    assert!(grew("sockloop_writes_total") >= CLIENTS as f64);
    // The held client, and this scrape's own connection.
    assert_eq!(value(&after, "sockloop_active_connections"), 2.0);
    assert_eq!(value(&after, "sockloop_proxy_failures_total"), 0.0);
    held.shutdown(Shutdown::Both).unwrap();
}

#[test]
fn other_paths_and_methods_and_bad_requests_get_an_error() {
    let (_server, addr, _log) = with_metrics(&["echo"]);
    assert_eq!(
        get(&addr, "GET / HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 404 Not Found"
    );
    assert_eq!(
        get(&addr, "POST /metrics HTTP/1.1\r\n\r\n").0,
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(get(&addr, "hello\r\n\r\n").0, "HTTP/1.1 400 Bad Request");
    // A head that never ends is cut off, not buffered without bound.
    let long = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n", "a".repeat(20_000));
    assert!(get(&addr, &long).0.starts_with("HTTP/1.1 431"));
    // The responder is still there.
    scrape(&addr);
}

#[test]
fn a_relay_shows_each_upstreams_state_and_its_failed_connects() {
    // A port nobody listens on: its connects are refused.
    let dead = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let live = TcpListener::bind("127.0.0.1:0").unwrap();
    let live_addr = live.local_addr().unwrap();
    let (dead, live_s) = (dead.to_string(), live_addr.to_string());
    let args = ["relay", "--upstream", &dead, "--upstream", &live_s];
    let (server, addr, _log) = with_metrics(&args);
    // Round-robin: of two clients, one is tried on the dead upstream first,
    // and both end up on the live one.
    let clients: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    let accepted: Vec<TcpStream> = (0..2).map(|_| live.accept().unwrap().0).collect();
    let samples = scrape(&addr);
    let up =
        |name: &str, upstream: &str| value(&samples, &format!("{name}{{upstream=\"{upstream}\"}}"));
    assert!(value(&samples, "sockloop_connect_failures_total") >= 1.0);
    assert_eq!(up("sockloop_upstream_down", &dead), 1.0);
    assert_eq!(up("sockloop_upstream_failures", &dead), 1.0);
    assert_eq!(up("sockloop_upstream_down", &live_s), 0.0);
    assert_eq!(up("sockloop_upstream_pairs", &live_s), 2.0);
    drop((clients, accepted));
}

/// Data clients holding every `--max-conns` slot do not blind monitoring:
/// metrics connections have a budget of their own.
#[test]
fn a_scrape_is_answered_while_clients_hold_every_max_conns_slot() {
    let (server, addr, _log) = with_metrics(&["echo", "--max-conns", "3"]);
    let mut clients: Vec<TcpStream> = (0..3).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"held"), b"held");
    }
    let samples = scrape(&addr);
    // The three clients and this scrape.
    assert_eq!(value(&samples, "sockloop_active_connections"), 4.0);
    let limit = "sockloop_closed_by_reason_total{reason=\"limit\"}";
    assert_eq!(value(&samples, limit), 0.0);
}

/// The metrics listener takes this many connections at once (README).
const METRICS_CAP: usize = 16;

/// Scrapes that never finish their request head, even trickling a byte now
/// and then, take none of the clients' slots and are closed after the
/// head timeout (5 s from their accept), however they trickle.
#[test]
fn scrapes_that_never_finish_their_head_lock_out_no_client_and_are_closed() {
    let (server, addr, _log) = with_metrics(&["echo", "--max-conns", "4"]);
    let stalled: Vec<TcpStream> = (0..METRICS_CAP)
        .map(|_| {
            let mut scrape = TcpStream::connect(&addr).expect("connect to --metrics");
            scrape.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            scrape.write_all(b"GET /metrics HTTP/1.1\r\nX: ").unwrap();
            scrape
        })
        .collect();
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        s.spawn(|| trickle(&stalled, &stop));
        let mut client = server.connect();
        assert_eq!(round_trip(&mut client, b"still served"), b"still served");
        // One more than the cap is closed at once (or, on a machine slow
        // enough that the first ones timed out meanwhile, once its own
        // head timeout passes).
        let mut over = TcpStream::connect(&addr).expect("connect to --metrics");
        over.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        assert_closed_by_server(&mut over);
        for mut scrape in &stalled {
            assert_closed_by_server(&mut scrape);
        }
        stop.store(true, Ordering::Relaxed);
        assert_eq!(round_trip(&mut client, b"and again"), b"and again");
    });
    let samples = scrape(&addr);
    let timeouts = value(&samples, "sockloop_metrics_timeouts_total");
    let refused = value(&samples, "sockloop_metrics_refused_total");
    assert!(timeouts >= METRICS_CAP as f64, "{timeouts} timeouts");
    assert_eq!(timeouts + refused, (METRICS_CAP + 1) as f64);
    let frame_timeouts = "sockloop_closed_by_reason_total{reason=\"frame-timeout\"}";
    assert_eq!(value(&samples, frame_timeouts), timeouts);
}

/// Sends one more byte of an endless header value on each stream every
/// 200 ms, until told to stop (bounded by `IO_TIMEOUT`).
fn trickle(streams: &[TcpStream], stop: &AtomicBool) {
    let every = Duration::from_millis(200);
    for _ in 0..IO_TIMEOUT.as_millis() / every.as_millis() {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        for mut stream in streams {
            // Fails once the server has closed it.
            let _ = stream.write_all(b"a");
        }
        thread::sleep(every);
    }
}

/// Reads until the server closes the stream: EOF, or a reset when a
/// trickled byte was still unread at the close. A read timeout fails.
fn assert_closed_by_server(stream: &mut impl Read) {
    match stream.read(&mut [0; 256]) {
        Ok(0) => {}
        Ok(n) => panic!("{n} bytes from a server that was sent no whole request"),
        Err(e) if e.kind() == ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the server did not close the connection: {e}"),
    }
}

/// Connections refused for `--max-conns` are logged, but a burst of them
/// costs a line a second, each with how many it stands for.
#[test]
fn refusals_over_max_conns_are_logged_once_a_second_with_their_count() {
    const REFUSED: usize = 50;
    let (server, addr, mut log) = with_metrics(&["echo", "--max-conns", "2"]);
    let mut clients: Vec<TcpStream> = (0..2).map(|_| server.connect()).collect();
    for client in &mut clients {
        assert_eq!(round_trip(client, b"held"), b"held");
    }
    let mut burst: Vec<TcpStream> = (0..REFUSED).map(|_| server.connect()).collect();
    for refused in &mut burst {
        assert_closed_by_server(refused);
    }
    let mut lines = Vec::new();
    let mut logged = 0;
    while logged < REFUSED {
        let line = log.wait_for("over --max-conns 2");
        let count = line
            .split("refused ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("no count in {line:?}"));
        logged += count;
        lines.push(line);
    }
    assert_eq!(logged, REFUSED, "{lines:#?}");
    // The first at once, the rest a second later; a third if the burst
    // straddled two seconds. Without the rate limit: 50.
    assert!(lines.len() <= 3, "{lines:#?}");
    let samples = scrape(&addr);
    let limit = "sockloop_closed_by_reason_total{reason=\"limit\"}";
    assert_eq!(value(&samples, limit), REFUSED as f64);
}

/// A request line far over the 8 KiB bound gets its 431: the rest of it,
/// still arriving, is read and dropped rather than left unread, which
/// would make the close a reset that destroys the answer.
#[test]
fn a_request_line_of_100_kb_gets_431_not_a_reset() {
    let request = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(100_000));
    assert_eq!(status_for(&request), TOO_LARGE);
}

/// The bound is on the head, however it arrives: 9 KB in one read too.
#[test]
fn a_9_kb_head_in_one_write_gets_431_not_200() {
    let request = format!("GET /metrics HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(9_000));
    assert_eq!(status_for(&request), TOO_LARGE);
}

const TOO_LARGE: &str = "HTTP/1.1 431 Request Header Fields Too Large";

/// The status line a fresh server's responder answers `request` with
/// (written at once); the responder still answers scrapes after it.
fn status_for(request: &str) -> String {
    let (_server, addr, _log) = with_metrics(&["echo"]);
    let (status, _) = get(&addr, request);
    scrape(&addr);
    status
}

/// The byte counters' rule, over TLS.
#[cfg(feature = "tls")]
mod stream_bytes {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use rustls::{ClientConnection, StreamOwned};
    use sockloop::app::echo::Echo;
    use sockloop::reactor::{Config, ListenOptions};
    use sockloop::tls::{Trust, client_config, server_config, server_name, write_self_signed};

    use crate::common;

    /// The byte counters count the stream a service reads and writes: for a
    /// TLS connection behind a PROXY header, the plaintext alone, although the
    /// client's socket carried the header, the handshake and the records too.
    #[test]
    fn bytes_in_and_out_count_the_stream_not_the_proxy_header_or_tls() {
        let dir =
            TempDir(std::env::temp_dir().join(format!("sockloop-bytes-{}", std::process::id())));
        let (cert, key) = write_self_signed(&dir.0, "localhost").unwrap();
        let tls = server_config(&cert, &key, &[]).unwrap();
        let config = Config {
            proxy_protocol: true,
            ..Config::default()
        };
        let server = common::TestServer::start_listening(
            config,
            || Echo,
            move |reactor| {
                let addr = "127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap();
                reactor.listen_tls(&addr.into(), &ListenOptions::default(), tls)
            },
            |_| (),
        );
        let mut socket = Counted::new(server.connect());
        socket
            .write_all(b"PROXY TCP4 192.0.2.1 192.0.2.2 40000 7878\r\n")
            .unwrap();
        let client = client_config(&Trust::Roots(cert), &[]).unwrap();
        let conn = ClientConnection::new(client, server_name("localhost").unwrap()).unwrap();
        let mut tls = StreamOwned::new(conn, socket);
        const PIECES: usize = 8;
        const PIECE: usize = 10_000;
        let data = common::Rng::new(7).bytes(PIECE);
        for _ in 0..PIECES {
            tls.write_all(&data).unwrap();
            let mut back = vec![0; PIECE];
            tls.read_exact(&mut back).unwrap();
            assert!(back == data, "the echo differs");
        }
        tls.conn.send_close_notify();
        tls.flush().unwrap();
        let stats = server.wait_for("the connection to close", |s| s.closed == 1);
        assert_eq!((stats.proxy_headers, stats.tls_handshakes), (1, 1));
        let stream = (PIECES * PIECE) as u64;
        let wire = (tls.sock.written, tls.sock.read);
        assert!(wire.0 > stream && wire.1 > stream, "{wire:?}");
        assert_eq!(
            (stats.bytes_in, stats.bytes_out),
            (stream, stream),
            "the client's socket carried {wire:?} (out, in)"
        );
    }

    /// A socket that counts the bytes it carries, as the client saw them.
    struct Counted {
        stream: TcpStream,
        read: u64,
        written: u64,
    }

    impl Counted {
        fn new(stream: TcpStream) -> Counted {
            Counted {
                stream,
                read: 0,
                written: 0,
            }
        }
    }

    impl Read for Counted {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.stream.read(buf)?;
            self.read += n as u64;
            Ok(n)
        }
    }

    impl Write for Counted {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let n = self.stream.write(buf)?;
            self.written += n as u64;
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.stream.flush()
        }
    }

    /// A directory removed on drop.
    struct TempDir(std::path::PathBuf);

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}
