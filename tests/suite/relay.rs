//! The relay through real sockets: bytes intact both ways under load,
//! half-close carried through, upstream failure and recovery, bounded
//! buffering against a client that does not read, round-robin, and the
//! PROXY protocol header sent to each upstream (`--send-proxy`), checked
//! byte for byte. Failover and balancing: `relay_upstreams.rs`.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use nix::sys::socket::{setsockopt, sockopt};
use sockloop::app::echo::Echo;
use sockloop::app::relay::{Relay, SpliceMode};
use sockloop::reactor::{Addr, CloseReason, Config, SocketOptions};

use crate::common::{
    IO_TIMEOUT, LogFile, LogLines, Rng, Server, SlowUpstream, TestServer, bulk_round_trip,
    echo_all, read_to_eof, round_trip, stream_through_sigterm, wait_until, waits_between_reports,
};

/// Block `k` of client `seed`'s stream; writer and reader both regenerate it.
fn block(seed: u64, k: u64) -> Vec<u8> {
    Rng::new(seed << 32 | k).bytes(BLOCK)
}

const BLOCK: usize = 64 << 10;

/// Streams `blocks` blocks through `stream` and checks every byte that comes back.
fn stream_and_verify(stream: TcpStream, seed: u64, blocks: u64) {
    let mut writer = stream.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(move || {
            for k in 0..blocks {
                writer.write_all(&block(seed, k)).expect("write");
            }
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut reader = stream;
        let mut buf = vec![0; BLOCK];
        for k in 0..blocks {
            reader.read_exact(&mut buf).expect("read echo");
            assert!(buf == block(seed, k), "client {seed}: block {k} altered");
        }
        assert_eq!(
            reader.read(&mut buf).expect("EOF"),
            0,
            "client {seed}: bytes after the echo"
        );
    });
}

fn hundred_clients_times_8_mib(relay_flags: &[&str]) {
    let echo = Server::start(&[], &["echo"], Stdio::null());
    let upstream = format!("127.0.0.1:{}", echo.port);
    let mut args = vec!["relay", "--upstream", &upstream];
    args.extend_from_slice(relay_flags);
    let relay = Server::start(&[], &args, Stdio::null());
    thread::scope(|s| {
        for seed in 0..100 {
            let stream = relay.connect();
            s.spawn(move || stream_and_verify(stream, seed, 128));
        }
    });
}

