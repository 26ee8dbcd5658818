//! The built `sockloop` binary as an operator runs it: driven by an
//! independent client (Python), stopped by signals, squeezed for file
//! descriptors, and traced.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::common::{
    Exited, IO_TIMEOUT, LogFile, LogLines, Server, free_port, round_trip, sockloop,
    stream_through_sigterm, wait_until, waits_between_reports,
};

const PY_ECHO_CLIENT: &str = r#"
import hashlib, os, socket, sys, threading
port, size = int(sys.argv[1]), int(sys.argv[2])
data = os.urandom(size)
s = socket.create_connection(("127.0.0.1", port), timeout=30)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
got = bytearray()
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    got += chunk
t.join()
s.close()
if got != data:
    sys.exit(f"echo mismatch: sent {len(data)} bytes, got {len(got)}")
print("ok", len(got), hashlib.sha256(got).hexdigest())
"#;

#[test]
fn python_client_echoes_a_megabyte_through_the_binary() {
    let server = Server::start(&[], &["echo"], Stdio::null());
    let out = Command::new("python3")
        .args(["-c", PY_ECHO_CLIENT, &server.port.to_string(), "1000000"])
        .output()
        .expect("run python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client failed: {}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("ok 1000000 "), "{stdout}");
}

#[test]
fn sigterm_mid_transfer_returns_every_byte_sent_before_it_then_eof() {
    let mut server = Server::start(&[], &["echo", "--shutdown-timeout", "30s"], Stdio::null());
    let addr = server.addr();
    let status = stream_through_sigterm(&mut server, addr, 50);
    assert!(status.success(), "exit status {status}");
}

#[test]
fn out_of_file_descriptors_it_stays_responsive_and_recovers() {
    const ATTEMPTS: usize = 200;
    let mut server = Server::start(
        // Soft and hard limit 64, set by the shell that then becomes the server.
        &["sh", "-c", "ulimit -n 64 && exec \"$@\"", "sh"],
        &["echo", "--stats-interval", "1s"],
        Stdio::piped(),
    );
    let mut log = LogLines::new(server.take_stderr());
    let mut held: Vec<TcpStream> = Vec::new();
    for _ in 0..ATTEMPTS {
        if let Ok(s) = TcpStream::connect(("127.0.0.1", server.port)) {
            s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
            held.push(s);
        }
    }
    // Connections beyond the limit are closed at once; those within it echo.
    let mut served = 0;
    let mut shed = 0;
    for s in &mut held {
        let served_now = s.write_all(b"ping").is_ok() && {
            let mut buf = [0; 4];
            s.read_exact(&mut buf).is_ok() && &buf == b"ping"
        };
        if served_now {
            served += 1;
        } else {
            shed += 1;
        }
    }
    assert!(served > 0 && served < 64, "served {served}");
    assert!(shed > 0, "nothing was shed");

    // Saturated, with new attempts arriving every 10 ms: it must not spin
    // on the listener.
    let attempts = AtomicBool::new(true);
    let waits = thread::scope(|s| {
        s.spawn(|| {
            while attempts.load(Ordering::Relaxed) {
                let _ = TcpStream::connect(("127.0.0.1", server.port));
                thread::sleep(Duration::from_millis(10));
            }
        });
        let waits = waits_between_reports(&mut log);
        attempts.store(false, Ordering::Relaxed);
        waits
    });
    assert!(
        waits < 1_000,
        "{waits} waits between two reports a second apart, saturated: spinning"
    );

    drop(held);
    let back = wait_until("a new client to be served", || {
        let mut s = server.connect();
        s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = [0; 5];
        (s.write_all(b"again").is_ok() && s.read_exact(&mut buf).is_ok()).then_some(buf)
    });
    assert_eq!(&back, b"again");
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn trace_shows_one_connection_from_accept_to_close() {
    let path = std::env::temp_dir().join(format!("sockloop-trace-{}.log", std::process::id()));
    let log = File::create(&path).unwrap();
    let mut server = Server::start(&[], &["echo", "--trace"], Stdio::from(log));
    let mut client = server.connect();
    assert_eq!(round_trip(&mut client, b"hello"), b"hello");
    client.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty());
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success());
    let trace = std::fs::read_to_string(&path).unwrap();
    std::fs::remove_file(&path).unwrap();

    let lines: Vec<&str> = trace
        .lines()
        .filter_map(|l| l.strip_prefix("trace "))
        .collect();
    let id = lines
        .iter()
        .find_map(|l| l.split_once(" accept from "))
        .map(|(id, _)| id)
        .unwrap_or_else(|| panic!("no accept in trace:\n{trace}"));
    let mine: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix(id).map(str::trim))
        .collect();
    let expected = [
        "accept from",
        "read 5",
        "write 5 of 5",
        "read EOF",
        "close: peer closed",
    ];
    let mut at = 0;
    for step in expected {
        let found = mine[at..].iter().position(|l| l.starts_with(step));
        let Some(offset) = found else {
            panic!("no {step:?} after line {at} for {id}:\n{}", mine.join("\n"));
        };
        at += offset + 1;
    }
}

