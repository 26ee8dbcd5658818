//! `hub --federate`: hubs in separate processes joined through a Redis
//! pub/sub channel. Every frame reaches every client of every hub but its
//! sender, once and in order per sender; when Redis goes away, local
//! delivery goes on, the links come back by themselves, and every frame a
//! hub's clients missed is counted in its `frames_missed_total`.
//!
//! The tests with a real `redis-server` are ignored unless asked for, as
//! .ci/run does once it has installed it:
//! `cargo test --test suite -- --ignored federation::`.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use nix::sys::signal::Signal;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::common::{LogLines, Server, connect_tiny, free_port, wait_until};
use crate::metrics::{scrape, value, with_metrics};

/// A `redis-server` of the test's own, on 127.0.0.1:`port` or on a Unix
/// socket in its directory; killed, and its directory removed, on drop.
struct Redis {
    child: Option<Child>,
    dir: PathBuf,
    /// 0 for a Unix socket.
    port: u16,
}

impl Redis {
    fn on_port() -> Redis {
        Redis::start(free_port())
    }

    fn on_socket() -> Redis {
        Redis::start(0)
    }

    fn start(port: u16) -> Redis {
        let name = format!("sockloop-redis-{}-{}", std::process::id(), free_port());
        let dir = std::env::temp_dir().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        let mut redis = Redis {
            child: None,
            dir,
            port,
        };
        redis.run();
        redis
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("redis.sock")
    }

    /// Starts the server (again, after [`kill`](Self::kill): same port or
    /// socket) and waits until it answers a PING.
    fn run(&mut self) {
        let mut command = Command::new("redis-server");
        let port = self.port.to_string();
        command.args(["--bind", "127.0.0.1", "--port", &port]);
        command.args(["--save", "", "--appendonly", "no", "--dir"]);
        command.arg(&self.dir);
        if self.port == 0 {
            command.arg("--unixsocket").arg(self.socket());
        }
        let log = std::fs::File::create(self.dir.join("redis.log")).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        let child = command
            .spawn()
            .expect("redis-server on PATH (apt-get install -y redis-server)");
        self.child = Some(child);
        wait_until("redis-server to answer", || self.ping().then_some(()));
    }

    fn ping(&self) -> bool {
        let answer = || -> std::io::Result<String> {
            let mut line = String::new();
            if self.port == 0 {
                let mut stream = std::os::unix::net::UnixStream::connect(self.socket())?;
                stream.write_all(b"PING\r\n")?;
                BufReader::new(stream).read_line(&mut line)?;
            } else {
                let mut stream = TcpStream::connect(("127.0.0.1", self.port))?;
                stream.write_all(b"PING\r\n")?;
                BufReader::new(stream).read_line(&mut line)?;
            }
            Ok(line)
        };
        answer().is_ok_and(|line| line == "+PONG\r\n")
    }

