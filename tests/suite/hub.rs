//! The broadcast hub over real sockets: every client gets every other
//! client's frames, in order per sender and never its own; a client that
//! never reads is cut off, or misses frames, without holding back the rest.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use nix::sys::signal::Signal;
use sockloop::app::hub::{Hub, SlowPolicy};
use sockloop::codec::{Codec, Framing};
use sockloop::reactor::Config;
use sockloop::sys::SocketOptions;

use crate::common::{
    IO_TIMEOUT, LogFile, Server, TestServer, accepted_per_reactor, connect_tiny, wait_until,
};

const CLIENTS: usize = 20;
const FRAMES: usize = 1000;
/// Sent once by the last client to connect: whoever receives it knows the
/// hub has every client (they are accepted in the order they connected).
const HELLO: &[u8] = b"hello\n";
/// With these, a client that never reads backs up after some 200 KiB.
/// Left to itself Linux grows a send buffer to 4 MiB even towards a peer
/// that never reads, so the hub's sockets get a fixed one.
const HIGH_WATERMARK: usize = 64 << 10;
const SEND_BUFFER: usize = 32 << 10;
/// Rounds of 10 frames of ~110 bytes keep each reader's backlog under
/// 2 * 10 * 18 * 110 bytes, about 40 KiB: below the high watermark.
const PACE: usize = 10;

/// Frame `seq` of `sender`: both numbers in the text, then `pad` bytes.
fn frame(sender: usize, seq: usize, pad: usize) -> String {
    format!("{sender} {seq} {}\n", "x".repeat(pad))
}

/// Checks what one client receives: per sender, sequence numbers in order.
struct Tally {
    me: Option<usize>,
    /// Under the drop policy a sender's frames may skip ahead, never back.
    gaps_allowed: bool,
    next: Vec<usize>,
    frames: usize,
}

impl Tally {
    fn new(me: Option<usize>, gaps_allowed: bool) -> Tally {
        Tally {
            me,
            gaps_allowed,
            next: vec![0; CLIENTS],
            frames: 0,
        }
    }

    /// Reads frames until `count` have come (hellos are not counted).
    fn read(&mut self, reader: &mut impl BufRead, count: usize) {
        let mut line = Vec::new();
        while self.frames < count {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).unwrap_or_else(|e| {
                panic!("{:?}: {e} after {} of {count} frames", self.me, self.frames)
            });
            assert!(n > 0, "{:?}: EOF after {} frames", self.me, self.frames);
            if line != HELLO {
                self.take(&line);
            }
        }
    }

    fn take(&mut self, line: &[u8]) {
        let text = std::str::from_utf8(line).expect("utf-8 frame");
        let mut fields = text.split(' ');
        let mut number = || -> usize { fields.next().and_then(|f| f.parse().ok()).unwrap() };
        let (sender, seq) = (number(), number());
        assert_ne!(Some(sender), self.me, "a client got its own frame back");
        let next = &mut self.next[sender];
        if self.gaps_allowed {
            assert!(
                seq >= *next,
                "{:?}: from {sender}, {seq} after {next}",
                self.me
            );
        } else {
            assert_eq!(seq, *next, "{:?}: out of order from {sender}", self.me);
        }
        *next = seq + 1;
        self.frames += 1;
    }
}