#[test]
fn hundred_clients_times_8_mib_through_relay_and_echo_binaries() {
    hundred_clients_times_8_mib(&[]);
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn hundred_clients_times_8_mib_through_the_splice_relay() {
    hundred_clients_times_8_mib(&["--splice"]);
}

fn half_close_passes_through(splice: bool) {
    let upstream = TestServer::start(Config::default(), || Echo);
    let addr = upstream.addr;
    let relay = TestServer::start(Config::default(), move || relay_to(vec![addr], splice));
    let data = Rng::new(9).bytes(5 << 20);
    let back = echo_all(relay.connect(), &data);
    assert!(
        back == data,
        "got {} of {} bytes back",
        back.len(),
        data.len()
    );
    // The upstream saw our FIN: it closed as a peer that finished.
    let up = upstream.wait_for("upstream close", |s| s.closed == 1);
    assert_eq!(up.closed_by(CloseReason::Peer), 1);
    let stats = relay.wait_for("both relay sides closed", |s| {
        s.closed == 2 && s.active == 0
    });
    assert_eq!(stats.bytes_in, 2 * data.len() as u64, "exact byte counts");
    assert_eq!(stats.bytes_out, 2 * data.len() as u64);
    if splice {
        // All but what arrived before the upstream was up went by splice.
        assert!(stats.bytes_spliced > data.len() as u64, "{stats:?}");
    } else {
        assert_eq!(stats.bytes_spliced, 0);
    }
}

/// Copying, and splice(2) where the OS has it (Linux): the ways a relay
/// moves bytes, for the tests that must hold for each.
const SPLICE_MODES: &[bool] = if sockloop::sys::SPLICE {
    &[false, true]
} else {
    &[false]
};

fn relay_to(upstreams: Vec<SocketAddr>, splice: bool) -> Relay {
    let relay = Relay::new(upstreams.into_iter().map(Addr::from).collect());
    if splice { relay.with_splice() } else { relay }
}

#[test]
fn half_close_passes_through_the_relay() {
    half_close_passes_through(false);
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn half_close_passes_through_the_splice_relay() {
    half_close_passes_through(true);
}

#[test]
fn upstream_down_closes_clients_and_recovery_needs_no_restart() {
    let port_holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let down: SocketAddr = port_holder.local_addr().unwrap();
    drop(port_holder);
    let relay = TestServer::start(Config::default(), move || Relay::new(vec![down.into()]));
    for _ in 0..5 {
        let mut client = relay.connect();
        let mut buf = [0; 8];
        let n = client.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "a client of a dead upstream must be closed");
    }
    let stats = relay.wait_for("every failure counted", |s| s.connect_failed == 5);
    assert_eq!(stats.connected, 0);

    let _upstream = TestServer::start_on(down, Config::default(), || Echo);
    let mut client = relay.connect();
    assert_eq!(round_trip(&mut client, b"back again"), b"back again");
}

fn a_client_that_never_reads_holds_the_upstream(splice: bool) {
    let source = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = source.local_addr().unwrap();
    let stop = AtomicBool::new(false);
    let config = Config::default();
    let bound = config.high_watermark + config.read_chunk;
    let relay = TestServer::start(config, move || relay_to(vec![addr], splice));
    thread::scope(|s| {
        // An upstream that sends for as long as anyone takes its bytes.
        s.spawn(|| {
            let (mut up, _) = source.accept().unwrap();
            up.set_write_timeout(Some(std::time::Duration::from_millis(100)))
                .unwrap();
            let chunk = vec![1; 64 << 10];
            while !stop.load(Ordering::Relaxed) {
                if let Err(e) = up.write_all(&chunk)
                    && e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
                {
                    return;
                }
            }
        });
        let silent = relay.connect();
        let conns = wait_until("the relay to stop reading the upstream", || {
            let conns = relay.handle.connections().unwrap();
            let stalled = conns.len() == 2
                && conns
                    .iter()
                    .any(|c| c.state == "backpressured" && c.pending_output == 0)
                && conns.iter().any(|c| c.pending_output > 0);
            stalled.then_some(conns)
        });
        let client_side = conns
            .iter()
            .find(|c| c.pending_output > 0)
            .expect("client backlog");
        assert!(client_side.pending_output <= bound, "{client_side:?}");
        assert!(relay.stats().peak_pending_output <= bound);
        stop.store(true, Ordering::Relaxed);
        drop(silent);
    });
}

#[test]
fn a_client_that_never_reads_holds_the_upstream_not_memory() {
    a_client_that_never_reads_holds_the_upstream(false);
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn a_client_that_never_reads_holds_the_upstream_under_splice() {
    a_client_that_never_reads_holds_the_upstream(true);
}

#[test]
fn round_robin_splits_ten_clients_five_and_five() {
    let a = TestServer::start(Config::default(), || Echo);
    let b = TestServer::start(Config::default(), || Echo);
    let upstreams = vec![a.addr.into(), b.addr.into()];
    let relay = TestServer::start(Config::default(), move || Relay::new(upstreams));
    let mut clients: Vec<TcpStream> = (0..10).map(|_| relay.connect()).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let msg = format!("client {i}");
        assert_eq!(round_trip(c, msg.as_bytes()), msg.as_bytes());
    }
    assert_eq!(a.stats().accepted, 5);
    assert_eq!(b.stats().accepted, 5);
}

#[test]
fn an_upstream_that_never_answers_times_out_and_the_client_is_closed() {
    use sockloop::sys::os::Listen;
    use sockloop::sys::{ListenOptions, Listener};
    // A listener that never accepts, its queue already full: further SYNs
    // are dropped, so a connect neither succeeds nor fails.
    let black_hole = Listener::bind(
        &"127.0.0.1:0".parse().unwrap(),
        &ListenOptions {
            backlog: 0,
            ..ListenOptions::default()
        },
    )
    .unwrap();
    let addr = black_hole.local_addr().ip().unwrap();
    // Backlog 0 holds one: this connection fills it.
    let _filler = TcpStream::connect(addr).unwrap();
    let config = Config {
        connect_timeout: std::time::Duration::from_millis(300),
        ..Config::default()
    };
    let relay = TestServer::start(config, move || Relay::new(vec![addr.into()]));
    let mut client = relay.connect();
    let mut buf = [0; 8];
    assert_eq!(
        client.read(&mut buf).unwrap_or(0),
        0,
        "the client must be closed"
    );
    let stats = relay.wait_for("the timeout counted", |s| s.connect_failed == 1);
    assert_eq!(
        stats.closed_by(CloseReason::Error(std::io::ErrorKind::TimedOut)),
        2
    );
}

/// A relay started as a binary in front of `upstreams`, its stderr kept in a
/// file for the test to read; the file goes when the returned guard drops.
fn relay_binary(upstreams: &[SocketAddr], flags: &[&str]) -> (Server, LogFile) {
    let log = LogFile::new("relay");
    let mut args = vec!["relay".to_string()];
    for up in upstreams {
        args.extend(["--upstream".to_string(), up.to_string()]);
    }
    args.extend(flags.iter().map(|f| f.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let server = Server::start(&[], &args, log.stdio());
    (server, log)
}

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn a_splice_relay_with_output_queued_for_its_upstream_stays_idle_and_serves_others() {
    let mut slow = SlowUpstream::new();
    let echo = Server::start(&[], &["echo"], Stdio::null());
    let mut relay = Server::start(
        &[],
        &[
            "relay",
            "--upstream",
            &slow.addr.to_string(),
            "--upstream",
            &echo.addr().to_string(),
            "--splice",
            "--sndbuf",
            "16384",
            "--stats-interval",
            "1s",
        ],
        Stdio::piped(),
    );
    let mut log = LogLines::new(relay.take_stderr());
    // Sent while the upstream connect waits for its SYN retry: the relay
    // queues it in the upstream's output.
    let data = Rng::new(1).bytes(512 << 10);
    let mut first = relay.connect();
    first.write_all(&data).unwrap();
    slow.open();
    let mut up = slow.accept();
    // The upstream reads nothing yet: the first flush leaves most of the
    // queue unsent. One more byte then goes into the client's pipe.
    thread::sleep(Duration::from_millis(200));
    first.write_all(b"!").unwrap();
    thread::sleep(Duration::from_millis(100));

    let waits = waits_between_reports(&mut log);
    assert!(
        waits < 1_000,
        "the relay waited {waits} times in one idle second: spinning"
    );
    let mut second = relay.connect();
    second
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    assert_eq!(round_trip(&mut second, b"meanwhile"), b"meanwhile");

    // Once the upstream reads, everything arrives, in order.
    let mut got = vec![0; data.len() + 1];
    up.read_exact(&mut got).unwrap();
    assert!(got[..data.len()] == data[..], "bytes altered");
    assert_eq!(got[data.len()], b'!');
}

/// Runs `client` against a relay whose one upstream is slow to accept; the
/// upstream, once its connect is through, sends `greeting` and returns what
/// it read until EOF.
fn through_a_slow_upstream(
    config: Config,
    splice: bool,
    client: impl FnOnce(&TestServer, TcpStream),
    greeting: &[u8],
) -> Vec<u8> {
    let mut slow = SlowUpstream::new();
    let addr = slow.addr;
    let relay = TestServer::start(config, move || relay_to(vec![addr], splice));
    let stream = relay.connect();
    client(&relay, stream);
    slow.open();
    let mut up = slow.accept();
    up.write_all(greeting).unwrap();
    let request = read_to_eof(&mut up);
    drop(up);
    request
}

#[test]
fn a_client_fin_before_the_upstream_is_up_waits_for_the_connect() {
    for &splice in SPLICE_MODES {
        let (tx, rx) = std::sync::mpsc::channel();
        let request = through_a_slow_upstream(
            Config::default(),
            splice,
            |relay, mut client| {
                // A client that has nothing to say until it hears a greeting.
                client.shutdown(Shutdown::Write).unwrap();
                // The relay has seen the FIN while the connect is still going.
                wait_until("the client's FIN to reach the relay", || {
                    let conns = relay.handle.connections().unwrap();
                    conns.iter().any(|c| c.state == "read-closed").then_some(())
                });
                thread::spawn(move || tx.send(read_to_eof(&mut client)).unwrap());
            },
            b"greeting",
        );
        assert_eq!(request, b"", "splice {splice}");
        assert_eq!(rx.recv().unwrap(), b"greeting", "splice {splice}");
    }
}

#[test]
fn shutdown_lets_an_upstream_connect_in_progress_finish_and_answer() {
    let (tx, rx) = std::sync::mpsc::channel();
    let request = through_a_slow_upstream(
        Config::default(),
        false,
        |relay, mut client| {
            client.write_all(b"request").unwrap();
            wait_until("the request to reach the relay", || {
                (relay.stats().bytes_in == 7).then_some(())
            });
            relay.handle.shutdown().unwrap();
            thread::spawn(move || tx.send(read_to_eof(&mut client)).unwrap());
        },
        b"answer",
    );
    assert_eq!(request, b"request");
    assert_eq!(rx.recv().unwrap(), b"answer");
}

#[test]
fn shutdown_lets_the_upstream_answer_a_request_already_forwarded() {
    for &splice in SPLICE_MODES {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = upstream.local_addr().unwrap();
        let relay = TestServer::start(Config::default(), move || relay_to(vec![addr], splice));
        let mut client = relay.connect();
        client.write_all(b"request").unwrap();
        let (mut up, _) = upstream.accept().unwrap();
        let mut request = [0; 7];
        up.read_exact(&mut request).unwrap();
        // The answer is still being worked out when the relay is told to stop.
        relay.handle.shutdown().unwrap();
        thread::sleep(Duration::from_millis(100));
        up.write_all(b"answer").unwrap();
        up.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut client), b"answer", "splice {splice}");
        assert_eq!(read_to_eof(&mut up), b"", "splice {splice}");
    }
}

#[test]
fn clients_leaving_while_their_upstream_connects_leave_nothing_behind() {
    const CLIENTS: u64 = 5;
    let slow = SlowUpstream::new();
    let addr = slow.addr;
    let relay = TestServer::start_then(
        Config::default(),
        move || Relay::new(vec![addr.into()]),
        |reactor| {
            let relay = reactor.service();
            (relay.pending_connects(), relay.open_pairs())
        },
    );
    for _ in 0..CLIENTS {
        let client = relay.connect();
        // A reset, so the relay learns of it at once.
        setsockopt(&client, sockopt::Linger, &RESET).unwrap();
        drop(client);
    }
    relay.wait_for("every client and upstream closed", |s| {
        s.accepted == CLIENTS && s.active == 0
    });
    assert_eq!(
        relay.stop(),
        (0, 0),
        "upstream connects or pairs still remembered"
    );
    drop(slow);
}

/// `SO_LINGER` on with a zero timeout: closing sends RST.
const RESET: libc::linger = libc::linger {
    l_onoff: 1,
    l_linger: 0,
};

#[test]
fn sigterm_mid_transfer_through_the_relay_delivers_every_answer_then_eof() {
    for &splice in SPLICE_MODES {
        let flags: &[&str] = if splice { &["--splice"] } else { &[] };
        let echo = Server::start(&[], &["echo"], Stdio::null());
        let mut args = vec!["--shutdown-timeout", "30s"];
        args.extend_from_slice(flags);
        let (mut relay, log) = relay_binary(&[echo.addr()], &args);
        let addr = relay.addr();
        let status = stream_through_sigterm(&mut relay, addr, 20);
        assert!(status.success(), "{flags:?}: exit status {status}");
        let log = log.read();
        assert!(
            !log.contains("shutdown timeout"),
            "{flags:?}: the relay waited for its shutdown timeout:\n{log}"
        );
    }
}

#[test]
fn an_upstream_reset_reaches_the_client_as_a_reset() {
    for &splice in SPLICE_MODES {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let (mut client, up, _relay) = half_answered(upstream, Config::default(), splice);
        setsockopt(&up, sockopt::Linger, &RESET).unwrap();
        drop(up);
        let mut rest = [0; 8];
        let end = client.read(&mut rest);
        assert!(
            matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "splice {splice}: the client saw {end:?}, not a reset"
        );
    }
}

/// A relay with `config` in front of `upstream`, whose client it answered
/// "half an ans": returns the client, the upstream's socket and the relay.
fn half_answered(
    upstream: TcpListener,
    config: Config,
    splice: bool,
) -> (TcpStream, TcpStream, TestServer) {
    let addr = upstream.local_addr().unwrap();
    let relay = TestServer::start(config, move || relay_to(vec![addr], splice));
    let mut client = relay.connect();
    client.write_all(b"request").unwrap();
    let (mut up, _) = upstream.accept().unwrap();
    let mut request = [0; 7];
    up.read_exact(&mut request).unwrap();
    up.write_all(b"half an ans").unwrap();
    let mut got = [0; 11];
    client.read_exact(&mut got).unwrap();
    (client, up, relay)
}

/// As [`half_answered`], with a write timeout of 300 ms, by an upstream
/// that reads nothing more (keep its socket open). Its receive buffer and
/// the relay's send buffers are small, so that what the kernel holds runs
/// out early and the rest waits in the relay, where its write timeout sees
/// it.
fn half_answered_by_a_stalled_upstream(splice: bool) -> (TcpStream, TcpStream, TestServer) {
    let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
    setsockopt(&upstream, sockopt::RcvBuf, &4096).unwrap();
    let config = Config {
        write_timeout: Some(Duration::from_millis(300)),
        socket: SocketOptions {
            send_buffer: Some(16384),
            ..SocketOptions::default()
        },
        ..Config::default()
    };
    half_answered(upstream, config, splice)
}

/// The upstream reads no more, so the client's next 512 KiB back up in the
/// relay's output to it until the write timeout cuts it; the client must
/// see its answer cut short (a reset), not a clean end. The relay takes in
/// all 512 KiB (under its high watermark), so it closes the client with no
/// input unread: a close with unread input resets whatever was asked, which
/// would hide a FIN.
#[test]
fn an_upstream_cut_by_the_write_timeout_reaches_the_client_as_a_reset() {
    let (mut client, _up, relay) = half_answered_by_a_stalled_upstream(false);
    client.write_all(&[7; 512 << 10]).unwrap();
    let end = client.read(&mut [0; 8]);
    assert!(
        matches!(&end, Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset),
        "the client saw {end:?}, not a reset"
    );
    assert_eq!(relay.stats().closed_by(CloseReason::WriteTimeout), 2);
}

/// As above through a pipe: bytes that wait in the pipe are owed to the
/// upstream as its output is, so the write timeout cuts it there too.
/// The client sends until its writes fail; a reset reaches whichever of
/// its reader and writer asks first (the error is reported once).
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn an_upstream_that_stops_taking_the_pipe_is_cut_by_the_write_timeout() {
    let (mut client, _up, relay) = half_answered_by_a_stalled_upstream(true);
    let mut writer = client.try_clone().unwrap();
    writer.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    let flood = thread::spawn(move || {
        let chunk = vec![7; 64 << 10];
        loop {
            if let Err(e) = writer.write_all(&chunk) {
                return e.kind();
            }
        }
    });
    let end = client.read(&mut [0; 8]);
    let write_end = flood.join().unwrap();
    let reset = |kind| kind == std::io::ErrorKind::ConnectionReset;
    assert!(
        matches!(&end, Err(e) if reset(e.kind())) || (matches!(end, Ok(0)) && reset(write_end)),
        "the client read {end:?} and its writes ended with {write_end:?}: no reset"
    );
    assert_eq!(relay.stats().closed_by(CloseReason::WriteTimeout), 2);
}

/// The first `len` bytes an upstream connection gets.
fn read_exactly(stream: &mut TcpStream, len: usize) -> Vec<u8> {
    let mut got = vec![0; len];
    stream.read_exact(&mut got).expect("read from the relay");
    got
}

/// The v2 header HAProxy's specification describes for a TCP client at
/// `source` that connected to `destination`, written out field by field.
fn v2_header(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut wire = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    wire.push(0x21); // version 2, PROXY
    match (source, destination) {
        (SocketAddr::V4(s), SocketAddr::V4(d)) => {
            wire.extend_from_slice(&[0x11, 0, 12]); // TCP over IPv4, 12 bytes
            wire.extend_from_slice(&s.ip().octets());
            wire.extend_from_slice(&d.ip().octets());
        }
        (SocketAddr::V6(s), SocketAddr::V6(d)) => {
            wire.extend_from_slice(&[0x21, 0, 36]); // TCP over IPv6, 36 bytes
            wire.extend_from_slice(&s.ip().octets());
            wire.extend_from_slice(&d.ip().octets());
        }
        _ => panic!("one family expected"),
    }
    wire.extend_from_slice(&source.port().to_be_bytes());
    wire.extend_from_slice(&destination.port().to_be_bytes());
    wire
}

#[test]
fn send_proxy_starts_each_upstream_connection_with_the_clients_address() {
    for version in ["v1", "v2"] {
        for listen in ["127.0.0.1:0", "[::1]:0"] {
            let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
            let up_addr = upstream.local_addr().unwrap().to_string();
            let args = ["relay", "--upstream", &up_addr, "--send-proxy", version];
            let relay = Server::start_on(&[], &args, listen, Stdio::null());
            let Addr::Ip(relay_addr) = *relay.listening() else {
                panic!("an IP listener");
            };
            let mut client = TcpStream::connect(relay_addr).unwrap();
            client.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let client_addr = client.local_addr().unwrap();
            client.write_all(b"hello").unwrap();

            let expected = match version {
                "v1" => {
                    let family = if relay_addr.is_ipv4() { "TCP4" } else { "TCP6" };
                    format!(
                        "PROXY {family} {} {} {} {}\r\n",
                        client_addr.ip(),
                        relay_addr.ip(),
                        client_addr.port(),
                        relay_addr.port()
                    )
                    .into_bytes()
                }
                _ => v2_header(client_addr, relay_addr),
            };
            let (mut up, _) = upstream.accept().unwrap();
            up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            let got = read_exactly(&mut up, expected.len() + 5);
            assert_eq!(
                got,
                [&expected[..], b"hello"].concat(),
                "{version} on {listen}: {:?}",
                String::from_utf8_lossy(&got)
            );
            // Only the header is added, and only towards the upstream.
            up.write_all(b"world").unwrap();
            assert_eq!(read_exactly(&mut client, 5), b"world");
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&mut up), b"", "{version} on {listen}");
        }
    }
}

