//! Shared by the integration tests: a reactor on its own thread, seeded
//! random bytes, and bounded waits.

#![allow(dead_code)] // each test binary uses its own subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, connect, listen, setsockopt, socket,
    sockopt,
};
use nix::unistd::Pid;
use sockloop::reactor::{Addr, Config, Handle, Reactor, Service, Stats};
use sockloop::sys::{ListenOptions, raise_fd_limit};

pub mod haproxy;

/// Bound on any single blocking socket call in a test: a hang fails instead of stalling CI.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// A reactor running `service` on 127.0.0.1, port 0, stopped and joined on
/// drop. [`stop`](Self::stop) returns what `finish` took from the stopped
/// reactor (a service's own counters, say).
pub struct TestServer<T = ()> {
    pub addr: SocketAddr,
    pub handle: Handle,
    thread: Option<JoinHandle<T>>,
}

impl TestServer {
    pub fn start<S, F>(config: Config, make_service: F) -> TestServer
    where
        S: Service,
        F: FnOnce() -> S + Send + 'static,
    {
        Self::start_on("127.0.0.1:0".parse().unwrap(), config, make_service)
    }

    pub fn start_on<S, F>(addr: SocketAddr, config: Config, make_service: F) -> TestServer
    where
        S: Service,
        F: FnOnce() -> S + Send + 'static,
    {
        TestServer::start_on_then(addr, config, make_service, |_| ())
    }
}

impl<T: Send + 'static> TestServer<T> {
    pub fn start_then<S, F, G>(config: Config, make_service: F, finish: G) -> TestServer<T>
    where
        S: Service,
        F: FnOnce() -> S + Send + 'static,
        G: FnOnce(&Reactor<S>) -> T + Send + 'static,
    {
        let addr = "127.0.0.1:0".parse().unwrap();
        Self::start_on_then(addr, config, make_service, finish)
    }

    /// Runs the reactor on `addr`; `finish` takes what it wants from the
    /// stopped reactor (its service's counters, say) for [`TestServer::stop`].
    pub fn start_on_then<S, F, G>(
        addr: SocketAddr,
        config: Config,
        make_service: F,
        finish: G,
    ) -> TestServer<T>
    where
        S: Service,
        F: FnOnce() -> S + Send + 'static,
        G: FnOnce(&Reactor<S>) -> T + Send + 'static,
    {
        let listen =
            move |reactor: &mut Reactor<S>| reactor.listen(&addr.into(), &ListenOptions::default());
        TestServer::start_listening(config, make_service, listen, finish)
    }

    /// As [`start_on_then`](Self::start_on_then), with the listener opened
    /// by `listen` (a TLS one, say).
    pub fn start_listening<S, F, L, G>(
        config: Config,
        make_service: F,
        listen: L,
        finish: G,
    ) -> TestServer<T>
    where
        S: Service,
        F: FnOnce() -> S + Send + 'static,
        L: FnOnce(&mut Reactor<S>) -> std::io::Result<Addr> + Send + 'static,
        G: FnOnce(&Reactor<S>) -> T + Send + 'static,
    {
        enough_fds();
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = thread::spawn(move || {
            let mut reactor = Reactor::new(config, make_service()).expect("reactor");
            let addr = listen(&mut reactor)
                .expect("listen")
                .ip()
                .expect("an IP address");
            tx.send((addr, reactor.handle())).unwrap();
            reactor.run().expect("reactor run");
            finish(&reactor)
        });
        let (addr, handle) = rx.recv().expect("server started");
        TestServer {
            addr,
            handle,
            thread: Some(thread),
        }
    }

    /// Stops the reactor and returns what `finish` took from it.
    pub fn stop(mut self) -> T {
        let _ = self.handle.stop();
        let thread = self.thread.take().expect("running");
        thread.join().expect("reactor thread")
    }
}

impl<T> TestServer<T> {
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    pub fn stats(&self) -> Stats {
        self.handle.stats().expect("stats")
    }

    /// Polls the stats until `done` holds; panics after `IO_TIMEOUT`.
    pub fn wait_for(&self, what: &str, done: impl Fn(&Stats) -> bool) -> Stats {
        wait_until(what, || {
            let stats = self.stats();
            done(&stats).then_some(stats)
        })
    }
}

