//! The chart beside the table of `benches/compare.sh`: server CPU per
//! message and p99 round trip, one bar per server (the median of its
//! rounds, with a line from the least to the most).
//!
//! Run: `cargo run --release --example compare_chart -- RESULTS OUT.svg [TITLE]`
//!
//! RESULTS has one line per run, `NAME JSON`, the JSON as `sockloop bench
//! --json` prints it: the file compare.sh collects (kept with `KEEP=dir`).
//! Servers appear in the order of their first run.

#![deny(unsafe_code)]

use std::io;
use std::path::Path;
use std::process::ExitCode;

use sockloop::bench::plot::{ServerResult, Spread, compare_chart};

/// The number after `"key":` in a one-line JSON object; `None` for `null`
/// or a missing key.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let tag = format!("\"{key}\":");
    let start = json.find(&tag)? + tag.len();
    let rest = &json[start..];
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest[..end].trim().parse().ok()
}

/// Each server's runs, in the order the servers first appear.
fn read_results(text: &str) -> io::Result<Vec<ServerResult>> {
    let mut runs: Vec<(String, Vec<f64>, Vec<f64>)> = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let Some((name, json)) = line.split_once(' ') else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("line {}: expected `NAME JSON`", n + 1),
            ));
        };
        let at = match runs.iter().position(|r| r.0 == name) {
            Some(at) => at,
            None => {
                runs.push((name.to_owned(), Vec::new(), Vec::new()));
                runs.len() - 1
            }
        };
        if let Some(cpu) = json_number(json, "server_cpu_us_per_msg") {
            runs[at].1.push(cpu);
        }
        if let Some(p99) = json_number(json, "p99_us") {
            runs[at].2.push(p99);
        }
    }
    Ok(runs
        .into_iter()
        .map(|(name, cpu, p99)| ServerResult {
            name,
            cpu_us_per_msg: Spread::of(&cpu),
            p99_us: Spread::of(&p99),
        })
        .collect())
}

fn run(args: &[String]) -> io::Result<()> {
    let [results, out, rest @ ..] = args else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "usage: compare_chart RESULTS OUT.svg [TITLE]",
        ));
    };
    let text = std::fs::read_to_string(results)
        .map_err(|e| io::Error::new(e.kind(), format!("{results}: {e}")))?;
    let servers = read_results(&text)?;
    if servers.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{results}: no runs"),
        ));
    }
    let title = rest.first().map_or("benches/compare.sh", String::as_str);
    compare_chart(Path::new(out), title, &servers)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare_chart: {e}");
            ExitCode::FAILURE
        }
    }
}
