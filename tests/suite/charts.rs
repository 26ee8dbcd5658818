//! The pictures: `sockloop bench --plot` and the chart of
//! `benches/compare.sh` (drawn by `examples/compare_chart.rs`) write SVG
//! files that parse as XML and show what they say: the percentile curve of
//! the run, and one bar per server in each panel, each named.

use std::path::{Path, PathBuf};
use std::process::Command;

use hdrhistogram::Histogram;
use sockloop::bench::plot::{Curve, latency_chart};

use crate::common::sockloop;

/// A file in the temporary directory, removed when dropped.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str) -> TempFile {
        let dir = std::env::temp_dir();
        TempFile(dir.join(format!("sockloop-charts-{}-{name}", std::process::id())))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The built example `name`: `cargo test` builds every example beside the
/// test binaries, in target/<profile>/examples/.
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps");
    let path = profile_dir.join("examples").join(name);
    assert!(path.exists(), "{} not built", path.display());
    path
}

/// Every `<text>` in the document, trimmed.
fn texts(doc: &roxmltree::Document<'_>) -> Vec<String> {
    doc.descendants()
        .filter(|n| n.has_tag_name("text"))
        .filter_map(|n| n.text())
        .map(|t| t.trim().to_owned())
        .collect()
}

/// The points of every coloured (not black) `<polyline>`.
fn coloured_lines(doc: &roxmltree::Document<'_>) -> Vec<Vec<(f64, f64)>> {
    doc.descendants()
        .filter(|n| n.has_tag_name("polyline"))
        .filter(|n| n.attribute("stroke").is_some_and(|s| s != "#000000"))
        .map(|n| {
            n.attribute("points")
                .unwrap_or("")
                .split_whitespace()
                .map(|pair| {
                    let (x, y) = pair.split_once(',').expect("x,y");
                    (x.parse().expect("x"), y.parse().expect("y"))
                })
                .collect()
        })
        .collect()
}

fn parse(svg: &str) -> roxmltree::Document<'_> {
    let doc = roxmltree::Document::parse(svg).expect("well-formed SVG");
    assert!(doc.root_element().has_tag_name("svg"), "{svg:.200}");
    doc
}

/// The mark of each of p50, p99 and p99.9: its label, and the number of
/// filled circles in the curve's colour.
fn percentile_marks(doc: &roxmltree::Document<'_>) -> (Vec<String>, usize) {
    let labels = texts(doc)
        .into_iter()
        .filter(|t| ["p50 ", "p99 ", "p99.9 "].iter().any(|p| t.starts_with(p)))
        .collect();
    let dots = doc
        .descendants()
        .filter(|n| n.has_tag_name("circle"))
        .count();
    (labels, dots)
}

/// A short `sockloop bench` on its in-process echo, `--plot` to `plot`.
fn bench_with_plot(plot: &str) -> std::process::Output {
    let args = [
        "bench",
        "--conns",
        "4",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
    ];
    sockloop(&[], &args)
        .args(["--plot", plot])
        .output()
        .expect("run sockloop bench")
}

#[test]
fn bench_plot_writes_the_latency_percentile_curve() {
    let file = TempFile::new("latency.svg");
    let plot = file.0.to_str().expect("a UTF-8 temp path");
    let out = bench_with_plot(plot);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // Before the fix it wrote the file without a word.
    assert!(
        stderr.contains(&format!("bench: wrote latency plot to {plot}")),
        "{stderr}"
    );
    let svg = std::fs::read_to_string(&file.0).expect("the plot was written");
    let doc = parse(&svg);
    let texts = texts(&doc);
    for wanted in ["in-process echo", "percentile", "90%", "99%", "99.9%"] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "no {wanted:?} in {texts:?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("pingpong 64 B, 4 connections")),
        "{texts:?}"
    );
    // The latency axis names its unit: µs, or ms for a slow run.
    assert!(
        texts
            .iter()
            .any(|t| t == "round-trip latency (µs)" || t == "round-trip latency (ms)"),
        "{texts:?}"
    );
    let (labels, dots) = percentile_marks(&doc);
    assert_eq!((labels.len(), dots), (3, 3), "{labels:?}");
    // The curve: the longest coloured line (the legend's sample is two points).
    let curve = coloured_lines(&doc)
        .into_iter()
        .max_by_key(Vec::len)
        .expect("a curve");
    assert!(curve.len() >= 10, "{curve:?}");
    // Left to right the percentile grows, and the latency never falls (SVG
    // y grows downwards).
    assert!(
        curve
            .windows(2)
            .all(|w| w[0].0 <= w[1].0 && w[1].1 <= w[0].1),
        "{curve:?}"
    );
}