#[test]
fn send_proxy_header_goes_ahead_of_bytes_sent_while_the_upstream_connects() {
    let modes: &[&[&str]] = if sockloop::sys::SPLICE {
        &[&[], &["--splice"]]
    } else {
        &[&[]]
    };
    for &mode in modes {
        for version in ["v1", "v2"] {
            let mut slow = SlowUpstream::new();
            let mut flags = vec!["--send-proxy", version];
            flags.extend_from_slice(mode);
            let (relay, _log) = relay_binary(&[slow.addr], &flags);
            let mut client = relay.connect();
            let client_addr = client.local_addr().unwrap();
            // The SYN is dropped: these wait in the relay for the connect.
            let early = Rng::new(3).bytes(100 << 10);
            client.write_all(&early).unwrap();
            slow.open();
            let mut up = slow.accept();
            let expected = match version {
                "v1" => format!(
                    "PROXY TCP4 127.0.0.1 127.0.0.1 {} {}\r\n",
                    client_addr.port(),
                    relay.port
                )
                .into_bytes(),
                _ => v2_header(client_addr, relay.addr()),
            };
            assert_eq!(
                read_exactly(&mut up, expected.len()),
                expected,
                "{mode:?} {version}"
            );
            assert!(
                read_exactly(&mut up, early.len()) == early,
                "{mode:?} {version}: early bytes altered"
            );
            // Once the pair is up (and spliced, if asked), later bytes follow.
            client.write_all(b"later").unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            assert_eq!(read_to_eof(&mut up), b"later", "{mode:?} {version}");
        }
    }
}

