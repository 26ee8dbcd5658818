//! docs/tour.md cannot rot: every example it names exists and is built,
//! the commands it asks a reader to paste appear in it as they are run
//! here, and they do what the text says — run here with bounded waits, on
//! 127.0.0.1 with port 0.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound on anything a test waits for.
const TIMEOUT: Duration = Duration::from_secs(30);

fn tour() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/tour.md");
    std::fs::read_to_string(&path).expect("docs/tour.md")
}

/// Asserts the tour shows `command` as it is written here.
fn in_tour(command: &str) {
    assert!(
        tour().contains(command),
        "docs/tour.md no longer shows `{command}`: update the text and this test together"
    );
}

/// target/<profile>/examples/NAME, where `cargo test` builds every example.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    dir.join("examples").join(name)
}

/// Runs `program` with a bound on its time; kills it if it overstays.
fn run_bounded(program: &Path, args: &[&str]) -> Output {
    let child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
    let id = child.id();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(TIMEOUT) {
        Ok(out) => out.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!(
                "{} {args:?} did not finish within {TIMEOUT:?}",
                program.display()
            );
        }
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A server child that prints `listening on ADDR`; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn start(program: &Path, args: &[&str]) -> Server {
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()));
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|a| a.parse().ok());
        match addr {
            Some(addr) => Server { child, addr },
            None => {
                let _ = child.kill();
                panic!(
                    "{} did not say where it listens: {line:?}",
                    program.display()
                );
            }
        }
    }

    fn addr(&self) -> String {
        self.addr.to_string()
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(TIMEOUT)).unwrap();
        stream
    }

    /// Lines of stderr, read on a thread of their own.
    fn stderr_lines(&mut self) -> mpsc::Receiver<String> {
        let stderr: ChildStderr = self.child.stderr.take().expect("stderr");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Collects stderr lines until one contains `until` (or the time is up).
fn lines_until(rx: &mpsc::Receiver<String>, until: &str) -> Vec<String> {
    let deadline = Instant::now() + TIMEOUT;
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        let done = line.contains(until);
        lines.push(line);
        if done {
            return lines;
        }
    }
    panic!("no line with {until:?} in {lines:#?}");
}

fn sockloop() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_sockloop"))
}

#[test]
fn every_example_the_tour_names_exists_and_is_built() {
    let text = tour();
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices("--example ") {
        let rest = &text[i + "--example ".len()..];
        let end = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(rest.len());
        names.insert(rest[..end].to_owned());
    }
    for (i, _) in text.match_indices("examples/") {
        let rest = &text[i + "examples/".len()..];
        if let Some(end) = rest.find(".rs") {
            let name = &rest[..end];
            if name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(name.to_owned());
            }
        }
    }
    assert!(
        names.len() >= 8,
        "the tour names too few examples: {names:?}"
    );
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for name in &names {
        assert!(
            root.join("examples").join(format!("{name}.rs")).exists(),
            "docs/tour.md names examples/{name}.rs, which does not exist"
        );
        assert!(example(name).exists(), "example {name} is not built");
    }
}

#[test]
fn every_picture_the_docs_embed_is_committed() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for doc in ["docs/tour.md", "BENCHMARKS.md"] {
        let text = std::fs::read_to_string(root.join(doc)).expect(doc);
        for (i, _) in text.match_indices("](") {
            let rest = &text[i + 2..];
            let target = &rest[..rest.find(')').expect("closing )")];
            if target.ends_with(".svg") {
                let base = root.join(doc).parent().expect("dir").to_path_buf();
                let path = base.join(target);
                let svg = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{doc} embeds {target}: {e}"));
                assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
            }
        }
    }
}

