//! Peers that try to hold a server's memory or its slots without doing any
//! real work: partial frames, frames trickled a byte at a time, output
//! never read or read a trickle at a time.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use sockloop::app::echo::{Echo, FramedEcho};
use sockloop::codec::{Codec, Framing};
use sockloop::reactor::{CloseReason, Config, SocketOptions};

use crate::common::{LogLines, Rng, Server, TestServer, bulk_round_trip, connect_tiny, round_trip};

#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads VmRSS from /proc")]
fn a_partial_frame_costs_what_was_received_not_a_read_buffer() {
    const PEERS: usize = 2000;
    let server = Server::start(
        &[],
        &["echo", "--framing", "lines", "--max-frame", "1K"],
        Stdio::null(),
    );
    let before = server.rss_bytes();
    let mut peers: Vec<TcpStream> = (0..PEERS).map(|_| server.connect()).collect();
    // Three bytes of a line never finished, each arriving as a read of its own.
    for byte in [b"a", b"b", b"c"] {
        for peer in &mut peers {
            peer.set_nodelay(true).unwrap();
            peer.write_all(byte).unwrap();
        }
        thread::sleep(Duration::from_millis(300));
    }
    let grown = server.rss_bytes().saturating_sub(before);
    let per_peer = grown / PEERS as u64;
    eprintln!("RSS grew {grown} B for {PEERS} peers: {per_peer} B per peer");
    assert!(
        per_peer <= 4096,
        "{per_peer} B of server memory per peer holding a 3-byte partial frame"
    );
    // Still a working server: a whole line comes back.
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"whole\n"), b"whole\n");
}

fn lines_server(frame_timeout: Duration) -> TestServer {
    let config = Config {
        frame_timeout: Some(frame_timeout),
        ..Config::default()
    };
    TestServer::start(config, || {
        FramedEcho::new(Codec::new(Framing::Lines, 1024).unwrap())
    })
}