impl<T> Drop for TestServer<T> {
    fn drop(&mut self) {
        let _ = self.handle.stop();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Retries `probe` every few milliseconds until it yields; panics after `IO_TIMEOUT`.
pub fn wait_until<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

/// A port nothing listens on just now, on 127.0.0.1.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// splitmix64: fast, seeded, good enough to make every test's bytes distinct.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as usize
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            out.extend_from_slice(&self.next_u64().to_le_bytes());
        }
        out.truncate(len);
        out
    }
}

/// Reads until EOF; fails on a timeout or error.
pub fn read_to_eof(stream: &mut TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    stream.read_to_end(&mut out).expect("read to EOF");
    out
}

/// Sends `data`, half-closes, and returns everything read back until EOF.
pub fn echo_all(stream: TcpStream, data: &[u8]) -> Vec<u8> {
    thread::scope(|s| {
        let mut writer = stream.try_clone().unwrap();
        s.spawn(move || {
            writer.write_all(data).expect("write");
            writer.shutdown(Shutdown::Write).expect("shutdown");
        });
        let mut reader = stream;
        read_to_eof(&mut reader)
    })
}

/// One request and its full reply, for a connection that stays open.
pub fn round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    stream.write_all(data).expect("write");
    let mut back = vec![0; data.len()];
    stream.read_exact(&mut back).expect("read echo");
    back
}

/// As [`round_trip`], for a request too big to write before reading its
/// reply: it is written from a thread of its own while the reply is read.
pub fn bulk_round_trip(stream: &mut TcpStream, data: &[u8]) -> Vec<u8> {
    let mut writer = stream.try_clone().unwrap();
    thread::scope(|s| {
        s.spawn(move || writer.write_all(data).expect("write"));
        let mut back = vec![0; data.len()];
        stream.read_exact(&mut back).expect("read echo");
        back
    })
}

/// Fills `buf` with bytes `offset..offset + buf.len()` of an endless
/// pseudo-random stream named by `seed`: a writer and a reader that split the
/// stream differently still agree on every byte.
pub fn fill_pattern(seed: u64, offset: u64, buf: &mut [u8]) {
    for (i, b) in buf.iter_mut().enumerate() {
        let pos = offset + i as u64;
        let word = Rng::new(seed ^ (pos / 8).wrapping_mul(0x2545_f491_4f6c_dd1d)).next_u64();
        *b = word.to_le_bytes()[(pos % 8) as usize];
    }
}