/// Linux grows a process's descriptor table by doubling as descriptors are
/// opened, and in a process of several threads each doubling waits for an
/// RCU grace period inside the `accept4` or `pipe2` that needed it (5–20 ms
/// here), while every connection waits too: the server grows the table to
/// its limit (up to 65,536) before it serves anyone.
#[test]
fn the_descriptor_table_is_grown_before_serving() {
    for args in [&["echo"][..], &["relay", "--upstream", "127.0.0.1:9"]] {
        let mut server = Server::start(&[], args, Stdio::null());
        let limits = std::fs::read_to_string(format!("/proc/{}/limits", server.pid())).unwrap();
        let soft: u64 = limits
            .lines()
            .find_map(|l| l.strip_prefix("Max open files"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .expect("Max open files in /proc/PID/limits");
        let slots: u64 = server.proc_status("FDSize").parse().unwrap();
        assert!(
            slots >= soft.min(1 << 16),
            "{args:?}: a table of {slots} descriptors, the limit is {soft}"
        );
        server.signal(Signal::SIGTERM);
        assert!(server.wait_exit().success());
    }
}

/// Sends `data` on `stream` and reads it back, waiting at most `limit` for
/// each; false if it was not echoed in time.
fn echoed_within(stream: &mut TcpStream, data: &[u8], limit: Duration) -> bool {
    stream.set_write_timeout(Some(limit)).unwrap();
    stream.set_read_timeout(Some(limit)).unwrap();
    let mut back = vec![0; data.len()];
    stream.write_all(data).is_ok() && stream.read_exact(&mut back).is_ok() && back == data
}

#[test]
fn unread_stderr_never_stalls_the_server() {
    const CONNS: usize = 3_000;
    // Each table is ~300 KB at 3,000 connections; the pipe holds 64 KiB.
    const TABLES: usize = 4;
    const PROMPT: Duration = Duration::from_secs(5);
    let mut server = Server::start(&[], &["echo"], Stdio::piped());
    let mut stderr = server.take_stderr();
    let mut held: Vec<TcpStream> = (0..CONNS).map(|_| server.connect()).collect();
    // Accepted in order: once the last is echoed, all of them are in the table.
    let last = held.last_mut().expect("connections");
    assert_eq!(round_trip(last, b"ready"), b"ready");

    for _ in 0..TABLES {
        server.signal(Signal::SIGUSR1);
        // Apart, so that the server takes each one rather than one for all.
        thread::sleep(Duration::from_millis(50));
    }
    // For a few seconds with stderr still unread, old and new clients alike
    // are echoed: nothing waits for the tables to be written.
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < Duration::from_secs(2) {
        let mut fresh = server.connect();
        assert!(
            echoed_within(&mut fresh, b"fresh", PROMPT),
            "a new client was not echoed within {PROMPT:?}: the server waits on stderr"
        );
        let old = &mut held[i % CONNS];
        assert!(
            echoed_within(old, b"old", PROMPT),
            "connection {i} was not echoed within {PROMPT:?}: the server waits on stderr"
        );
        i += 1;
        thread::sleep(Duration::from_millis(100));
    }
    drop(held);

    let reader = thread::spawn(move || {
        let mut out = Vec::new();
        stderr.read_to_end(&mut out).expect("read stderr");
        String::from_utf8_lossy(&out).into_owned()
    });
    server.signal(Signal::SIGTERM);
    let status = server.wait_exit();
    let out = reader.join().expect("stderr reader");
    assert!(status.success(), "exit status {status}");
    let table_header = |l: &str| l.starts_with("id ") && l.contains(" peer ");
    assert!(
        out.lines().any(table_header) || out.contains("diagnostic messages dropped"),
        "no connection table and no drop notice on stderr:\n{}",
        out.lines().take(20).collect::<Vec<_>>().join("\n")
    );
    // Written at exit, after everything else, and still not lost.
    assert!(out.contains("stopped: "), "no final stats line on stderr");
}

/// Runs the binary to its exit, stdout and stderr captured.
fn run_to_exit(args: &[&str]) -> Exited {
    let mut command = sockloop(&[], args);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    Server::spawn(&mut command).finish()
}

#[test]
fn a_relay_whose_upstream_is_its_own_listen_address_refuses_to_start() {
    let own = format!("127.0.0.1:{}", free_port());
    // Before the fix it served: one client then made it connect to itself
    // until it ran out of descriptors. It must stop before serving anyone.
    let exited = run_to_exit(&["relay", "--listen", &own, "--upstream", &own]);
    assert!(
        !exited.stdout.contains("listening on"),
        "it started serving: {}{}",
        exited.stdout,
        exited.stderr
    );
    assert_eq!(
        exited.status.code(),
        Some(2),
        "exit status {}",
        exited.status
    );
    assert!(
        exited.stderr.contains(&format!("--upstream {own}")),
        "the error does not name the upstream: {}",
        exited.stderr
    );
}

/// Whether `args` start a server, which is then given `--listen`.
fn serves(args: &[&str]) -> bool {
    ["echo", "relay", "hub"].contains(&args[0]) && !args.contains(&"--listen")
}

/// Arguments that cannot work, each with what its refusal must say.
const BAD_USAGE: &[(&[&str], &str)] = &[
    (&["echo", "--max-conns", "0"], "--max-conns"),
    (&["echo", "--high-watermark", "0"], "--high-watermark"),
    (&["echo", "--max-frame", "0"], "--max-frame"),
    (
        &["echo", "--framing", "lines", "--max-frame", "0"],
        "--max-frame",
    ),
    (
        &["hub", "--framing", "len:u16be", "--max-frame", "0"],
        "--max-frame",
    ),
    (
        &["echo", "--framing", "fixed:100", "--max-frame", "10"],
        "--max-frame",
    ),
    (
        &[
            "relay",
            "--upstream",
            "127.0.0.1:9",
            "--connect-timeout",
            "0",
        ],
        "--connect-timeout",
    ),
    // Every client's connect would fail.
    (
        &["relay", "--upstream", "127.0.0.1:0"],
        "--upstream 127.0.0.1:0",
    ),
    (&["echo", "--alpn", "h2"], "--alpn"),
    (&["echo", "--backlog", "0"], "--backlog"),
    (
        &["echo", "--listen", "unix:"],
        "the path after unix: is empty",
    ),
    (&["hub", "--framing", "raw"], "--framing"),
    // In a directory that does not exist: no socket file can be left behind.
    (
        &[
            "echo",
            "--threads",
            "2",
            "--listen",
            "unix:/nonexistent/sockloop.sock",
        ],
        "--threads 2",
    ),
    (
        &["echo", "--threads", "2", "--metrics", "127.0.0.1:0"],
        "--metrics",
    ),
    (&["bench", "--conns", "0"], "--conns"),
    (&["bench", "--duration", "0"], "--duration"),
    (&["bench", "--idle", "--interval", "0"], "--interval"),
    (&["bench", "--framing", "fixed:10"], "--framing fixed:10"),
    (
        &["bench", "--target", "127.0.0.1:0"],
        "--target 127.0.0.1:0",
    ),
];

#[test]
fn bad_usage_is_refused_at_start_with_exit_status_2_naming_the_flag() {
    // Every case is tried, and every one that fails is named.
    let mut accepted = Vec::new();
    for (args, named) in BAD_USAGE {
        let listen = ["--listen", "127.0.0.1:0"];
        let extra: &[&str] = if serves(args) { &listen } else { &[] };
        let mut command = sockloop(&[], &[args, extra].concat());
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let exited = Server::spawn(&mut command).finish_or_stop();
        let refused = exited.status.code() == Some(2)
            && !exited.stdout.contains("listening on")
            && exited.stderr.contains(named);
        if !refused {
            accepted.push(format!(
                "{args:?} ({}), not refused naming {named:?}: {}",
                exited.status,
                exited.stderr.lines().last().unwrap_or("")
            ));
        }
    }
    assert!(accepted.is_empty(), "{accepted:#?}");
}

#[test]
fn surprising_values_are_warned_about_at_start_naming_the_flag() {
    let cpus = thread::available_parallelism().map_or(1, |n| n.get());
    let threads = (cpus + 1).to_string();
    let cases: [(&[&str], String); 4] = [
        (
            &["echo", "--frame-timeout", "5s"],
            "--frame-timeout has no effect with --framing raw".to_owned(),
        ),
        (
            &["echo", "--busy-poll", "5ms"],
            "--busy-poll 5ms spins".to_owned(),
        ),
        (
            &["echo", "--threads", &threads],
            format!("--threads {threads} is more than the {cpus} CPUs"),
        ),
        (
            &[
                "echo",
                "--proxy-protocol",
                "--handshake-timeout",
                "20s",
                "--idle-timeout",
                "10s",
            ],
            "--handshake-timeout 20s is longer than --idle-timeout 10s".to_owned(),
        ),
    ];
    let mut unwarned = Vec::new();
    for (args, warning) in cases {
        let log = LogFile::new("surprise");
        let mut server = Server::start(&[], args, log.stdio());
        server.signal(Signal::SIGTERM);
        assert!(server.wait_exit().success(), "{args:?}: {}", log.read());
        let text = log.read();
        if !text
            .lines()
            .any(|l| l.contains(" WARN ") && l.contains(&warning))
        {
            unwarned.push(format!("{args:?}: no warning {warning:?}"));
        }
    }
    assert!(unwarned.is_empty(), "{unwarned:#?}");
}

#[test]
fn a_stalled_handshake_closes_as_a_handshake_timeout_even_past_the_idle_timeout() {
    let log = LogFile::new("stalled-handshake");
    let args = [
        "echo",
        "--proxy-protocol",
        "--handshake-timeout",
        "1500ms",
        "--idle-timeout",
        "500ms",
    ];
    let mut server = Server::start(&[], &args, log.stdio());
    // Sends nothing, not even the PROXY header: the server must close it.
    let mut silent = server.connect();
    // A signal to the test process may interrupt the read: that is no close.
    let end = loop {
        match silent.read(&mut [0; 1]) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            end => break end,
        }
    };
    let waited_out = |e: &std::io::Error| {
        matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        )
    };
    assert!(
        matches!(end, Ok(0)) || end.as_ref().is_err_and(|e| !waited_out(e)),
        "the stalled client was not closed: {end:?}"
    );
    server.signal(Signal::SIGTERM);
    assert!(server.wait_exit().success(), "{}", log.read());
    let text = log.read();
    // Before the fix the idle timer closed it at 500 ms, as `idle`.
    assert!(text.contains("no PROXY header within 1.5s"), "{text}");
    assert!(
        text.contains("closed 1 (handshake-timeout 1)"),
        "not closed as handshake-timeout:\n{text}"
    );
}

