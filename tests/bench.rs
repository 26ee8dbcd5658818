//! `sockloop bench` as a user runs it: against its in-process echo it
//! succeeds and says so in JSON; against a server that corrupts or cuts
//! short the echo it fails and names the problem.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Output};
use std::thread;

/// Runs `sockloop bench` with a short window, `--json` and `args`.
fn bench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sockloop"))
        .arg("bench")
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
