//! Pictures of benchmark results, as SVG files: the latency percentile
//! curve of one `sockloop bench` run (`--plot`), and the chart beside the
//! table of `benches/compare.sh` (server CPU per message and p99 latency,
//! one bar per server).
//!
//! Drawn with `plotters` and its SVG backend only: text is written as SVG
//! `<text>` elements, so no font files or system libraries are needed, and
//! the files are plain text that a test can parse.

use std::io;
use std::path::Path;

use hdrhistogram::Histogram;
use plotters::coord::Shift;
use plotters::coord::ranged1d::SegmentedCoord;
use plotters::coord::types::{RangedCoordf64, RangedCoordusize};
use plotters::prelude::*;

/// Image size of every chart, in SVG pixels.
const WIDTH: u32 = 960;
const HEIGHT: u32 = 540;
/// The curve stops at this percentile's tail: 1 / (1 - p) = 10^7 is
/// 99.99999 %, beyond what any run here records.
const MAX_TAIL: f64 = 1e7;
/// Colours of the series, in order; the first is the one plot of `--plot`.
const COLOURS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn chart_error(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(format!("drawing the chart: {e}"))
}

/// The chart of one `sockloop bench` run, named after its load.
pub(crate) fn bench_run(
    path: &Path,
    options: &super::Options,
    latency_ns: &Histogram<u64>,
) -> io::Result<()> {
    let o = options;
    let title = format!(
        "{} {} B, {} connections, depth {}: {} round trips",
        o.mode,
        o.size,
        o.conns,
        o.depth,
        latency_ns.len()
    );
    let name = match &o.target {
        Some(target) => format!("target {target}"),
        None => "in-process echo".to_owned(),
    };
    latency_chart(
        path,
        &title,
        &[Curve {
            name: &name,
            latency_ns,
        }],
    )
    .map_err(|e| io::Error::new(e.kind(), format!("--plot {}: {e}", path.display())))
}

/// One latency curve: round-trip times in nanoseconds, and its name in the legend.
pub struct Curve<'a> {
    /// Its name in the legend.
    pub name: &'a str,
    /// Round-trip times, in nanoseconds.
    pub latency_ns: &'a Histogram<u64>,
}

/// The points of the usual HDR percentile plot of `h`: x is 1 / (1 - p)
/// for percentile p (so 10 is 90 %, 100 is 99 %, 1000 is 99.9 %), y the
/// latency in µs at that percentile. Five points per halving of the tail,
/// as HdrHistogram's own percentile output gives them.
pub fn percentile_points(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    if h.is_empty() {
        return Vec::new();
    }
    let mut points: Vec<(f64, f64)> = h
        .iter_quantiles(5)
        .map(|step| {
            let q = step.quantile_iterated_to();
            let tail = if q >= 1.0 { MAX_TAIL } else { 1.0 / (1.0 - q) };
            (tail.min(MAX_TAIL), step.value_iterated_to() as f64 / 1e3)
        })
        .collect();
    // The last step reaches p = 1 (the maximum): draw it at the tail of the
    // last real point's next decade, not at an infinite x.
    let last_real = points
        .iter()
        .rev()
        .find(|(x, _)| *x < MAX_TAIL)
        .map_or(1.0, |p| p.0);
    let end = 10f64.powf(last_real.log10().floor() + 1.0).min(MAX_TAIL);
    for point in points.iter_mut().filter(|p| p.0 >= MAX_TAIL) {
        point.0 = end;
    }
    points.dedup_by(|a, b| a.0 <= b.0 && a.1 == b.1);
    points
}

/// "99.9%" for x = 1000, and so on.
fn percentile_label(x: f64) -> String {
    let p = 100.0 * (1.0 - 1.0 / x);
    if p <= 0.0 {
        return "0%".to_owned();
    }
    // Rounding: 100 - 99.9 is not quite 0.1 in binary.
    let decimals = (-(100.0 - p).log10() - 1e-6).ceil().max(0.0) as usize;
    format!("{p:.decimals$}%")
}