#[cfg(unix)]
#[test]
fn send_proxy_names_no_address_for_a_unix_domain_client() {
    use std::os::unix::net::UnixStream;
    for (version, expected) in [
        ("v1", b"PROXY UNKNOWN\r\n".to_vec()),
        // LOCAL, family UNSPEC, no address bytes.
        ("v2", b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00".to_vec()),
    ] {
        let upstream = TcpListener::bind("127.0.0.1:0").unwrap();
        let up_addr = upstream.local_addr().unwrap().to_string();
        let path = std::env::temp_dir().join(format!(
            "sockloop-send-proxy-{}-{version}.sock",
            std::process::id()
        ));
        let listen = format!("unix:{}", path.display());
        let args = ["relay", "--upstream", &up_addr, "--send-proxy", version];
        let relay = Server::start_on(&[], &args, &listen, Stdio::null());
        let mut client = UnixStream::connect(&path).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut up, _) = upstream.accept().unwrap();
        up.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let got = read_exactly(&mut up, expected.len() + 2);
        assert_eq!(got, [&expected[..], b"hi"].concat(), "{version}");
        drop(client);
        drop(relay);
        let _ = std::fs::remove_file(&path);
    }
}

/// `--splice auto` leaves small requests and replies on the copy path and
/// splices a bulk transfer; `always` splices both. Every byte arrives
/// intact either way, on the same connection, small requests after the
/// bulk too.
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn splice_auto_copies_small_requests_and_splices_bulk_transfers() {
    for mode in [SpliceMode::Auto, SpliceMode::Always] {
        let upstream = TestServer::start(Config::default(), || Echo);
        let addr = Addr::from(upstream.addr);
        let relay = TestServer::start(Config::default(), move || {
            Relay::new(vec![addr.clone()]).with_splice_mode(mode)
        });
        let mut client = relay.connect();
        let mut rng = Rng::new(17);
        let small = |client: &mut TcpStream, rng: &mut Rng| {
            for _ in 0..50 {
                let len = rng.range(1, 2000);
                let request = rng.bytes(len);
                assert!(
                    round_trip(client, &request) == request,
                    "{mode:?}: reply altered"
                );
            }
        };
        small(&mut client, &mut rng);
        let spliced = relay.stats().bytes_spliced;
        match mode {
            SpliceMode::Auto => assert_eq!(spliced, 0, "small requests were spliced"),
            SpliceMode::Always => assert!(spliced > 0, "nothing was spliced"),
        }
        // Bulk both ways: the client writes 4 MiB while the echo sends it back.
        let data = rng.bytes(4 << 20);
        assert!(
            bulk_round_trip(&mut client, &data) == data,
            "{mode:?}: bulk bytes altered"
        );
        let stats = relay.stats();
        assert!(
            stats.bytes_spliced > data.len() as u64 / 2,
            "{mode:?}: the bulk transfer was not spliced: {stats:?}"
        );
        // Spliced now, small requests still come back whole.
        small(&mut client, &mut rng);
        client.shutdown(Shutdown::Write).unwrap();
        assert_eq!(read_to_eof(&mut client), b"", "{mode:?}");
    }
}