fn connect_to(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect(addr).expect("connect");
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// Servers are spawned on other threads: a socket of this process must not
/// leak into them.
/// Connects `silent` (if asked) and then `readers` clients; the readers each
/// send FRAMES frames padded by `pad` while reading every frame of the
/// others. With `pace`, a reader sends its frames in rounds of that many,
/// and starts a round only when every other reader has all of its rounds
/// but the last: however the threads are scheduled, no reader falls more
/// than two rounds per sender behind, so only the silent client is slow.
/// Returns the clients, still open.
fn exchange(
    addr: SocketAddr,
    readers: usize,
    pad: usize,
    pace: Option<usize>,
    silent: bool,
) -> (Vec<TcpStream>, Option<TcpStream>) {
    let silent = silent.then(|| connect_tiny(addr));
    let mut clients: Vec<TcpStream> = (0..readers).map(|_| connect_to(addr)).collect();
    clients[readers - 1].write_all(HELLO).unwrap();
    // Every other reader hears it, so every one is subscribed (over several
    // reactors, each accepts its own share in its own time).
    for client in &clients[..readers - 1] {
        let mut first_line = Vec::new();
        BufReader::new(client)
            .read_until(b'\n', &mut first_line)
            .unwrap();
        assert_eq!(first_line, HELLO);
    }
    // received[reader][sender]: frames of `sender` that `reader` has.
    let received: Vec<Vec<AtomicUsize>> = (0..readers)
        .map(|_| (0..readers).map(|_| AtomicUsize::new(0)).collect())
        .collect();
    let received = &received;
    thread::scope(|s| {
        for (me, client) in clients.iter().enumerate() {
            s.spawn(move || {
                let round = pace.unwrap_or(FRAMES);
                for start in (0..FRAMES).step_by(round) {
                    let behind = start.saturating_sub(round);
                    wait_until("the other readers to catch up", || {
                        let all = (0..readers)
                            .filter(|&r| r != me)
                            .all(|r| received[r][me].load(Ordering::Relaxed) >= behind);
                        all.then_some(())
                    });
                    let wire: String = (start..FRAMES.min(start + round))
                        .map(|seq| frame(me, seq, pad))
                        .collect();
                    (&*client).write_all(wire.as_bytes()).expect("send frames");
                }
            });
            s.spawn(move || {
                let mut tally = Tally::new(Some(me), false);
                let mut reader = BufReader::new(client);
                for count in 1..=(readers - 1) * FRAMES {
                    tally.read(&mut reader, count);
                    for (sender, next) in tally.next.iter().enumerate().take(readers) {
                        received[me][sender].store(*next, Ordering::Relaxed);
                    }
                }
            });
        }
    });
    (clients, silent)
}

#[test]
fn every_client_gets_every_other_clients_frames_in_order() {
    let server = Server::start(&[], &["hub", "--framing", "lines"], Stdio::null());
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    exchange(addr, CLIENTS, 0, None, false);
}

#[test]
fn over_two_reactors_every_client_gets_every_other_clients_frames_in_order() {
    let log = LogFile::new("hub-threads");
    let mut server = Server::start(
        &[],
        &["hub", "--framing", "lines", "--threads", "2"],
        log.stdio(),
    );
    let (clients, _) = exchange(server.addr(), CLIENTS, 0, None, false);
    drop(clients);
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", log.read());
    let text = log.read();
    let accepted = accepted_per_reactor(&text);
    assert_eq!(accepted.iter().sum::<u64>(), CLIENTS as u64, "{text}");
    // SO_REUSEPORT hashes each connection's ports: all 20 on one reactor
    // would be a one-in-500,000 chance, and then the frames never crossed.
    assert!(
        accepted.len() == 2 && accepted.iter().all(|&n| n > 0),
        "{accepted:?}"
    );
}

#[test]
fn under_the_block_policy_a_slow_subscriber_loses_nothing_while_a_publisher_keeps_sending() {
    /// About 2 MiB: thirty times what the hub and the kernel hold for the
    /// slow subscriber, so the publisher must be held back.
    const SENT: usize = 20_000;
    for threads in ["1", "2"] {
        let log = LogFile::new("hub-block");
        let args = [
            "hub",
            "--framing",
            "lines",
            "--slow-policy",
            "block",
            "--high-watermark",
            "64KiB",
            "--sndbuf",
            "32KiB",
            "--threads",
            threads,
        ];
        let server = Server::start(&[], &args, log.stdio());
        let addr = server.addr();
        let mut slow = BufReader::new(connect_tiny(addr));
        let mut fast = BufReader::new(connect_to(addr));
        let publisher = connect_to(addr);
        (&publisher).write_all(HELLO).unwrap();
        for reader in [&mut slow, &mut fast] {
            let mut line = Vec::new();
            reader.read_until(b'\n', &mut line).unwrap();
            assert_eq!(line, HELLO);
        }
        thread::scope(|s| {
            s.spawn(|| {
                for start in (0..SENT).step_by(100) {
                    let wire: String = (start..start + 100).map(|seq| frame(0, seq, 100)).collect();
                    (&publisher).write_all(wire.as_bytes()).expect("publish");
                }
            });
            s.spawn(|| Tally::new(None, false).read(&mut fast, SENT));
            // Asleep at first, so its backlog passes the high watermark;
            // then it reads in bursts with pauses, and must miss nothing.
            let mut tally = Tally::new(None, false);
            thread::sleep(Duration::from_millis(300));
            for burst in 1..=SENT / 2000 {
                tally.read(&mut slow, burst * 2000);
                thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(tally.next[0], SENT);
        });
        drop(server);
        let text = log.read();
        assert!(
            text.contains("publishers wait until it catches up")
                && text.contains("holds publishers back no more"),
            "--threads {threads}: the publisher was never held:\n{text}"
        );
    }
}

#[test]
fn a_client_that_never_reads_is_cut_off_and_the_rest_get_everything() {
    let log = std::env::temp_dir().join(format!("sockloop-hub-{}.log", std::process::id()));
    let server = Server::start(
        &[],
        &[
            "hub",
            "--framing",
            "lines",
            "--high-watermark",
            "64KiB",
            "--sndbuf",
            "32KiB",
        ],
        Stdio::from(fs::File::create(&log).unwrap()),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let (_clients, silent) = exchange(addr, CLIENTS - 1, 100, Some(PACE), true);
    // What the kernel held for it still arrives, then the end: EOF, or a
    // reset if the hub's close found bytes unsent.
    let mut silent = silent.unwrap();
    let mut got = Vec::new();
    match silent.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    let mut tally = Tally::new(None, false);
    for line in got.split_inclusive(|&b| b == b'\n') {
        if line != HELLO && line.ends_with(b"\n") {
            tally.take(line);
        }
    }
    assert!(tally.frames < (CLIENTS - 1) * FRAMES, "it got everything");
    drop(server);
    let text = fs::read_to_string(&log).unwrap();
    let _ = fs::remove_file(&log);
    assert!(
        text.contains("disconnecting slow subscriber"),
        "no log line for the cut:\n{text}"
    );
}

#[test]
fn under_the_drop_policy_a_client_that_never_reads_misses_frames_and_stays() {
    let config = Config {
        high_watermark: HIGH_WATERMARK,
        low_watermark: HIGH_WATERMARK / 4,
        socket: SocketOptions {
            send_buffer: Some(SEND_BUFFER),
            ..SocketOptions::default()
        },
        ..Config::default()
    };
    let read_chunk = config.read_chunk;
    let make_hub = || {
        let codec = Codec::new(Framing::Lines, 1 << 20).unwrap();
        Hub::new(codec, SlowPolicy::Drop, HIGH_WATERMARK)
    };
    let server = TestServer::start_then(config, make_hub, |reactor| reactor.service().dropped());
    let readers = CLIENTS - 1;
    let pad = 100;
    let (mut clients, silent) = exchange(server.addr, readers, pad, Some(PACE), true);
    let stats = server.stats();
    assert_eq!((stats.active, stats.closed), (CLIENTS as u64, 0));
    // Every copy not counted as sent to a reader went to the silent one; the
    // hello went to every client but its sender.
    let to_readers = (readers * (readers - 1) * FRAMES + readers - 1) as u64;
    let to_silent = (stats.frames_out - to_readers - 1) as usize;
    assert!(to_silent < readers * FRAMES, "nothing was dropped");
    let frame_len = frame(readers, FRAMES, pad).len();
    assert!(
        stats.peak_pending_output <= HIGH_WATERMARK + read_chunk + frame_len,
        "a backlog of {} bytes",
        stats.peak_pending_output
    );

    // It reads at last: every frame queued for it arrives, in order with
    // gaps; and it is still subscribed.
    let mut silent = BufReader::new(silent.unwrap());
    let mut tally = Tally::new(None, true);
    tally.read(&mut silent, to_silent);
    clients[0]
        .write_all(&frame(0, FRAMES, 0).into_bytes())
        .unwrap();
    tally.read(&mut silent, to_silent + 1);
    assert_eq!(tally.next[0], FRAMES + 1);

    let dropped = server.stop();
    assert_eq!(dropped as usize, readers * FRAMES - to_silent);
}

#[test]
fn a_client_that_breaks_the_framing_loses_only_its_own_connection() {
    let server = Server::start(
        &[],
        &["hub", "--framing", "lines", "--max-frame", "16"],
        Stdio::null(),
    );
    let addr = SocketAddr::from(([127, 0, 0, 1], server.port));
    let (a, b) = (connect_to(addr), connect_to(addr));
    let mut bad = connect_to(addr);
    // A whole frame, then a line longer than --max-frame.
    bad.write_all(b"fine\n").unwrap();
    bad.write_all(&[b'x'; 64]).unwrap();
    let mut rest = Vec::new();
    match bad.read_to_end(&mut rest) {
        Ok(_) => assert!(rest.is_empty(), "the offender got {rest:?}"),
        Err(e) => assert_eq!(e.kind(), ErrorKind::ConnectionReset, "{e}"),
    }
    (&a).write_all(b"after\n").unwrap();
    let mut line = String::new();
    let mut a = BufReader::new(a);
    let mut b = BufReader::new(b);
    a.read_line(&mut line).unwrap();
    assert_eq!(line, "fine\n");
    for expected in ["fine\n", "after\n"] {
        line.clear();
        b.read_line(&mut line).unwrap();
        assert_eq!(line, expected);
    }
}