/// The unit latencies up to `max_us` read best in, and how many µs make
/// one: ms once they reach tens of thousands of µs.
fn latency_unit(max_us: f64) -> (&'static str, f64) {
    if max_us >= 10_000.0 {
        ("ms", 1e3)
    } else {
        ("µs", 1.0)
    }
}

/// A latency as people write it: `22.1 µs`, `4.06 ms`.
fn latency_text(us: f64) -> String {
    match us {
        us if us >= 1e3 => format!("{} ms", format_value(us / 1e3)),
        us => format!("{} µs", format_value(us)),
    }
}

/// The percentiles marked on each curve, with their names.
const MARKED: [(f64, &str); 3] = [(0.5, "p50"), (0.99, "p99"), (0.999, "p99.9")];

/// Where each of [`MARKED`] sits on `curve` (latency in units of
/// `us_per_unit` µs), and its label; only those within `reach`, the
/// curve's last x: a short run has no p99.9.
fn percentile_marks<'a>(
    curve: &'a Curve<'_>,
    reach: f64,
    us_per_unit: f64,
) -> impl Iterator<Item = ((f64, f64), String)> + 'a {
    MARKED.iter().filter_map(move |&(q, name)| {
        let x = 1.0 / (1.0 - q);
        let us = curve.latency_ns.value_at_quantile(q) as f64 / 1e3;
        (x <= reach).then(|| {
            (
                (x, us / us_per_unit),
                format!("{name} {}", latency_text(us)),
            )
        })
    })
}

/// Writes the latency percentile curve of each of `curves` to `path`
/// (SVG): latency against percentile, the percentile axis on a log scale of
/// 1 / (1 - p), so the tail (99 %, 99.9 %, ...) gets as much room as the
/// median; p50, p99 and p99.9 are marked on each curve with their values.
pub fn latency_chart(path: &Path, title: &str, curves: &[Curve<'_>]) -> io::Result<()> {
    let mut series: Vec<(&Curve<'_>, Vec<(f64, f64)>)> = curves
        .iter()
        .map(|c| (c, percentile_points(c.latency_ns)))
        .collect();
    let all = || series.iter().flat_map(|(_, points)| points.iter());
    let x_end = all().map(|p| p.0).fold(100.0, f64::max);
    let max_us = all().map(|p| p.1).fold(1.0, f64::max);
    let (unit, us_per_unit) = latency_unit(max_us);
    for point in series.iter_mut().flat_map(|(_, points)| points.iter_mut()) {
        point.1 /= us_per_unit;
    }

    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(16)
        .margin_right(48)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d((1f64..x_end).log_scale(), 0f64..max_us / us_per_unit * 1.05)
        .map_err(chart_error)?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc(format!("round-trip latency ({unit})"))
        .x_label_formatter(&|x| percentile_label(*x))
        .y_label_formatter(&|y| axis_value(*y))
        .draw()
        .map_err(chart_error)?;
    for (i, (curve, points)) in series.into_iter().enumerate() {
        let colour = COLOURS[i % COLOURS.len()];
        let reach = points.last().map_or(0.0, |p| p.0);
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(chart_error)?
            .label(curve.name)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2)));
        let marks = percentile_marks(curve, reach, us_per_unit).map(|(at, label)| {
            EmptyElement::at(at)
                + Circle::new((0, 0), 4, colour.filled())
                + Text::new(label, (-8, -18), ("sans-serif", 13))
        });
        chart.draw_series(marks).map_err(chart_error)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(chart_error)?;
    root.present().map_err(chart_error)
}

/// A figure over several rounds: the median, and the least and most seen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    /// The middle value (the mean of the two middle ones for an even count).
    pub median: f64,
    /// The least value.
    pub min: f64,
    /// The most.
    pub max: f64,
}