/// `--splice auto` makes a direction's pipe only once it carries bulk data:
/// a pair of small requests and replies holds its two sockets and nothing
/// more (it held two pipes, four more descriptors, from the start, a third
/// of the clients a descriptor limit allows); bulk one way adds one pipe.
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn splice_auto_makes_a_pipe_only_for_a_direction_that_carries_bulk_data() {
    let upstream = TestServer::start(Config::default(), || Echo);
    let up = upstream.addr.to_string();
    let relay = Server::start(
        &[],
        &["relay", "--upstream", &up, "--splice", "auto"],
        Stdio::null(),
    );
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", relay.pid()))
            .unwrap()
            .count()
    };
    let before = fds();
    let mut client = relay.connect();
    let mut rng = Rng::new(5);
    for _ in 0..20 {
        let len = rng.range(1, 2000);
        let request = rng.bytes(len);
        assert!(
            round_trip(&mut client, &request) == request,
            "reply altered"
        );
    }
    assert_eq!(
        fds(),
        before + 2,
        "a small-request pair: its two sockets only"
    );
    // The client sends in bulk and reads the echo back: both directions bulk.
    let data = rng.bytes(4 << 20);
    assert!(
        bulk_round_trip(&mut client, &data) == data,
        "bulk bytes altered"
    );
    assert_eq!(fds(), before + 6, "both directions in bulk: a pipe each");
    drop(client);
    wait_until("the pair's descriptors to close", || {
        (fds() == before).then_some(())
    });
}