/// `prefix... sockloop args...`: the built binary, behind a wrapper that
/// ends by running its arguments, if `prefix` names one.
pub fn sockloop(prefix: &[&str], args: &[&str]) -> Command {
    // SOCKLOOP_TEST_BIN runs the tests against another build (an older one,
    // to see a regression test fail).
    let bin = std::env::var_os("SOCKLOOP_TEST_BIN")
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sockloop").into());
    let mut command = match prefix.split_first() {
        Some((first, rest)) => {
            let mut c = Command::new(first);
            c.args(rest).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command.args(args);
    command
}

/// A running `sockloop`, killed and reaped however the test ends.
pub struct Server {
    child: Child,
    pub port: u16,
    listening: Option<Addr>,
}

/// How a process ended, and what it wrote to the pipes it was given.
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Server {
    /// Runs `prefix... sockloop args... --listen 127.0.0.1:0`, stderr to `stderr`.
    pub fn start(prefix: &[&str], args: &[&str], stderr: Stdio) -> Server {
        Server::start_on(prefix, args, "127.0.0.1:0", stderr)
    }

    /// Runs `prefix... sockloop args... --listen LISTEN`, stderr to `stderr`,
    /// and reads where it listens from its first line.
    pub fn start_on(prefix: &[&str], args: &[&str], listen: &str, stderr: Stdio) -> Server {
        enough_fds();
        let mut command = sockloop(prefix, args);
        command
            .args(["--listen", listen])
            .stdout(Stdio::piped())
            .stderr(stderr);
        let mut server = Server::spawn(&mut command);
        let stdout = server.child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let listening: Addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|addr| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        server.port = listening.ip().map_or(0, |ip| ip.port());
        server.listening = Some(listening);
        server
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Where it said it listens.
    pub fn listening(&self) -> &Addr {
        self.listening
            .as_ref()
            .expect("a server started with start_on")
    }

    /// Runs `command` as it is, port unknown (0).
    pub fn spawn(command: &mut Command) -> Server {
        let child = command.spawn().expect("spawn sockloop");
        Server {
            child,
            port: 0,
            listening: None,
        }
    }

    /// Waits for the process to exit by itself (panics after `IO_TIMEOUT`,
    /// killing it), with all it wrote to the stdout and stderr pipes it was
    /// given, if any.
    pub fn finish(mut self) -> Exited {
        let stdout = read_in_background(self.child.stdout.take());
        let stderr = read_in_background(self.child.stderr.take());
        let status = self.wait_exit();
        Exited {
            status,
            stdout: stdout.join().expect("stdout reader"),
            stderr: stderr.join().expect("stderr reader"),
        }
    }

    /// As [`finish`](Self::finish), for a process that ought to refuse
    /// to start: one that starts serving instead (its first line on the
    /// stdout pipe says `listening on`) is stopped with SIGTERM, so the test
    /// can say so rather than wait.
    pub fn finish_or_stop(mut self) -> Exited {
        let mut stdout = BufReader::new(self.child.stdout.take().expect("stdout was piped"));
        let mut first = String::new();
        let _ = stdout.read_line(&mut first);
        if first.starts_with("listening on") {
            self.signal(Signal::SIGTERM);
        }
        let rest = read_in_background(Some(stdout));
        let mut exited = self.finish();
        exited.stdout = first + &rest.join().expect("stdout reader");
        exited
    }

    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }

    /// The read end of a server started with `Stdio::piped()` stderr.
    pub fn take_stderr(&mut self) -> ChildStderr {
        self.child.stderr.take().expect("stderr was piped")
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(self.child.id() as i32)
    }

    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).expect("send signal");
    }

    pub fn wait_exit(&mut self) -> ExitStatus {
        wait_until("the server to exit", || self.child.try_wait().unwrap())
    }

    /// A line of the server's /proc/PID/status (so Linux only), after `field:`.
    pub fn proc_status(&self, field: &str) -> String {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .unwrap_or_else(|| panic!("{field} in /proc/PID/status"))
            .trim()
            .to_owned()
    }

    /// Resident memory of the server process (VmRSS).
    pub fn rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmRSS")
    }

    /// The most resident memory the server process has had (VmHWM).
    pub fn peak_rss_bytes(&self) -> u64 {
        self.proc_status_bytes("VmHWM")
    }

    /// A size in /proc/PID/status, given there in kB.
    fn proc_status_bytes(&self, field: &str) -> u64 {
        let value = self.proc_status(field);
        let kib = value.strip_suffix("kB").expect("a size in kB");
        kib.trim().parse::<u64>().unwrap() * 1024
    }
}

/// A child's stderr, read line by line on a thread of its own (so the child
/// never blocks on it), for tests that wait for a log line.
pub struct LogLines {
    /// Each line with when it came.
    lines: std::sync::mpsc::Receiver<(Instant, String)>,
    /// Every line received so far, for failure messages.
    pub seen: Vec<String>,
}

impl LogLines {
    pub fn new(pipe: impl Read + Send + 'static) -> LogLines {
        let (tx, lines) = std::sync::mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), line)).is_err() {
                    break;
                }
            }
        });
        LogLines {
            lines,
            seen: Vec::new(),
        }
    }

    /// The next line that holds `needle`; panics after `IO_TIMEOUT`.
    pub fn wait_for(&mut self, needle: &str) -> String {
        self.wait_for_at(needle).1
    }

    /// As [`wait_for`](Self::wait_for), with when the line came.
    pub fn wait_for_at(&mut self, needle: &str) -> (Instant, String) {
        let deadline = Instant::now() + IO_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok((at, line)) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return (at, line);
                    }
                }
                Err(_) => panic!("no line with {needle:?} in:\n{}", self.seen.join("\n")),
            }
        }
    }
}