#[test]
fn a_listen_address_in_use_is_named_in_the_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let exited = run_to_exit(&["echo", "--listen", &addr]);
    assert!(!exited.status.success(), "exit status {}", exited.status);
    assert!(
        exited.stderr.contains(&format!("listen on {addr}: ")),
        "{}",
        exited.stderr
    );
}

#[test]
fn bench_exits_quietly_when_nobody_reads_its_output() {
    let bench = [
        "bench",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--conns",
        "2",
    ];
    // As `bench | head -1` once head has gone: the report meets a closed pipe.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = sockloop(&[], &bench);
    command.stdout(writer).stderr(Stdio::piped());
    let exited = Server::spawn(&mut command).finish();
    assert!(
        exited.status.success() && !exited.stderr.contains("panicked"),
        "stdout closed: exit status {}: {}",
        exited.status,
        exited.stderr
    );

    // As `bench 2>&1 | head -1`: every progress line meets it too.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut command = sockloop(&[], &bench);
    command.stdout(writer.try_clone().unwrap()).stderr(writer);
    let status = Server::spawn(&mut command).finish().status;
    assert!(
        status.success(),
        "stdout and stderr closed: exit status {status}"
    );
}

#[test]
fn every_flag_in_help_is_in_a_readme_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table_rows = readme.lines().filter(|line| line.starts_with("| `--"));
    for command in ["echo", "relay", "hub", "bench"] {
        let help = run_to_exit(&[command, "--help"]);
        assert!(help.status.success(), "{command} --help: {}", help.status);
        // Option lines start with the flag; descriptions may name others.
        let flags = help
            .stdout
            .lines()
            .filter_map(|line| line.split_whitespace().next())
            .filter(|word| word.starts_with("--") && *word != "--help");
        for flag in flags {
            // In an options table, as the whole flag, not the start of a longer one.
            let quoted = format!("`{flag}");
            let found = table_rows.clone().any(|row| {
                row.match_indices(&quoted).any(|(at, _)| {
                    let next = row[at + quoted.len()..].chars().next();
                    !next.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
                })
            });
            assert!(found, "`{command} {flag}` is in no table of README.md");
        }
    }
}