#[test]
fn step_1_a_blocking_server_serves_one_client_at_a_time() {
    in_tour("cargo run --release --example echo_blocking -- 127.0.0.1:7000");
    in_tour("cargo run --release --example two_clients -- 127.0.0.1:7000");
    let server = Server::start(&example("echo_blocking"), &["127.0.0.1:0"]);
    let out = run_bounded(&example("two_clients"), &[&server.addr()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("B: no echo within 1.0 s while A is connected"),
        "{text}"
    );
    assert!(text.contains("after A closed"), "{text}");
}

#[test]
fn step_2_a_thread_per_connection_serves_both() {
    in_tour("cargo run --release --example echo_threads -- 127.0.0.1:7000");
    let server = Server::start(&example("echo_threads"), &["127.0.0.1:0"]);
    let out = run_bounded(&example("two_clients"), &[&server.addr()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("with A still connected"), "{text}");
}

#[test]
fn step_3_the_raw_epoll_loop_serves_both_on_one_thread() {
    in_tour("cargo run --release --example echo_epoll_floor -- 127.0.0.1:7000");
    let server = Server::start(&example("echo_epoll_floor"), &["127.0.0.1:0"]);
    let out = run_bounded(&example("two_clients"), &[&server.addr()]);
    assert!(stdout(&out).contains("with A still connected"));
}

#[cfg(target_os = "linux")]
#[test]
fn step_4_edge_triggered_without_a_drain_stalls_and_reading_to_eagain_fixes_it() {
    for args in ["level", "edge", "edge --drain"] {
        in_tour(&format!(
            "cargo run --release --example edge_vs_level -- {args}"
        ));
    }
    let level = run_bounded(&example("edge_vs_level"), &["level"]);
    assert!(level.status.success());
    assert!(stdout(&level).contains("all 512 bytes echoed (waits: 8, reads: 8)"));

    let edge = run_bounded(&example("edge_vs_level"), &["edge"]);
    let text = stdout(&edge);
    assert_eq!(edge.status.code(), Some(1), "{text}");
    assert!(
        text.contains("448 bytes still unread in the kernel"),
        "{text}"
    );
    assert!(
        text.contains("stalled after echoing 64 of 512 bytes"),
        "{text}"
    );

    let drain = run_bounded(&example("edge_vs_level"), &["edge", "--drain"]);
    let text = stdout(&drain);
    assert!(drain.status.success(), "{text}");
    assert!(text.contains("read EAGAIN: drained"), "{text}");
    assert!(
        text.contains("all 512 bytes echoed (waits: 1, reads: 9)"),
        "{text}"
    );
}

#[test]
fn step_5_a_service_on_the_reactor_shouts_back_and_stops_on_sigterm() {
    in_tour("cargo run --release --example shout -- 127.0.0.1:7000");
    let mut server = Server::start(&example("shout"), &["127.0.0.1:0"]);
    let mut client = server.connect();
    client.write_all(b"hello, reactor").unwrap();
    let mut reply = [0; 14];
    client.read_exact(&mut reply).unwrap();
    assert_eq!(&reply, b"HELLO, REACTOR");
    let out = run_bounded(&example("two_clients"), &[&server.addr()]);
    assert!(stdout(&out).contains("with A still connected"));
    drop(client);
    server.signal("-TERM");
    let status = server.child.wait().expect("wait");
    assert!(status.success(), "{status}");
}

#[test]
fn framing_reads_do_not_keep_write_boundaries() {
    in_tour("cargo run --release --example recv_boundaries");
    let out = run_bounded(&example("recv_boundaries"), &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains(
            "3 writes (\"one\", \"two\", \"three\") -> 1 read of 11 bytes: \"onetwothree\""
        ),
        "{text}"
    );
    assert!(text.contains("1 write of 1048576 bytes ->"), "{text}");
    assert!(
        text.contains("decoded [\"hello\", \"a longer message\", \"bye\"]"),
        "{text}"
    );
}

#[test]
fn half_close_answers_after_fin_and_unread_input_means_reset() {
    in_tour("cargo run --release --example half_close");
    let out = run_bounded(&example("half_close"), &[]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("read \"got 7 bytes\" and the server's FIN"),
        "{text}"
    );
    assert!(text.contains("0 bytes: end of stream (FIN)"), "{text}");
    assert!(
        text.contains("6 bytes unread; client's next read: error:") && text.contains("reset"),
        "{text}"
    );
}

#[test]
fn backpressure_a_client_that_does_not_read_is_stopped_and_gets_every_byte_back() {
    in_tour("sockloop echo --listen 127.0.0.1:7000 --high-watermark 64KiB");
    in_tour("cargo run --release --example slow_reader -- 127.0.0.1:7000");
    let server = Server::start(
        sockloop(),
        &[
            "echo",
            "--listen",
            "127.0.0.1:0",
            "--high-watermark",
            "64KiB",
        ],
    );
    let out = run_bounded(&example("slow_reader"), &[&server.addr()]);
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("before the server stopped taking more"),
        "{text}"
    );
    assert!(
        text.contains("every byte, in order, then the server's FIN"),
        "{text}"
    );
}

#[test]
fn nagle_and_socket_buffer_flags_still_echo() {
    for flags in [
        &["--no-nodelay"][..],
        &["--rcvbuf", "16KiB", "--sndbuf", "16KiB"],
    ] {
        let mut args = vec!["echo", "--listen", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        in_tour(&format!(
            "sockloop echo --listen 127.0.0.1:7000 {}",
            flags.join(" ")
        ));
        let server = Server::start(sockloop(), &args);
        let out = run_bounded(
            sockloop(),
            &[
                "bench",
                "--target",
                &server.addr(),
                "--conns",
                "2",
                "--mode",
                "stream",
                "--duration",
                "300ms",
                "--warmup",
                "100ms",
                "--json",
            ],
        );
        let text = stdout(&out);
        assert!(out.status.success(), "{flags:?}: {text}");
        assert!(text.contains("\"errors\":0"), "{text}");
    }
}

#[test]
fn nagle_write_write_read_runs_both_ways() {
    in_tour("sockloop echo --listen 127.0.0.1:7000 --framing len:u16be");
    in_tour("cargo run --release --example nagle -- 127.0.0.1:7000 --nodelay");
    let server = Server::start(
        sockloop(),
        &["echo", "--listen", "127.0.0.1:0", "--framing", "len:u16be"],
    );
    // Only that every request is answered either way: the times are for
    // people to read (BENCHMARKS.md), never for a test to assert.
    for (args, says) in [
        (vec![], "TCP_NODELAY off (Nagle on): 20 requests"),
        (vec!["--nodelay"], "TCP_NODELAY on: 20 requests"),
    ] {
        let mut all = vec![server.addr()];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let out = run_bounded(&example("nagle"), &all);
        let text = stdout(&out);
        assert!(out.status.success() && text.contains(says), "{text}");
    }
}

#[test]
fn trace_shows_each_event_and_io_call_of_a_connection() {
    in_tour("sockloop echo --listen 127.0.0.1:7000 --trace");
    let mut server = Server::start(sockloop(), &["echo", "--listen", "127.0.0.1:0", "--trace"]);
    let lines = server.stderr_lines();
    let mut client = server.connect();
    client.write_all(b"hello\n").unwrap();
    client.read_exact(&mut [0; 6]).unwrap();
    drop(client);
    let trace: Vec<String> = lines_until(&lines, "close: peer closed")
        .into_iter()
        .filter_map(|l| l.strip_prefix("trace ").map(str::to_owned))
        .collect();
    // Each step the tour walks through, in this order.
    let steps = [
        "accept from 127.0.0.1:",
        "event readable",
        "read 6",
        "write 6 of 6",
        "event readable writable hup",
        "read EOF",
        "close: peer closed",
    ];
    let mut at = 0;
    for step in steps {
        let found = trace[at..].iter().position(|l| l.contains(step));
        at += found.unwrap_or_else(|| panic!("no {step:?} after line {at} of {trace:#?}")) + 1;
        in_tour(step);
    }
}

#[test]
fn sigusr1_prints_the_connection_table() {
    in_tour("kill -USR1");
    let mut server = Server::start(sockloop(), &["echo", "--listen", "127.0.0.1:0"]);
    let lines = server.stderr_lines();
    let mut client = server.connect();
    client.write_all(b"hi").unwrap();
    client.read_exact(&mut [0; 2]).unwrap();
    server.signal("-USR1");
    let table = lines_until(&lines, "1 connections");
    let header = table
        .iter()
        .find(|l| l.contains("peer"))
        .unwrap_or_else(|| panic!("no table header in {table:#?}"));
    for column in ["id", "peer", "age", "in", "out", "pending", "state"] {
        assert!(header.contains(column), "{header}");
    }
}