#[test]
fn a_peer_trickling_a_frame_it_never_finishes_is_closed_by_the_frame_timeout() {
    let server = lines_server(Duration::from_millis(300));
    let mut trickler = server.connect();
    let mut steady = server.connect();
    let mut closed = false;
    // A byte every 50 ms is traffic enough for any idle timeout.
    for i in 0..100 {
        if trickler.write_all(b"x").is_err() {
            closed = true;
            break;
        }
        let line = format!("line {i}\n");
        assert_eq!(round_trip(&mut steady, line.as_bytes()), line.as_bytes());
        if server.stats().closed_by(CloseReason::FrameTimeout) == 1 {
            closed = true;
            break;
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(closed, "the trickling peer still holds its slot after 5 s");
    let mut rest = Vec::new();
    let _ = trickler.read_to_end(&mut rest);
    assert!(rest.is_empty(), "the trickler got {rest:?}");
    let stats = server.stats();
    assert_eq!(stats.closed_by(CloseReason::FrameTimeout), 1);
    assert_eq!(stats.active, 1, "the steady peer is still connected");
    assert_eq!(round_trip(&mut steady, b"still\n"), b"still\n");
}

#[test]
fn frames_that_each_complete_in_time_are_never_timed_out() {
    let server = lines_server(Duration::from_millis(300));
    let mut peer = server.connect();
    peer.set_nodelay(true).unwrap();
    // Always a partial frame pending, but none older than about 100 ms:
    // "a" + "b\nc" + "d\ne" + ... over two seconds.
    peer.write_all(b"a").unwrap();
    let mut back = Vec::new();
    for i in 0..20 {
        thread::sleep(Duration::from_millis(100));
        let piece = format!("{i}\nn");
        peer.write_all(piece.as_bytes()).unwrap();
        let mut buf = [0; 64];
        let n = peer.read(&mut buf).unwrap();
        assert!(n > 0, "closed after {} frames", i);
        back.extend_from_slice(&buf[..n]);
    }
    assert_eq!(server.stats().closed_by(CloseReason::FrameTimeout), 0);
    assert!(back.starts_with(b"a0\nn1\nn2\n"), "{back:?}");
}

/// Sends `bytes` to each of `peers` without blocking on any, until each has
/// sent it all or been closed, or none has made progress for a second.
/// Returns how many were closed (reset) by the server meanwhile.
fn send_to_all(peers: &mut [TcpStream], bytes: usize) -> usize {
    let chunk = vec![7; 64 << 10];
    let mut sent = vec![0; peers.len()];
    let mut closed = vec![false; peers.len()];
    let mut last_progress = Instant::now();
    while last_progress.elapsed() < Duration::from_secs(1) {
        let mut busy = false;
        for (i, peer) in peers.iter_mut().enumerate() {
            if closed[i] || sent[i] == bytes {
                continue;
            }
            busy = true;
            let n = chunk.len().min(bytes - sent[i]);
            match peer.write(&chunk[..n]) {
                Ok(n) => {
                    sent[i] += n;
                    last_progress = Instant::now();
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(_) => closed[i] = true,
            }
        }
        if !busy {
            break;
        }
        thread::sleep(Duration::from_millis(1));
    }
    closed.iter().filter(|&&c| c).count()
}

/// The number after `label ` in a stats line (`closed 3 (over-budget 2, ...`).
fn stat(line: &str, label: &str) -> u64 {
    line.split(&format!("{label} "))
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Bug 3 of issue 21: each peer that never reads pinned a high watermark of
/// output, with no bound on the total (these 200 cost +212 MiB before).
#[test]
#[cfg_attr(not(target_os = "linux"), ignore = "reads VmRSS from /proc")]
fn peers_that_never_read_are_held_to_the_output_budget() {
    const PEERS: usize = 200;
    const EACH: usize = 2 << 20;
    let args = [
        "echo",
        "--sndbuf",
        "16K",
        "--max-buffered",
        "32MiB",
        "--stats-interval",
        "200ms",
    ];
    let mut server = Server::start(&[], &args, Stdio::piped());
    let mut log = LogLines::new(server.take_stderr());
    let before = server.rss_bytes();
    let mut hogs: Vec<TcpStream> = (0..PEERS).map(|_| connect_tiny(server.addr())).collect();
    for hog in &hogs {
        hog.set_nonblocking(true).unwrap();
    }
    let reset = send_to_all(&mut hogs, EACH);
    // Let it settle: it reads no more of them (two stats lines in a row
    // agree), within 10 s.
    let mut last = log.wait_for("stats: ");
    for _ in 0..50 {
        let next = log.wait_for("stats: ");
        if stat(&next, "bytes in") == stat(&last, "bytes in") {
            break;
        }
        last = next;
    }
    let grown = server.peak_rss_bytes().saturating_sub(before);
    eprintln!(
        "peak RSS grew {} MiB for {PEERS} peers that do not read ({reset} were reset)",
        grown >> 20
    );
    assert!(
        grown <= 48 << 20,
        "the server's RSS grew {} MiB over its start",
        grown >> 20
    );

    // A client that reads is served: its echo, paused whenever it backs up,
    // resumes as it drains.
    let mut fresh = server.connect();
    let message = Rng::new(21).bytes(256 << 10);
    assert!(bulk_round_trip(&mut fresh, &message) == message);

    let stats = log.wait_for("stats: ");
    assert!(stat(&stats, "paused for the budget") > 0, "{stats}");
    let warning = (log.seen.iter())
        .find(|l| l.contains("not read until its output drains"))
        .unwrap_or_else(|| panic!("no warning in:\n{}", log.seen.join("\n")));
    eprintln!("{warning}\n{stats}");
}

/// Bug 3 of issue 21: any byte taken renewed the write timeout, so a peer
/// reading a few KiB now and then held a megabyte of output for ever.
#[test]
fn a_peer_that_reads_a_trickle_of_its_backlog_is_closed_by_the_write_timeout() {
    let args = [
        "echo",
        "--sndbuf",
        "16K",
        "--write-timeout",
        "1s",
        "--stats-interval",
        "200ms",
    ];
    let mut server = Server::start(&[], &args, Stdio::piped());
    let mut log = LogLines::new(server.take_stderr());
    let mut trickler = connect_tiny(server.addr());
    let mut writer = trickler.try_clone().unwrap();
    writer
        .set_write_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    // The writer stops once the server no longer reads it (or is gone).
    let sender = thread::spawn(move || {
        let chunk = vec![1; 64 << 10];
        (0..32)
            .take_while(|_| writer.write_all(&chunk).is_ok())
            .count()
    });
    let mut buf = [0; 4096];
    let mut taken = 0;
    let mut closed = false;
    // About 20 KiB a second, for up to 10 s: progress, but not a backlog's worth.
    for _ in 0..50 {
        thread::sleep(Duration::from_millis(200));
        match trickler.read(&mut buf) {
            Ok(0) | Err(_) => {
                closed = true;
                break;
            }
            Ok(n) => taken += n,
        }
    }
    assert!(
        closed,
        "a peer that took {taken} bytes in 10 s is still connected"
    );
    log.wait_for("write-timeout 1");
    sender.join().unwrap();
}

/// The other side of the rule above: a peer that reads slowly but drains
/// its backlog within the write timeout keeps its connection.
#[test]
fn a_slow_reader_that_drains_its_backlog_in_time_is_not_timed_out() {
    let config = Config {
        write_timeout: Some(Duration::from_secs(2)),
        socket: SocketOptions {
            send_buffer: Some(16 << 10),
            ..SocketOptions::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config, || Echo);
    let data = Rng::new(3).bytes(4 << 20);
    let stream = server.connect();
    let mut writer = stream.try_clone().unwrap();
    let back = thread::scope(|s| {
        s.spawn(|| writer.write_all(&data).expect("write"));
        let mut reader = stream;
        let mut back = vec![0; data.len()];
        // 32 KiB every 10 ms: a backlog of a megabyte in about a third of a second.
        for piece in back.chunks_mut(32 << 10) {
            reader.read_exact(piece).expect("read the echo");
            thread::sleep(Duration::from_millis(10));
        }
        back
    });
    assert!(back == data, "bytes came back altered");
    let stats = server.stats();
    assert!(stats.peak_pending_output > 512 << 10, "no backlog built up");
    assert_eq!(stats.closed_by(CloseReason::WriteTimeout), 0);
}

/// Past the budget, the connections with the largest backlogs are closed,
/// and a peer that reads is still served.
#[test]
fn the_largest_backlogs_are_shed_when_the_total_passes_the_budget() {
    const BUDGET: usize = 2 << 20;
    let config = Config {
        max_buffered: BUDGET,
        socket: SocketOptions {
            send_buffer: Some(16 << 10),
            ..SocketOptions::default()
        },
        ..Config::default()
    };
    let server = TestServer::start(config, || Echo);
    let mut hogs: Vec<TcpStream> = (0..40).map(|_| connect_tiny(server.addr)).collect();
    for hog in &hogs {
        hog.set_nonblocking(true).unwrap();
    }
    send_to_all(&mut hogs, 1 << 20);
    let stats = server.wait_for("a connection shed", |s| {
        s.closed_by(CloseReason::OverBudget) > 0
    });
    assert!(stats.budget_pauses > 0, "{stats:?}");
    let mut fresh = server.connect();
    let message = Rng::new(4).bytes(256 << 10);
    assert!(bulk_round_trip(&mut fresh, &message) == message);
    let stats = server.stats();
    assert!(
        stats.buffered_output <= BUDGET,
        "{} bytes buffered over a budget of {BUDGET}",
        stats.buffered_output
    );
}