#[test]
fn bench_plot_refuses_a_file_that_is_not_svg() {
    let file = TempFile::new("latency.png");
    let plot = file.0.to_str().expect("a UTF-8 temp path");
    let out = bench_with_plot(plot);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Before the fix it wrote SVG into the .png.
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--plot") && stderr.contains(".svg"),
        "{stderr}"
    );
    assert!(!file.0.exists(), "a file was written");
}

#[test]
fn a_latency_chart_of_tens_of_milliseconds_reads_in_ms_with_the_percentiles_marked() {
    let mut latency_ns = Histogram::<u64>::new(3).expect("a histogram");
    // 5 ms to 50 ms, evenly: p50 27.5 ms, p99 49.6 ms, p99.9 50.0 ms (to three digits).
    for i in 0..10_000u64 {
        latency_ns.record(5_000_000 + i * 4_500).expect("record");
    }
    let file = TempFile::new("ms.svg");
    let curve = Curve {
        name: "slow",
        latency_ns: &latency_ns,
    };
    latency_chart(&file.0, "slow server", &[curve]).expect("draw");
    let svg = std::fs::read_to_string(&file.0).expect("the chart was written");
    let doc = parse(&svg);
    let texts = texts(&doc);
    assert!(
        texts.iter().any(|t| t == "round-trip latency (ms)"),
        "{texts:?}"
    );
    // Before the fix the axis read 0 to 50000, in µs.
    let ticks: Vec<f64> = texts.iter().filter_map(|t| t.parse().ok()).collect();
    assert!(
        ticks.len() >= 3 && ticks.iter().all(|&t| t <= 60.0),
        "{ticks:?}"
    );
    let (labels, dots) = percentile_marks(&doc);
    assert_eq!(dots, 3, "{labels:?}");
    for (name, value) in [("p50", "27.5 ms"), ("p99", "49.6 ms"), ("p99.9", "50.0 ms")] {
        let wanted = format!("{name} {value}");
        assert!(labels.contains(&wanted), "no {wanted:?} in {labels:?}");
    }
}

const RUN: &str = r#"{"mode":"pingpong","framing":"raw","conns":100,"size":64,"depth":1,"in_flight":1,"rate":null,"duration_s":3.000,"msgs":800000,"msgs_per_sec":266666.7,"mb_per_sec":17.067,"p50_us":350.0,"p90_us":420.0,"p99_us":P99,"p999_us":900.0,"max_us":2000.0,"server_cpu_s":2.900,"server_cpu_us_per_msg":CPU,"errors":0}"#;

#[test]
fn compare_chart_draws_one_bar_per_server_in_each_panel() {
    let runs = [
        ("sockloop", "3.61", "528.4"),
        ("tokio_current_thread", "3.71", "517.6"),
        ("threads", "6.20", "1195.0"),
        ("sockloop", "3.55", "490.0"),
        ("tokio_current_thread", "3.80", "530.0"),
        ("threads", "null", "1300.0"), // a run without the server's CPU
    ];
    let results = TempFile::new("results");
    let text: String = runs
        .iter()
        .map(|(name, cpu, p99)| format!("{name} {}\n", RUN.replace("CPU", cpu).replace("P99", p99)))
        .collect();
    std::fs::write(&results.0, text).expect("write results");
    let chart = TempFile::new("compare.svg");
    let out = Command::new(example("compare_chart"))
        .arg(&results.0)
        .arg(&chart.0)
        .arg("pingpong 64 B, 100 connections")
        .output()
        .expect("run compare_chart");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = std::fs::read_to_string(&chart.0).expect("the chart was written");
    let doc = parse(&svg);
    let texts = texts(&doc);
    for wanted in [
        "sockloop",
        "tokio_current_thread",
        "threads",
        "server CPU per message (µs)",
        "p99 round trip (µs)",
        "3.58", // sockloop's median CPU
        "1248", // threads' median p99
    ] {
        assert!(
            texts.iter().any(|t| t == wanted),
            "no {wanted:?} in {texts:?}"
        );
    }
    assert!(
        texts
            .iter()
            .any(|t| t.starts_with("pingpong 64 B, 100 connections"))
    );
    // Three servers, two panels: six bars, all in series colours (the
    // background is the one white rectangle).
    let bars = doc
        .descendants()
        .filter(|n| n.has_tag_name("rect"))
        .filter(|n| n.attribute("fill").is_some_and(|f| f != "#FFFFFF"))
        .count();
    assert_eq!(bars, 6);
}

#[test]
fn compare_chart_refuses_a_results_file_it_cannot_read() {
    let results = TempFile::new("bad-results");
    std::fs::write(&results.0, "no-json-here\n").expect("write");
    let chart = TempFile::new("bad.svg");
    let out = Command::new(example("compare_chart"))
        .arg(&results.0)
        .arg(&chart.0)
        .output()
        .expect("run compare_chart");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 1"));
}