/// How many times a server started with `--stats-interval 1s` waited for
/// events between its next two reports (`waits N` in each, a running
/// total). A loop that waits only when there is something to do waits a
/// handful of times a second (about once per event it is sent); one that
/// spins, thousands: a count, not a clock, tells them apart on a loaded
/// machine too.
pub fn waits_between_reports(log: &mut LogLines) -> u64 {
    let mut waits = || -> u64 {
        let line = log.wait_for("; waits ");
        let count = line
            .split("; waits ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next());
        count
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count of waits in {line:?}"))
    };
    let first = waits();
    waits() - first
}

/// Reads `pipe` to its end on a thread of its own, so that a child that
/// writes much is never blocked by a test waiting for it to exit.
fn read_in_background(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(not(target_vendor = "apple"))]
const CLOEXEC: SockFlag = SockFlag::SOCK_CLOEXEC;
#[cfg(target_vendor = "apple")]
const CLOEXEC: SockFlag = SockFlag::empty();

/// A client with a tiny receive buffer, set before the handshake so the
/// window it advertises is tiny too: if it never reads, a server's output
/// to it backs up after a few KiB instead of a few MiB.
pub fn connect_tiny(addr: SocketAddr) -> TcpStream {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 expected")
    };
    let fd = socket(AddressFamily::Inet, SockType::Stream, CLOEXEC, None).unwrap();
    // A no-op where the flag came at birth; Apple has no SOCK_CLOEXEC.
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
    setsockopt(&fd, sockopt::RcvBuf, &4096).unwrap();
    connect(fd.as_raw_fd(), &SockaddrIn::from(v4)).expect("connect");
    let stream = TcpStream::from(fd);
    stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    stream
}

/// An upstream slow to answer a SYN: a listener whose accept queue (backlog
/// 0 holds one connection) is kept full by a connection of our own, so the
/// kernel drops every other SYN until [`open`](Self::open) takes ours off
/// the queue; the dropped connect then completes on its retry, about a
/// second later.
pub struct SlowUpstream {
    listener: TcpListener,
    filler: Option<TcpStream>,
    pub addr: SocketAddr,
}

impl SlowUpstream {
    pub fn new() -> SlowUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listen(&listener, Backlog::new(0).unwrap()).unwrap();
        let addr = listener.local_addr().unwrap();
        let filler = TcpStream::connect(addr).unwrap();
        SlowUpstream {
            listener,
            filler: Some(filler),
            addr,
        }
    }

    /// Empties the accept queue: the next SYN gets through.
    pub fn open(&mut self) {
        let (queued, _) = self.listener.accept().unwrap();
        drop(queued);
        self.filler = None;
    }

    /// The next connection, waiting up to `IO_TIMEOUT` for it.
    pub fn accept(&self) -> TcpStream {
        self.listener.set_nonblocking(true).unwrap();
        let stream = wait_until("a connection to the slow upstream", || {
            self.listener.accept().ok().map(|(s, _)| s)
        });
        stream.set_nonblocking(false).unwrap();
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream
    }
}

/// One client of a graceful-shutdown test: streams a seeded pattern with at
/// most `STREAM_WINDOW` bytes unanswered, so everything it has written sits
/// in the server's receive queue, not in its own send queue, and checks
/// every byte that comes back until EOF.
#[derive(Default)]
pub struct Streamer {
    pub sent: AtomicU64,
    pub received: AtomicU64,
    pub got_eof: AtomicBool,
}

pub const STREAM_WINDOW: u64 = 32 << 10;

