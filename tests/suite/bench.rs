//! `sockloop bench` as a user runs it: against its in-process echo it
//! succeeds and says so in JSON; against a server that corrupts or cuts
//! short the echo it fails and names the problem. Connects are paced,
//! timed, spread over source addresses and counted when they fail; idle
//! mode holds every connection and sends one message per interval.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::common::{Server, sockloop};

/// Runs `sockloop bench` with a short window, `--json` and `args`.
fn bench(args: &[&str]) -> Output {
    sockloop(&[], &["bench"])
        .args([
            "--size",
            "64",
            "--duration",
            "1s",
            "--warmup",
            "200ms",
            "--json",
        ])
        .args(args)
        .output()
        .expect("run sockloop bench")
}

/// The number after `"key":` in the one-line JSON summary.
fn json_number(json: &str, key: &str) -> f64 {
    let tag = format!("\"{key}\":");
    let rest = &json[json
        .find(&tag)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
        + tag.len()..];
    let end = rest.find([',', '}']).expect("end of value");
    rest[..end].parse().expect("a number")
}

fn assert_clean_run(args: &[&str]) {
    let mut all = vec!["--conns", "20"];
    all.extend_from_slice(args);
    let out = bench(&all);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    let json = stdout.trim();
    assert!(
        json.starts_with('{') && json.ends_with('}') && json.lines().count() == 1,
        "{json}"
    );
    assert!(json_number(json, "msgs") > 0.0, "{json}");
    assert_eq!(json_number(json, "errors"), 0.0, "{json}");
    assert!(
        stderr.contains("measuring"),
        "no progress on stderr: {stderr}"
    );
}

#[test]
fn pingpong_against_the_in_process_echo_succeeds() {
    assert_clean_run(&[]);
}

#[test]
fn stream_against_the_in_process_echo_succeeds() {
    assert_clean_run(&["--mode", "stream"]);
}

#[test]
fn framed_requests_against_the_in_process_framed_echo_succeed() {
    assert_clean_run(&["--framing", "lines"]);
}

/// A thread-per-connection server that runs `serve` on each of `conns` connections.
fn bad_server(conns: usize, serve: fn(TcpStream)) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    thread::spawn(move || {
        for stream in listener.incoming().take(conns).flatten() {
            thread::spawn(move || serve(stream));
        }
    });
    addr
}

fn failed_run(target: SocketAddr) -> String {
    let target = target.to_string();
    let out = bench(&["--conns", "2", "--target", &target]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "bench passed a bad server: {stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(json_number(stdout.trim(), "errors") >= 1.0, "{stdout}");
    stderr
}

#[test]
fn a_flipped_byte_in_the_echo_fails_the_run_and_is_named() {
    let addr = bad_server(2, |mut stream| {
        let mut buf = [0; 4096];
        let mut total = 0;
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            for (i, b) in buf[..n].iter_mut().enumerate() {
                if total + i == 100 {
                    *b ^= 0x20;
                }
            }
            total += n;
            if stream.write_all(&buf[..n]).is_err() {
                break;
            }
        }
    });
    let stderr = failed_run(addr);
    assert!(
        stderr.contains("echoed byte 100 (message 1, offset 36)"),
        "{stderr}"
    );
}

#[test]
fn a_server_that_closes_early_fails_the_run_and_is_named() {
    // Echoes the first request, then sends FIN and reads the rest unanswered
    // (closing with unread input would send a reset instead).
    let addr = bad_server(2, |mut stream| {
        let mut buf = [0; 64];
        if stream.read_exact(&mut buf).is_ok() && stream.write_all(&buf).is_ok() {
            let _ = stream.shutdown(Shutdown::Write);
            let _ = std::io::copy(&mut stream, &mut std::io::sink());
        }
    });
    let stderr = failed_run(addr);
    assert!(stderr.contains("closed the connection early"), "{stderr}");
}

#[test]
fn a_refused_connection_fails_the_run() {
    // Bound and dropped: nothing listens there now.
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port");
    let stderr = failed_run(addr);
    assert!(stderr.contains("refused"), "{stderr}");
}

/// The run's one-line JSON, checked for success.
fn clean_json(args: &[&str]) -> String {
    let out = bench(args);
    let stdout = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {stderr}");
    assert_eq!(json_number(&stdout, "errors"), 0.0, "{stdout}");
    stdout
}

