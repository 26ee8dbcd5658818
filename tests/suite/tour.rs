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

/// The text of every `code span` of the tour outside its code blocks.
fn inline_code(text: &str) -> Vec<String> {
    let mut in_block = false;
    let mut spans = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            in_block = !in_block;
        } else if !in_block {
            spans.extend(line.split('`').skip(1).step_by(2).map(str::to_owned));
        }
    }
    spans
}

/// Every `.rs` file under `dir`, with its text.
fn rust_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            let text = std::fs::read_to_string(&path).expect("a source file");
            files.push((path, text));
        }
    }
    files
}

#[test]
fn every_source_file_and_item_the_tour_names_exists() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let sources = rust_files(&root.join("src"));
    let defines = |item: &str| {
        let lower = item.starts_with(|c: char| c.is_ascii_lowercase());
        let kinds: &[&str] = if lower {
            &["fn", "mod"]
        } else {
            &["struct", "enum", "trait", "type"]
        };
        let mut wanted = kinds.iter().map(|kind| format!("{kind} {item}"));
        wanted.any(|w| {
            sources.iter().any(|(_, text)| {
                text.match_indices(&w).any(|(i, _)| {
                    let next = text[i + w.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                })
            })
        })
    };
    let mut checked = 0;
    for span in inline_code(&tour()) {
        let is_path = |s: &str| {
            s.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_/.".contains(c))
        };
        let in_repo = ["src/", "examples/", "tests/", "benches/"];
        if in_repo.iter().any(|dir| span.starts_with(dir)) && is_path(&span) {
            assert!(
                root.join(&span).exists(),
                "docs/tour.md names {span}, which does not exist"
            );
        } else if span.ends_with(".rs") && is_path(&span) {
            let name = std::ffi::OsStr::new(&span);
            let found = sources
                .iter()
                .any(|(path, _)| path.file_name() == Some(name));
            assert!(found, "docs/tour.md names {span}: no such file under src/");
        } else if span.contains("::") && span.split("::").all(|s| is_path(s) && !s.is_empty()) {
            for item in span.split("::").filter(|s| *s != "sockloop") {
                assert!(
                    defines(item),
                    "docs/tour.md names `{span}`: nothing in src/ defines {item}"
                );
            }
        } else {
            continue;
        }
        checked += 1;
    }
    assert!(
        checked >= 10,
        "the tour names only {checked} source files and items"
    );
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

/// The tour's strace excerpts checked against sockloop run under strace, so
/// that the descriptors, tokens and calls they show cannot drift from the
/// code.
#[cfg(target_os = "linux")]
mod strace {
    use std::cmp::Reverse;

    use super::*;

    /// The system calls of the tour's strace command.
    const CALLS: &str = "epoll_create1,eventfd2,signalfd4,openat,fcntl,socket,setsockopt,bind,listen,\
        accept4,epoll_ctl,epoll_wait,read,sendto,write,close";

    /// Runs its arguments with no descriptor open but 0, 1 and 2, as from a
    /// fresh terminal. A new descriptor takes the lowest free number, so one
    /// passed down by whatever started the tests (a CI runner, an IDE, an
    /// agent's shell) would shift every number after it.
    const ONLY_STDIO: &str = r#"for fd in /proc/$$/fd/*; do n=${fd##*/}; [ "$n" -gt 2 ] && eval "exec $n>&-"; done; exec "$@""#;

    /// sockloop under `strace -ff`: one file of system calls per thread, in a
    /// directory of its own. Dropped, it kills sockloop (killing strace
    /// alone would leave it running untraced) and removes the files.
    struct Traced {
        server: Server,
        dir: PathBuf,
    }

    impl Traced {
        fn start(args: &[&str]) -> Traced {
            match Command::new("strace").arg("-V").output() {
                Ok(out) if out.status.success() => {}
                _ => panic!(
                    "this test runs strace, which is not installed (Debian: apt-get install strace)"
                ),
            }
            let dir = std::env::temp_dir().join(format!("sockloop-tour-{}", std::process::id()));
            std::fs::create_dir_all(&dir).expect("a directory for the traces");
            let prefix = dir.join("strace");
            let calls = format!("trace={CALLS}");
            let mut all = vec!["-c", ONLY_STDIO, "bash", "strace", "-ff", "-o"];
            all.extend([prefix.to_str().expect("path"), "-e", &calls]);
            all.push(sockloop().to_str().expect("path"));
            all.extend_from_slice(args);
            let server = Server::start(Path::new("bash"), &all);
            Traced { server, dir }
        }

        /// sockloop's process id: strace's child.
        fn traced_pid(&self) -> Option<String> {
            let strace = self.server.child.id();
            let path = format!("/proc/{strace}/task/{strace}/children");
            let children = std::fs::read_to_string(path).ok()?;
            children.split_whitespace().next().map(str::to_owned)
        }

        /// Stops sockloop with SIGINT (the tour's Ctrl-C) and returns each
        /// thread's system calls, by file name.
        fn stop(&mut self) -> Vec<(String, Vec<String>)> {
            let pid = self.traced_pid().expect("sockloop running under strace");
            let status = Command::new("kill").args(["-INT", &pid]).status();
            assert!(status.expect("kill").success());
            let deadline = Instant::now() + TIMEOUT;
            let status = loop {
                if let Some(status) = self.server.child.try_wait().expect("wait") {
                    break status;
                }
                assert!(
                    Instant::now() < deadline,
                    "no exit within {TIMEOUT:?} of SIGINT"
                );
                thread::sleep(Duration::from_millis(10));
            };
            assert!(status.success(), "sockloop under strace: {status}");
            let files = std::fs::read_dir(&self.dir).expect("the traces");
            let mut traces = Vec::new();
            for path in files.map(|entry| entry.expect("a trace").path()) {
                let text = std::fs::read_to_string(&path).expect("a trace");
                // A debug build's standard library checks that a descriptor
                // is open before it closes it; the tour's release build does
                // not.
                let calls = text.lines().filter(|l| !l.contains(", F_GETFD)"));
                let name = path.file_name().expect("name").to_string_lossy();
                traces.push((name.into_owned(), calls.map(str::to_owned).collect()));
            }
            traces
        }
    }

    impl Drop for Traced {
        fn drop(&mut self) {
            if let Some(pid) = self.traced_pid() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// What the tour shows of a run: each ```strace block, and the two
    /// columns of the table of `--trace` beside strace (trace lines first).
    /// A line `...` stands for lines left out.
    fn excerpts(tour: &str) -> Vec<Vec<String>> {
        let mut excerpts = Vec::new();
        let mut lines = tour.lines();
        while let Some(line) = lines.next() {
            if line == "```strace" {
                let block = lines.by_ref().take_while(|l| *l != "```");
                excerpts.push(block.map(str::to_owned).collect());
            }
        }
        let table = tour
            .lines()
            .skip_while(|l| !l.starts_with("| `--trace` |"))
            .skip(2)
            .take_while(|l| l.starts_with('|'));
        let (mut traced, mut calls) = (Vec::new(), Vec::new());
        for row in table {
            let row = row.replace("\\|", "\u{0}");
            let cells: Vec<&str> = row.split('|').collect();
            assert_eq!(cells.len(), 4, "a row of two cells: {row}");
            traced.extend(code_spans(cells[1]));
            calls.extend(code_spans(cells[2]));
        }
        excerpts.extend([traced, calls]);
        excerpts
    }

    /// The text of each `code span` in a table cell, `\|` unescaped.
    fn code_spans(cell: &str) -> Vec<String> {
        let spans = cell.split('`').skip(1).step_by(2);
        spans.map(|span| span.replace('\u{0}', "|")).collect()
    }

    /// `line` with runs of spaces as one (strace aligns its `=`), and the
    /// numbers that differ from run to run as `_`: ports, the time left
    /// before a timer (a wait's timeout), and the top of the descriptor
    /// table (the fd limit less one).
    fn blank(line: &str) -> String {
        let line = line.split_whitespace().collect::<Vec<_>>().join(" ");
        let mut out = String::new();
        let mut rest = line.as_str();
        while let Some(start) = rest.find(|c: char| c.is_ascii_digit()) {
            let end = rest[start..]
                .find(|c: char| !c.is_ascii_digit())
                .map_or(rest.len(), |n| start + n);
            out.push_str(&rest[..start]);
            let (number, after) = (&rest[start..end], &rest[end..]);
            let port = out.ends_with("htons(") || out.ends_with("127.0.0.1:");
            let timeout =
                line.starts_with("epoll_wait(") && after.starts_with(") = ") && !out.ends_with('-');
            let table_top =
                (line.starts_with("fcntl(") || line.starts_with("close(")) && number.len() >= 4;
            out.push_str(if port || timeout || table_top {
                "_"
            } else {
                number
            });
            rest = after;
        }
        out + rest
    }

    /// Whether `text` is `pattern`, each `...` in it standing for any text.
    fn glob(pattern: &str, text: &str) -> bool {
        let parts: Vec<&str> = pattern.split("...").collect();
        let [first, middle @ .., last] = parts.as_slice() else {
            return pattern == text;
        };
        let Some(mut rest) = text.strip_prefix(first) else {
            return false;
        };
        for part in middle {
            match rest.find(part) {
                Some(i) => rest = &rest[i + part.len()..],
                None => return false,
            }
        }
        rest.len() >= last.len() && rest.ends_with(last)
    }

    fn same(shown: &str, traced: &str) -> bool {
        glob(&blank(shown), &blank(traced))
    }

    /// Finds `excerpt` in `trace`: its lines one right after another, but
    /// for a `...` line, which stands for any number of lines. Otherwise
    /// says where the two part.
    fn find(excerpt: &[String], trace: &[String]) -> Result<(), String> {
        let mut at = 0;
        for run in excerpt
            .split(|line| line == "...")
            .filter(|run| !run.is_empty())
        {
            let matching = |i: usize| {
                let pairs = run.iter().zip(&trace[i..]);
                pairs
                    .take_while(|(shown, traced)| same(shown, traced))
                    .count()
            };
            // The earliest of the longest: what comes after is looked for after it.
            let best = (at..trace.len())
                .map(|i| (matching(i), i))
                .max_by_key(|&(n, i)| (n, Reverse(i)));
            match best {
                Some((n, i)) if n == run.len() => at = i + n,
                Some((n, i)) if n > 0 => {
                    let traced = trace
                        .get(i + n)
                        .map_or("the end of the trace", String::as_str);
                    return Err(format!(
                        "after `{}` the tour shows\n  `{}`\nbut the run has\n  `{traced}`",
                        run[n - 1],
                        run[n]
                    ));
                }
                _ => return Err(format!("no line like `{}`", run[0])),
            }
        }
        Ok(())
    }

    #[test]
    #[ignore = "needs strace (Debian: apt-get install strace): run with --include-ignored"]
    fn every_strace_line_the_tour_shows_is_one_of_a_real_run() {
        in_tour(&format!("calls={CALLS}"));
        in_tour(
            "strace -ff -o strace -e trace=$calls sockloop echo --listen 127.0.0.1:7000 --trace",
        );
        let mut traced = Traced::start(&["echo", "--listen", "127.0.0.1:0", "--trace"]);
        let stderr = traced.server.stderr_lines();
        let mut client = traced.server.connect();
        client.write_all(b"hello\n").unwrap();
        client.read_exact(&mut [0; 6]).unwrap();
        drop(client);
        // Stopped only once the connection is closed, as in the tour: the
        // run is then the same every time.
        let stderr = lines_until(&stderr, "close: peer closed");
        let mut runs = traced.stop();
        let trace_lines = stderr.into_iter().filter(|l| l.starts_with("trace "));
        runs.push(("stderr".to_owned(), trace_lines.collect()));
        let excerpts = excerpts(&tour());
        assert!(
            excerpts.len() >= 5,
            "the tour shows too few excerpts: {excerpts:#?}"
        );
        for excerpt in &excerpts {
            assert!(!excerpt.is_empty(), "an empty excerpt in {excerpts:#?}");
            let mut why = Vec::new();
            let found = runs.iter().any(|(name, run)| match find(excerpt, run) {
                Ok(()) => true,
                Err(e) => {
                    why.push(format!("{name}: {e}"));
                    false
                }
            });
            assert!(
                found,
                "docs/tour.md shows what this run did not do:\n{}\n\nthe run: {runs:#?}",
                why.join("\n")
            );
        }
    }
}