impl Streamer {
    pub fn run(&self, stream: TcpStream, seed: u64) {
        let mut writer = stream.try_clone().unwrap();
        thread::scope(|s| {
            s.spawn(|| {
                let mut rng = Rng::new(seed);
                let mut buf = vec![0; 16 << 10];
                while !self.got_eof.load(Ordering::Acquire) {
                    let sent = self.sent.load(Ordering::Relaxed);
                    let unanswered = sent - self.received.load(Ordering::Acquire);
                    if unanswered + buf.len() as u64 > STREAM_WINDOW {
                        thread::sleep(Duration::from_micros(200));
                        continue;
                    }
                    let n = rng.range(1, buf.len());
                    fill_pattern(seed, sent, &mut buf[..n]);
                    if writer.write_all(&buf[..n]).is_err() {
                        return;
                    }
                    self.sent.store(sent + n as u64, Ordering::Release);
                }
            });
            let mut reader = stream;
            let mut buf = vec![0; 64 << 10];
            let mut expect = vec![0; 64 << 10];
            loop {
                let n = reader
                    .read(&mut buf)
                    .expect("read echo (a reset loses bytes)");
                if n == 0 {
                    self.got_eof.store(true, Ordering::Release);
                    return;
                }
                let at = self.received.load(Ordering::Relaxed);
                fill_pattern(seed, at, &mut expect[..n]);
                assert!(
                    buf[..n] == expect[..n],
                    "client {seed}: wrong bytes at offset {at}"
                );
                self.received.store(at + n as u64, Ordering::Release);
            }
        });
    }
}

/// Streams `clients` seeded patterns to `addr` until every one is well under
/// way, then sends SIGTERM to `server` (while it is stopped, so that bytes
/// sent meanwhile lie unread in its sockets) and checks that each client got
/// back at least everything it had sent before the signal, then EOF.
/// Returns how `server` exited.
pub fn stream_through_sigterm(server: &mut Server, addr: SocketAddr, clients: usize) -> ExitStatus {
    let streamers: Vec<Streamer> = (0..clients).map(|_| Streamer::default()).collect();
    thread::scope(|s| {
        for (i, me) in streamers.iter().enumerate() {
            let stream = TcpStream::connect(addr).expect("connect");
            stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            // Else Nagle may hold a write in our own send queue until the
            // server's next reply brings an ACK: written, but not sent.
            stream.set_nodelay(true).unwrap();
            s.spawn(move || me.run(stream, i as u64));
        }
        wait_until("every client to be mid-transfer", || {
            streamers
                .iter()
                .all(|c| c.received.load(Ordering::Acquire) > 256 << 10)
                .then_some(())
        });
        server.signal(Signal::SIGSTOP);
        server.signal(Signal::SIGTERM);
        thread::sleep(Duration::from_millis(50));
        let before: Vec<u64> = streamers
            .iter()
            .map(|c| c.sent.load(Ordering::Acquire))
            .collect();
        server.signal(Signal::SIGCONT);
        let status = server.wait_exit();
        for (i, c) in streamers.iter().enumerate() {
            let received = c.received.load(Ordering::Acquire);
            assert!(c.got_eof.load(Ordering::Acquire), "client {i} got no EOF");
            assert!(
                received >= before[i],
                "client {i} sent {} before SIGTERM but got back only {received}",
                before[i]
            );
        }
        status
    })
}

/// Each reactor's accepted count, in order, from the one line a server
/// with `--threads` logs at exit (`2 reactors stopped; accepted per
/// reactor: 104/96`); empty if there is none.
pub fn accepted_per_reactor(log: &str) -> Vec<u64> {
    let Some(shares) = log
        .lines()
        .find_map(|l| l.split_once("accepted per reactor: ").map(|(_, r)| r))
    else {
        return Vec::new();
    };
    shares
        .trim()
        .split('/')
        .map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("not a count: {n:?} in {shares:?}"))
        })
        .collect()
}

/// Raises this process's descriptor limit once: tests hold thousands of
/// sockets, and some systems (macOS) start processes with a soft limit of 256.
fn enough_fds() {
    static RAISED: std::sync::Once = std::sync::Once::new();
    RAISED.call_once(|| {
        raise_fd_limit().expect("raising the file descriptor limit");
    });
}

/// A file in the temp directory for a child's stderr, or for a file it
/// reads, removed on drop.
pub struct LogFile {
    path: std::path::PathBuf,
}

impl LogFile {
    pub fn new(name: &str) -> LogFile {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let file = format!("sockloop-{name}-{}-{n}.log", std::process::id());
        LogFile {
            path: std::env::temp_dir().join(file),
        }
    }

    /// A fresh, empty file to hand to a child as its stderr.
    pub fn stdio(&self) -> Stdio {
        Stdio::from(std::fs::File::create(&self.path).expect("create log file"))
    }

    pub fn read(&self) -> String {
        std::fs::read_to_string(&self.path).unwrap_or_default()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Drop for LogFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}