#[test]
fn connects_at_a_bounded_rate_are_paced_and_timed() {
    // 40 connects at 200 per second: the last is due 195 ms after the first.
    let json = clean_json(&["--conns", "40", "--connect-rate", "200"]);
    assert_eq!(json_number(&json, "connects"), 40.0, "{json}");
    assert_eq!(json_number(&json, "connect_failures"), 0.0, "{json}");
    assert!(json_number(&json, "connect_s") >= 0.19, "not paced: {json}");
    let (p50, p99, max) = (
        json_number(&json, "connect_p50_us"),
        json_number(&json, "connect_p99_us"),
        json_number(&json, "connect_max_us"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{json}");
    assert!(json.contains("\"connect_rate\":200,"), "{json}");
}

#[test]
fn failed_connects_are_counted_with_the_first_errors_and_fail_the_run() {
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .to_string();
    let out = bench(&["--conns", "10", "--connect-rate", "1000", "--target", &addr]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(json_number(&stdout, "connect_failures"), 10.0, "{stdout}");
    assert_eq!(json_number(&stdout, "connects"), 0.0, "{stdout}");
    // The first few errors, each naming its connection, in the JSON too.
    assert!(
        stdout.contains("\"connect_errors\":[\"connection 0 to 127.0.0.1:"),
        "{stdout}"
    );
    assert!(stdout.contains("refused"), "{stdout}");
    assert!(stderr.contains("all 10 connects failed"), "{stderr}");
}

#[test]
fn idle_mode_sends_one_message_per_interval_on_every_connection_and_checks_it() {
    let mut server = Server::start(&[], &["echo"], Stdio::null());
    let (target, pid) = (server.addr().to_string(), server.pid().to_string());
    let json = clean_json(&[
        "--target",
        &target,
        "--server-pid",
        &pid,
        "--idle",
        "--conns",
        "30",
        "--interval",
        "200ms",
        "--connect-rate",
        "500",
    ]);
    assert!(json.contains("\"mode\":\"idle\""), "{json}");
    assert_eq!(json_number(&json, "interval_s"), 0.2, "{json}");
    // 30 connections, one message each per 200 ms, over a 1 s window: 150,
    // give or take the messages at the window's edges, and fewer if this
    // machine is slow to fire timers; never more than one per connection
    // per interval (6 each, counting both edges).
    let msgs = json_number(&json, "msgs");
    assert!((30.0..=180.0).contains(&msgs), "{json}");
    // Every connection was accepted and echoed once before the warmup.
    assert!(json_number(&json, "served_s") > 0.0, "{json}");
    assert!(json_number(&json, "served_max_us") > 0.0, "{json}");
    assert!(json_number(&json, "p99_us") > 0.0, "{json}");
    assert!(json_number(&json, "server_cpu_s") >= 0.0, "{json}");
    server.signal(nix::sys::signal::Signal::SIGTERM);
    assert!(server.wait_exit().success());
}

#[test]
fn idle_mode_refuses_the_flags_of_the_other_modes() {
    for args in [
        &["--idle", "--mode", "stream"][..],
        &["--idle", "--rate", "100"],
        &["--interval", "1s"],
    ] {
        let out = bench(args);
        assert_eq!(out.status.code(), Some(2), "{args:?} was accepted");
    }
}

#[test]
fn clients_spread_over_source_addresses_past_per_source() {
    // A server that echoes and notes each client's address.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let target = listener.local_addr().expect("address").to_string();
    let peers = Arc::new(Mutex::new(BTreeMap::<IpAddr, usize>::new()));
    let seen = Arc::clone(&peers);
    thread::spawn(move || {
        for mut stream in listener.incoming().take(25).flatten() {
            let peer = stream.peer_addr().expect("peer").ip();
            *seen.lock().unwrap().entry(peer).or_default() += 1;
            thread::spawn(move || {
                let mut copy = stream.try_clone().expect("clone");
                let _ = std::io::copy(&mut stream, &mut copy);
            });
        }
    });
    let json = clean_json(&["--target", &target, "--conns", "25", "--per-source", "10"]);
    assert_eq!(json_number(&json, "sources"), 3.0, "{json}");
    let by_address: Vec<(String, usize)> = peers
        .lock()
        .unwrap()
        .iter()
        .map(|(ip, n)| (ip.to_string(), *n))
        .collect();
    let expected = [("127.0.0.1", 10), ("127.0.0.2", 10), ("127.0.0.3", 5)];
    let expected: Vec<(String, usize)> = expected
        .iter()
        .map(|(ip, n)| (ip.to_string(), *n))
        .collect();
    assert_eq!(by_address, expected);
}

/// The seconds at the start of each `bench: 1.0s measuring …` progress line.
fn measuring_seconds(stderr: &str) -> Vec<f64> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("bench:"))
        .filter_map(|l| l.trim().split_once("s measuring "))
        .filter_map(|(seconds, _)| seconds.parse().ok())
        .collect()
}

#[test]
fn progress_lines_count_the_measured_window_from_its_start() {
    // One line a second, each counted from the start of its own phase:
    // within a 1.5 s window a line says 1.0 s and never more than 1.5 s
    // (the window closes before any later line).
    let args = [
        "bench",
        "--conns",
        "2",
        "--warmup",
        "1s",
        "--duration",
        "1500ms",
    ];
    let out = sockloop(&[], &args).output().expect("run sockloop bench");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let seconds = measuring_seconds(&stderr);
    // Before the fix they counted from the start of the run: "2.0s measuring".
    assert!(
        !seconds.is_empty() && seconds.iter().all(|&s| s < 1.5),
        "{seconds:?} in\n{stderr}"
    );
}