impl Spread {
    /// `None` for no values.
    pub fn of(values: &[f64]) -> Option<Spread> {
        let mut sorted = values.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => return None,
            n if n % 2 == 1 => sorted[n / 2],
            n => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Some(Spread {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        })
    }
}

/// One server's row of a compare.sh table.
pub struct ServerResult {
    /// The server's name, under its bars.
    pub name: String,
    /// Server CPU time per message in µs over the rounds, if measured.
    pub cpu_us_per_msg: Option<Spread>,
    /// p99 round-trip latency in µs over the rounds, if measured.
    pub p99_us: Option<Spread>,
}

/// Writes the chart of a compare.sh run to `path` (SVG): two panels, the
/// server's CPU time per message and the p99 round-trip latency, one bar per
/// server at its median with a line from the least to the most of its rounds.
pub fn compare_chart(path: &Path, title: &str, servers: &[ServerResult]) -> io::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE).map_err(chart_error)?;
    let title = format!("{title} (bars: medians; lines: least to most)");
    let root = root
        .titled(&title, ("sans-serif", 17))
        .map_err(chart_error)?;
    let panels = root.split_evenly((1, 2));
    let cpu: Vec<Option<Spread>> = servers.iter().map(|s| s.cpu_us_per_msg).collect();
    let mut p99: Vec<Option<Spread>> = servers.iter().map(|s| s.p99_us).collect();
    let max_p99 = p99.iter().flatten().map(|s| s.max).fold(0.0, f64::max);
    let (unit, us_per_unit) = latency_unit(max_p99);
    for s in p99.iter_mut().flatten() {
        *s = Spread {
            median: s.median / us_per_unit,
            min: s.min / us_per_unit,
            max: s.max / us_per_unit,
        };
    }
    let p99_caption = format!("p99 round trip ({unit})");
    let names: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
    bar_panel(&panels[0], "server CPU per message (µs)", &names, &cpu)?;
    bar_panel(&panels[1], &p99_caption, &names, &p99)?;
    root.present().map_err(chart_error)
}

/// The same colour for the same server in every chart: the servers of
/// compare.sh by name, any other by its place.
fn server_colour(name: &str, i: usize) -> RGBColor {
    let known = [
        "sockloop",
        "tokio_current_thread",
        "tokio_multi_thread",
        "threads",
        "epoll_floor",
    ];
    let at = known
        .iter()
        .position(|k| *k == name)
        .unwrap_or(known.len() + i);
    COLOURS[at % COLOURS.len()]
}

/// A bar's value as its axis shows it: no more digits than it needs.
fn format_value(v: f64) -> String {
    match v.abs() {
        0.0 => "0".to_owned(),
        a if a >= 100.0 => format!("{v:.0}"),
        a if a >= 10.0 => format!("{v:.1}"),
        _ => format!("{v:.2}"),
    }
}

/// A value on an axis: as [`format_value`], without trailing zeros.
fn axis_value(v: f64) -> String {
    let text = format_value(v);
    match text.contains('.') {
        true => text.trim_end_matches('0').trim_end_matches('.').to_owned(),
        false => text,
    }
}

/// A panel of horizontal bars: values across, one segment per server up
/// the side.
type BarChart<'a, DB> =
    ChartContext<'a, DB, Cartesian2d<RangedCoordf64, SegmentedCoord<RangedCoordusize>>>;

/// One panel of horizontal bars, the first server on top: `values[i]` for
/// `names[i]`, a missing value drawn as no bar.
fn bar_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    caption: &str,
    names: &[&str],
    values: &[Option<Spread>],
) -> io::Result<()> {
    let mut chart = bar_axes(area, caption, names, values)?;
    let n = names.len().max(1);
    for (i, spread) in values.iter().enumerate() {
        let Some(s) = spread else { continue };
        // Row of server i, counted from the bottom.
        draw_bar(&mut chart, n - 1 - i, server_colour(names[i], i), s)?;
    }
    Ok(())
}