/// The upstream's last bytes can still be in the splice pipe when its FIN
/// is read (the client takes them slowly): the pair is done only once
/// they are out. Closing the upstream then dropped them, and the client
/// got a clean EOF short of the stream (seen under packet loss first).
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "splice(2) is Linux-only")]
fn the_bytes_left_in_the_pipe_at_the_upstreams_fin_reach_a_slow_client() {
    let echo = Server::start(&[], &["echo"], Stdio::null());
    let (relay, _log) = relay_binary(&[echo.addr()], &["--splice", "always", "--sndbuf", "16384"]);
    let data = Rng::new(3).bytes(1 << 20);
    let client = relay.connect();
    setsockopt(&client, sockopt::RcvBuf, &16384).unwrap();
    let mut writer = client.try_clone().unwrap();
    let sent = data.clone();
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = client;
    let mut back = Vec::with_capacity(data.len());
    let mut piece = [0; 4096];
    loop {
        match reader.read(&mut piece) {
            Ok(0) => break,
            Ok(n) => back.extend_from_slice(&piece[..n]),
            Err(e) => panic!("read after {} bytes: {e}", back.len()),
        }
        thread::sleep(Duration::from_micros(200));
    }
    writing.join().unwrap();
    assert_eq!(back.len(), data.len(), "a clean EOF short of the stream");
    assert!(back == data, "bytes altered");
}