    fn url(&self, channel: &str) -> String {
        match self.port {
            0 => format!("unix:{}/{channel}", self.socket().display()),
            port => format!("redis://127.0.0.1:{port}/{channel}"),
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The arguments of a line hub with one reactor, federated through `url`.
fn hub_args(url: &str) -> [&str; 7] {
    [
        "hub",
        "--framing",
        "lines",
        "--threads",
        "1",
        "--federate",
        url,
    ]
}

/// A `hub --framing lines --federate URL` with one reactor, its metrics
/// and its log.
struct Hub {
    server: Server,
    metrics: String,
    log: LogLines,
}

impl Hub {
    fn start(url: &str, extra: &[&str]) -> Hub {
        let (server, metrics, log) = with_metrics(&[&hub_args(url)[..], extra].concat());
        Hub {
            server,
            metrics,
            log,
        }
    }

    /// As [`start`](Self::start), once its links are up.
    fn linked(url: &str, extra: &[&str]) -> Hub {
        let hub = Hub::start(url, extra);
        hub.wait_linked();
        hub
    }

    fn metric(&self, name: &str) -> u64 {
        value(&scrape(&self.metrics), name) as u64
    }

    fn federation(&self, counter: &str) -> u64 {
        self.metric(&format!("sockloop_federation_{counter}"))
    }

    fn wait_linked(&self) {
        wait_until("the links to Redis to be up", || {
            (self.federation("link_up") == 1).then_some(())
        });
    }

    /// Waits until the hub has `clients` of its own (besides its two links
    /// and the scrape asking): a frame published then reaches them all.
    fn wait_clients(&self, clients: u64) {
        wait_until("the hub to take its clients", || {
            (self.metric("sockloop_active_connections") == clients + 3).then_some(())
        });
    }

    fn connect(&self) -> TcpStream {
        self.server.connect()
    }
}

/// The frames one client received, in order: (sender, sequence number).
type Received = Arc<Mutex<Vec<(String, u64)>>>;

/// Reads `client`'s frames on a thread of its own until it has the end
/// line (`SENDER end`) of each of `senders`.
fn read_frames(client: TcpStream, senders: &[&str]) -> (Received, thread::JoinHandle<()>) {
    let received = Received::default();
    let mut waiting: Vec<String> = senders.iter().map(|s| s.to_string()).collect();
    let into = Arc::clone(&received);
    let reader = thread::spawn(move || {
        let mut lines = BufReader::new(client).lines();
        while !waiting.is_empty() {
            let line = lines
                .next()
                .expect("a line before EOF")
                .expect("a line in time");
            let (sender, seq) = line.split_once(' ').expect("SENDER SEQ");
            if seq == "end" {
                waiting.retain(|s| s != sender);
            } else {
                let seq = seq.parse().expect("a sequence number");
                into.lock().unwrap().push((sender.to_owned(), seq));
            }
        }
    });
    (received, reader)
}

/// `sender`'s frames `seqs`, one write each, so that they go out in many
/// batches.
fn publish(client: &mut TcpStream, sender: &str, seqs: std::ops::Range<u64>) {
    for seq in seqs {
        client
            .write_all(format!("{sender} {seq}\n").as_bytes())
            .unwrap();
    }
}

/// The sequence numbers of `sender` in what a client received.
fn from(received: &Received, sender: &str) -> Vec<u64> {
    let received = received.lock().unwrap();
    received
        .iter()
        .filter(|(s, _)| s == sender)
        .map(|&(_, seq)| seq)
        .collect()
}

/// What a run without an outage never counts.
const NO_LOSS: [&str; 3] = [
    "frames_missed_total",
    "frames_dropped_total",
    "foreign_total",
];

/// Waits for reader `me` (named if it is a publisher) to finish, and
/// checks that it got frames 0..`frames` of every sender but itself, each
/// once and in order, and none of its own.
fn each_frame_once_in_order(
    me: &str,
    (received, reader): (Received, thread::JoinHandle<()>),
    senders: &[&str],
    frames: u64,
) {
    reader.join().expect("a reader");
    for sender in senders.iter().filter(|&&n| n != me) {
        assert_eq!(
            from(&received, sender),
            (0..frames).collect::<Vec<_>>(),
            "{me:?} from {sender}: each frame once, in order"
        );
    }
    assert!(from(&received, me).is_empty(), "{me} got its own frames");
}

#[test]
#[ignore = "needs redis-server (apt-get install -y redis-server)"]
fn every_frame_reaches_every_other_client_of_three_hubs_once_and_in_order() {
    const FRAMES: u64 = 300;
    let redis = Redis::on_socket();
    let url = redis.url("chat");
    let hubs: Vec<Hub> = (0..3).map(|_| Hub::linked(&url, &[])).collect();
    // Publishers a0 and a1 on the first hub, b0 on the second; each reads
    // too. Two readers only on each hub, and the first hub's one.
    let senders = [("a0", 0), ("a1", 0), ("b0", 1)];
    let mut publishers: Vec<(&str, TcpStream)> = senders
        .iter()
        .map(|&(name, hub)| (name, hubs[hub].connect()))
        .collect();
    let readers_on = [1, 2, 2];
    let mut readers = Vec::new();
    for (hub, &count) in hubs.iter().zip(&readers_on) {
        for _ in 0..count {
            readers.push((String::new(), hub.connect()));
        }
    }
    for (i, hub) in hubs.iter().enumerate() {
        let publishing = senders.iter().filter(|&&(_, on)| on == i).count();
        hub.wait_clients((readers_on[i] + publishing) as u64);
    }
    let names: Vec<&str> = senders.iter().map(|&(name, _)| name).collect();
    let mut reading = Vec::new();
    for (name, client) in &publishers {
        let others: Vec<&str> = names.iter().copied().filter(|n| n != name).collect();
        let client = client.try_clone().unwrap();
        reading.push((name.to_string(), read_frames(client, &others)));
    }
    for (name, client) in readers {
        reading.push((name, read_frames(client, &names)));
    }
    thread::scope(|s| {
        for (name, client) in &mut publishers {
            s.spawn(move || {
                publish(client, name, 0..FRAMES);
                client
                    .write_all(format!("{name} end\n").as_bytes())
                    .unwrap();
            });
        }
    });
    for (me, reading) in reading {
        each_frame_once_in_order(&me, reading, &names, FRAMES);
    }
    for hub in &hubs {
        for counter in NO_LOSS {
            assert_eq!(hub.federation(counter), 0, "{counter}");
        }
    }
    // b0's frames and its end line went out, and all three senders' came in.
    assert_eq!(hubs[1].federation("frames_out_total"), FRAMES + 1);
    assert_eq!(hubs[2].federation("frames_in_total"), 3 * (FRAMES + 1));
}

#[test]
#[ignore = "needs redis-server (apt-get install -y redis-server)"]
fn when_redis_restarts_local_delivery_goes_on_and_every_missed_frame_is_counted() {
    let mut redis = Redis::on_port();
    let url = redis.url("news");
    // The publisher's hub keeps at most 2 KiB for Redis: a few dozen frames.
    let mut hubs = vec![Hub::linked(&url, &["--federate-buffer", "2K"])];
    hubs.push(Hub::linked(&url, &[]));
    hubs.push(Hub::linked(&url, &[]));
    let mut publisher = hubs[0].connect();
    let subscribers: Vec<_> = hubs.iter().map(|hub| hub.connect()).collect();
    hubs[0].wait_clients(2);
    hubs[1].wait_clients(1);
    hubs[2].wait_clients(1);
    let (received, mut readers): (Vec<_>, Vec<_>) = subscribers
        .into_iter()
        .map(|client| read_frames(client, &["p"]))
        .unzip();
    let have = |hub: usize, seq: u64| from(&received[hub], "p").contains(&seq);

    publish(&mut publisher, "p", 0..100);
    wait_until("the other hubs to have the first frames", || {
        (have(1, 99) && have(2, 99)).then_some(())
    });
    redis.kill();
    hubs[0].log.wait_for("federation: lost");
    // Some 7 KiB of frames while Redis is away.
    publish(&mut publisher, "p", 100..1100);
    wait_until("the local subscriber to have them all", || {
        have(0, 1099).then_some(())
    });
    redis.run();
    for hub in &hubs {
        hub.wait_linked();
    }
    // After the return, until both other hubs have heard again.
    let mut next = 1100;
    while !(have(1, next - 1) && have(2, next - 1)) {
        assert!(next < 3100, "frames after Redis came back never arrived");
        publish(&mut publisher, "p", next..next + 1);
        next += 1;
        thread::sleep(Duration::from_millis(5));
    }
    publisher.write_all(b"p end\n").unwrap();
    for reader in readers.drain(..) {
        reader.join().expect("a reader");
    }
    assert_eq!(
        from(&received[0], "p"),
        (0..next).collect::<Vec<_>>(),
        "local delivery stopped"
    );
    let dropped = hubs[0].federation("frames_dropped_total");
    assert!(dropped > 0, "the 2 KiB queue held all 7 KiB of frames");
    for (hub, received) in hubs[1..].iter().zip(&received[1..]) {
        let missed = missed_in_order(&from(received, "p"), 100, next);
        assert_eq!(hub.federation("frames_missed_total"), missed);
        assert!(dropped <= missed, "dropped {dropped}, missed {missed}");
        assert!(hub.federation("reconnects_total") >= 1);
    }
    assert!(hubs[0].federation("reconnects_total") >= 1);
}

/// How many of frames 0..`sent` are not in `seqs`, which must be in order,
/// hold every one of the first `before` (sent before the outage), and end
/// with the last.
fn missed_in_order(seqs: &[u64], before: u64, sent: u64) -> u64 {
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "out of order: {seqs:?}"
    );
    assert!(seqs.starts_with(&(0..before).collect::<Vec<_>>()));
    assert_eq!(seqs.last(), Some(&(sent - 1)));
    sent - seqs.len() as u64
}

/// Without Redis, a federated hub serves its own clients as any hub, and
/// says that the link is down.
#[test]
fn with_nothing_at_the_federate_address_local_clients_are_served() {
    let url = format!("redis://127.0.0.1:{}/chat", free_port());
    let mut hub = Hub::start(&url, &[]);
    hub.log.wait_for("federation: lost redis://127.0.0.1");
    let mut first = hub.connect();
    let mut second = hub.connect();
    // The second's hello reaches the first: both are in.
    second.write_all(b"hello\n").unwrap();
    let mut line = String::new();
    BufReader::new(&first).read_line(&mut line).unwrap();
    assert_eq!(line, "hello\n");
    first.write_all(b"hi there\n").unwrap();
    line.clear();
    BufReader::new(&second).read_line(&mut line).unwrap();
    assert_eq!(line, "hi there\n");
    assert_eq!(hub.federation("link_up"), 0);
    assert_eq!(hub.federation("reconnects_total"), 0);
    assert_eq!(hub.federation("frames_out_total"), 0);
}

/// The two links a hub opens to `fake`, a stand-in for Redis, once both
/// are accepted.
fn accept_links(fake: &TcpListener) -> Vec<TcpStream> {
    fake.set_nonblocking(true).unwrap();
    let mut links = Vec::new();
    wait_until("both links to connect", || {
        links.extend(fake.accept().ok().map(|(stream, _)| stream));
        (links.len() == 2).then_some(())
    });
    links
}

/// The links serve no client: a graceful shutdown closes them rather than
/// wait out its timeout for them. Before the fix, SIGTERM took the whole
/// `--shutdown-timeout` and ended with "shutdown timeout: closing 2
/// connections".
#[test]
fn sigterm_closes_the_links_without_waiting_out_the_shutdown_timeout() {
    // Takes the links' connections and says nothing: links that never end
    // by themselves.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let url = format!("redis://127.0.0.1:{port}/chat");
    let mut hub = Server::start(
        &[],
        &[&hub_args(&url)[..], &["--shutdown-timeout", "3s"]].concat(),
        Stdio::piped(),
    );
    let mut log = LogLines::new(hub.take_stderr());
    let _links = accept_links(&silent);
    hub.signal(Signal::SIGTERM);
    log.wait_for("stopped:");
    assert!(hub.wait_exit().success());
    assert!(
        !log.seen.iter().any(|l| l.contains("shutdown timeout")),
        "{:?}",
        log.seen
    );
}

/// A quiet channel is no idle connection: the links say PING every third
/// of the idle timeout, so the timeout never closes them.
#[test]
#[ignore = "needs redis-server (apt-get install -y redis-server)"]
fn quiet_links_outlive_the_idle_timeout() {
    let redis = Redis::on_port();
    let hub = Hub::linked(&redis.url("quiet"), &["--idle-timeout", "200ms"]);
    // Five idle timeouts with nothing published.
    thread::sleep(Duration::from_secs(1));
    assert_eq!(hub.federation("link_up"), 1);
    assert_eq!(hub.federation("reconnects_total"), 0);
    let closed_idle = "sockloop_closed_by_reason_total{reason=\"idle\"}";
    assert_eq!(hub.metric(closed_idle), 0);
}

/// A message on the channel that no hub published is dropped and counted:
/// the hub's clients never see it.
#[test]
#[ignore = "needs redis-server (apt-get install -y redis-server)"]
fn a_message_not_from_a_hub_is_counted_and_never_delivered() {
    let redis = Redis::on_port();
    let url = redis.url("chat");
    let (listening, speaking) = (Hub::linked(&url, &[]), Hub::linked(&url, &[]));
    let subscriber = listening.connect();
    listening.wait_clients(1);
    let mut outsider = TcpStream::connect(("127.0.0.1", redis.port)).unwrap();
    let junk = "*3\r\n$7\r\nPUBLISH\r\n$4\r\nchat\r\n$13\r\nnot a frame\r\n\r\n";
    outsider.write_all(junk.as_bytes()).unwrap();
    wait_until("the junk to be counted", || {
        (listening.federation("foreign_total") == 1).then_some(())
    });
    let mut publisher = speaking.connect();
    speaking.wait_clients(1);
    publish(&mut publisher, "s", 0..1);
    let mut first = String::new();
    BufReader::new(subscriber).read_line(&mut first).unwrap();
    assert_eq!(first, "s 0\n", "the junk was delivered");
}

/// A message as Redis pushes it to a subscriber of `channel`: a batch of
/// `frames` lines from instance 1, reactor 0, the first numbered `first`.
fn push(channel: &str, first: u64, lines: &[u8], frames: u64) -> Vec<u8> {
    let mut payload = b"SLF1".to_vec();
    for field in [
        &1u64.to_be_bytes()[..],
        &0u32.to_be_bytes(),
        &first.to_be_bytes(),
        &frames.to_be_bytes(),
    ] {
        payload.extend_from_slice(field);
    }
    payload.extend_from_slice(lines);
    let head = format!(
        "*3\r\n$7\r\nmessage\r\n${}\r\n{channel}\r\n${}\r\n",
        channel.len(),
        payload.len()
    );
    [head.as_bytes(), &payload, b"\r\n"].concat()
}

/// Under `--slow-policy block` the other instances are publishers too: while
/// a subscriber is slow the subscribe link is not read, so its backlog stays
/// near the high watermark. Before the fix the hub read on and queued every
/// frame from Redis for the slow subscriber (4 MB here).
#[test]
fn under_the_block_policy_a_slow_subscriber_holds_the_subscribe_link_back() {
    const BATCHES: u64 = 400;
    const PER_BATCH: u64 = 100;
    // A stand-in for Redis: confirms the subscription, then pushes.
    let fake = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("redis://{}/chat", fake.local_addr().unwrap());
    let hub = Hub::start(
        &url,
        &[
            "--slow-policy",
            "block",
            "--high-watermark",
            "64K",
            "--sndbuf",
            "16K",
        ],
    );
    let mut links = accept_links(&fake);
    let mut peek = [0; 16];
    let mut subscribe = wait_until("SUBSCRIBE", || {
        let said = |s: &TcpStream| {
            s.set_nonblocking(true).is_ok() && s.peek(&mut peek).is_ok_and(|n| n > 0)
        };
        links.iter().position(said).map(|i| links.swap_remove(i))
    });
    subscribe.set_nonblocking(false).unwrap();
    subscribe
        .write_all(b"*3\r\n$9\r\nsubscribe\r\n$4\r\nchat\r\n:1\r\n")
        .unwrap();
    hub.wait_linked();
    let slow = connect_tiny(hub.server.addr());
    hub.wait_clients(1);
    let line = |seq: u64| format!("{seq:099}\n");
    let pushing = thread::spawn(move || {
        for batch in 0..BATCHES {
            let first = batch * PER_BATCH;
            let lines: String = (first..first + PER_BATCH).map(line).collect();
            subscribe
                .write_all(&push("chat", first, lines.as_bytes(), PER_BATCH))
                .unwrap();
        }
        subscribe
    });
    let mut log = hub.log;
    log.wait_for("publishers wait until it catches up");
    // Time for the hub to go wrong: read on and queue it all for `slow`.
    thread::sleep(Duration::from_millis(500));
    let mut lines = BufReader::new(slow).lines();
    for seq in 0..BATCHES * PER_BATCH {
        let got = lines.next().expect("a line").expect("a line in time");
        assert_eq!(got, line(seq).trim_end(), "lost or out of order");
    }
    drop(pushing.join().expect("the pushes"));
    let peak = value(&scrape(&hub.metrics), "sockloop_peak_pending_output_bytes");
    assert!(
        peak < (1 << 20) as f64,
        "a backlog of {peak} bytes for the slow subscriber"
    );
}