/// The panel's axes, drawn: values across from 0 to a tenth past the
/// largest, and one row per server up the side, named, the first on top.
fn bar_axes<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    caption: &str,
    names: &[&str],
    values: &[Option<Spread>],
) -> io::Result<BarChart<'a, DB>> {
    let right = values
        .iter()
        .flatten()
        .map(|s| s.max)
        .fold(0.0, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let n = names.len().max(1);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(12)
        .margin_right(24)
        .x_label_area_size(36)
        .y_label_area_size(150)
        .build_cartesian_2d(0f64..right, (0..n - 1).into_segmented())
        .map_err(chart_error)?;
    let label = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(r) if *r < n => names[n - 1 - r].to_string(),
        _ => String::new(),
    };
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&label)
        .y_label_style(("sans-serif", 13))
        .x_labels(6)
        .x_label_formatter(&|x| format_value(*x))
        .draw()
        .map_err(chart_error)?;
    Ok(chart)
}

/// One server's bar in `row` (counted from the bottom): the median as a
/// bar, a line from the least to the most, and the median's figure.
fn draw_bar<DB: DrawingBackend>(
    chart: &mut BarChart<'_, DB>,
    row: usize,
    colour: RGBColor,
    s: &Spread,
) -> io::Result<()> {
    let mut bar = Rectangle::new(
        [
            (0.0, SegmentValue::Exact(row)),
            (s.median, SegmentValue::Exact(row + 1)),
        ],
        colour.filled(),
    );
    bar.set_margin(8, 8, 0, 0);
    chart.draw_series([bar]).map_err(chart_error)?;
    chart
        .draw_series([PathElement::new(
            [
                (s.min, SegmentValue::CenterOf(row)),
                (s.max, SegmentValue::CenterOf(row)),
            ],
            BLACK.stroke_width(2),
        )])
        .map_err(chart_error)?;
    // The median's figure, just right of the bar or its line, whichever is longer.
    let end = (s.max.max(s.median), SegmentValue::CenterOf(row));
    chart
        .draw_series([
            EmptyElement::at(end) + Text::new(format_value(s.median), (6, -6), ("sans-serif", 12))
        ])
        .map_err(chart_error)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels_read_as_people_write_them() {
        assert_eq!(percentile_label(1.0), "0%");
        assert_eq!(percentile_label(2.0), "50%");
        assert_eq!(percentile_label(10.0), "90%");
        assert_eq!(percentile_label(100.0), "99%");
        assert_eq!(percentile_label(1000.0), "99.9%");
        assert_eq!(percentile_label(1e5), "99.999%");
    }

    #[test]
    fn points_rise_with_the_percentile_and_end_at_the_maximum() {
        let mut h = Histogram::<u64>::new(3).unwrap();
        for v in 1..=10_000u64 {
            h.record(v * 1_000).unwrap();
        }
        let points = percentile_points(&h);
        assert!(
            points
                .windows(2)
                .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1)
        );
        let last = points.last().unwrap();
        assert!((last.1 - h.max() as f64 / 1e3).abs() < 1e-9);
        assert!(last.0 <= MAX_TAIL && last.0 > 1e3);
        assert!(percentile_points(&Histogram::<u64>::new(3).unwrap()).is_empty());
    }

    #[test]
    fn latencies_read_in_the_unit_that_suits_them() {
        assert_eq!(latency_unit(9_999.0), ("µs", 1.0));
        assert_eq!(latency_unit(100_000.0), ("ms", 1e3));
        assert_eq!(latency_text(22.14), "22.1 µs");
        assert_eq!(latency_text(312.0), "312 µs");
        assert_eq!(latency_text(4_060.0), "4.06 ms");
        assert_eq!(axis_value(2.5), "2.5");
        assert_eq!(axis_value(100.0), "100");
        assert_eq!(axis_value(0.0), "0");
    }

    #[test]
    fn spread_takes_the_median_of_odd_and_even_counts() {
        let s = Spread::of(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
        assert_eq!(Spread::of(&[]), None);
    }
}