/// The flags of the first column of README's table under `heading`, in order.
fn readme_table_flags(readme: &str, heading: &str) -> Vec<String> {
    let start = readme
        .find(heading)
        .unwrap_or_else(|| panic!("no {heading:?}"));
    readme[start..]
        .lines()
        .skip_while(|line| !line.starts_with('|'))
        .take_while(|line| line.starts_with('|'))
        .filter_map(|row| row.split('|').nth(1))
        .flat_map(|cell| {
            cell.split('`')
                .filter_map(|code| code.split_whitespace().next())
                .filter(|word| word.starts_with("--"))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn echo_help_lists_its_options_in_the_order_of_the_readme_table() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md");
    let table = readme_table_flags(&readme, "### `sockloop echo` options");
    let help = run_to_exit(&["echo", "--help"]);
    assert!(help.status.success(), "echo --help: {}", help.status);
    let listed: Vec<&str> = help
        .stdout
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|word| word.starts_with("--"))
        .map(|word| word.trim_end_matches(','))
        .collect();
    let at = |flag: &str| listed.iter().position(|f| *f == flag);
    // Before the fix the TLS options came first, ahead of --listen.
    assert!(
        matches!((at("--listen"), at("--tls-cert")), (Some(l), Some(t)) if l < t),
        "{listed:?}"
    );
    let in_help: Vec<&str> = listed
        .iter()
        .copied()
        .filter(|f| table.iter().any(|t| t == f))
        .collect();
    let in_table: Vec<&str> = table
        .iter()
        .map(String::as_str)
        .filter(|t| listed.contains(t))
        .collect();
    assert_eq!(
        in_help, in_table,
        "echo --help and README's echo table differ in order"
    );
}
