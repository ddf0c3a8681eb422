//! The report's SVG plots: sensors over the whole run, fio and iperf3
//! throughput over the span of their passes, with stage bands, threshold
//! lines and a legend; long series are downsampled with LTTB.
//!
//! Never: draw a line across time nothing was measured, or put agent text
//! into the SVG unescaped.

use std::fmt::Write;

use common::stage::StageState;

use super::{esc, num, PlotSeries, POINTS_PER_LINE};
use crate::report::{lttb, Report};

/// Lines per plot before a kind is split over several plots.
const LINES_PER_PLOT: usize = 8;

// A plot's geometry in SVG units: width, height, and the left, right, top
// and bottom margins.
const W: f64 = 1000.0;
const H: f64 = 300.0;
const L: f64 = 60.0;
const R: f64 = 20.0;
const T: f64 = 26.0;
const B: f64 = 70.0;

/// Every plot of the report, one section per plotted kind.
pub(super) fn plots(h: &mut String, report: &Report, plots: &[PlotSeries]) {
    let origin = report.run.started_at.unix_millis();
    let end = plots
        .iter()
        .filter_map(|p| p.points.last().map(|(t, _)| t.unix_millis()))
        .chain(report.run.completed_at.map(|t| t.unix_millis()))
        .chain(
            report
                .stages
                .iter()
                .filter_map(|s| s.completed_at.map(|t| t.unix_millis())),
        )
        .max()
        .unwrap_or(origin)
        .max(origin + 1000);
    for kind in crate::store::SENSOR_PLOT_KINDS {
        let title = plot_title(kind);
        let series: Vec<&PlotSeries> = plots.iter().filter(|p| p.kind == kind).collect();
        if series.is_empty() {
            continue;
        }
        let _ = write!(h, "<h2>{title}</h2>");
        let window = Window {
            origin,
            from: origin,
            to: end,
        };
        for (i, chunk) in series.chunks(LINES_PER_PLOT).enumerate() {
            plot(h, report, kind, i, chunk, window);
        }
    }
    for kind in crate::store::THROUGHPUT_PLOT_KINDS {
        let title = plot_title(kind);
        // One plot per metric, over the span its passes ran.
        let mut groups: std::collections::BTreeMap<&str, Vec<&PlotSeries>> = Default::default();
        for p in plots
            .iter()
            .filter(|p| p.kind == kind && !p.points.is_empty())
        {
            let metric = p.key.rsplit('/').next().unwrap_or(&p.key);
            groups.entry(metric).or_default().push(p);
        }
        if groups.is_empty() {
            continue;
        }
        let _ = write!(h, "<h2 id=\"plots-{kind}\">{title}</h2>");
        let mut index = 0;
        for series in groups.values() {
            let times = series
                .iter()
                .flat_map(|p| &p.points)
                .map(|(t, _)| t.unix_millis());
            let (from, to) = times.fold((i64::MAX, i64::MIN), |(a, b), t| (a.min(t), b.max(t)));
            let pad = ((to - from) / 30).max(1000);
            let window = Window {
                origin,
                from: (from - pad).max(origin),
                to: to + pad,
            };
            for chunk in series.chunks(LINES_PER_PLOT) {
                plot(h, report, kind, index, chunk, window);
                index += 1;
            }
        }
    }
}

/// The title of a plotted kind's section (`SENSOR_PLOT_KINDS` over the
/// whole run, `THROUGHPUT_PLOT_KINDS` over the passes that measured them).
fn plot_title(kind: &str) -> &'static str {
    match kind {
        "temp" => "Temperatures",
        "power" => "Power",
        "fan" => "Fans",
        "psu_volt" => "PSU voltages",
        "fio" => "Disk throughput over time (fio)",
        "iperf" => "Network throughput over time (iperf3)",
        _ => "Measurements",
    }
}

const PALETTE: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// Elapsed time since the run started, as h:mm:ss or m:ss.
fn elapsed(ms: i64) -> String {
    if ms < 0 {
        return format!("-{}", elapsed(-ms));
    }
    let s = ms / 1000;
    if s >= 3600 {
        format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{}:{:02}", s / 60, s % 60)
    }
}

/// The time a plot spans (`from`..`to`) and the run's start its axis
/// counts from, all Unix milliseconds.
#[derive(Debug, Clone, Copy)]
struct Window {
    origin: i64,
    from: i64,
    to: i64,
}

/// Where a rule draws on a plot: its limit, or for `within_pct` both ends
/// of the allowed band around the nominal.
fn limits(t: &common::wire::ThresholdRow) -> Vec<(f64, String)> {
    let what = format!("{} {} {}", t.key, t.op, num(t.threshold));
    if t.op == "within_pct" {
        let d = t.nominal.abs() * t.threshold / 100.0;
        let label = format!("{what}% of {} ({})", num(t.nominal), t.severity);
        vec![(t.nominal - d, label.clone()), (t.nominal + d, label)]
    } else {
        vec![(t.threshold, format!("{what} ({})", t.severity))]
    }
}

/// Display units for large rates (bit/s in Gbit/s or Mbit/s): the factor
/// values are multiplied by, and the axis label.
fn display_unit(unit: &str, hi: f64) -> (f64, String) {
    match unit {
        "bit/s" if hi >= 1e9 => (1e-9, "Gbit/s".into()),
        "bit/s" if hi >= 1e6 => (1e-6, "Mbit/s".into()),
        _ => (1.0, unit.to_string()),
    }
}

/// The SVG path of a line, broken where the time between two points is far
/// longer than usual (the stages between two fio passes, a rebooting agent)
/// so no line is drawn across time nothing was measured.
fn path(line: &[(f64, f64)], x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) -> String {
    let mut steps: Vec<f64> = line.windows(2).map(|w| w[1].0 - w[0].0).collect();
    steps.sort_by(f64::total_cmp);
    let gap = steps
        .get(steps.len() / 2)
        .map_or(f64::INFINITY, |m| (m * 5.0).max(1.0));
    let mut d = String::with_capacity(line.len() * 14);
    for (j, (px, py)) in line.iter().enumerate() {
        let jump = j == 0 || px - line[j - 1].0 > gap;
        let _ = write!(
            d,
            "{}{:.1},{:.1}",
            if jump { "M" } else { "L" },
            x(*px),
            y(*py)
        );
    }
    d
}

/// One SVG line plot: stage bands, threshold lines, up to 8 series.
fn plot(
    h: &mut String,
    report: &Report,
    kind: &str,
    index: usize,
    series: &[&PlotSeries],
    window: Window,
) {
    let Window { origin, from, to } = window;
    let mut lines: Vec<Vec<(f64, f64)>> = series
        .iter()
        .map(|s| {
            let raw: Vec<(f64, f64)> = s
                .points
                .iter()
                .map(|(t, v)| ((t.unix_millis() - from) as f64, *v))
                .collect();
            lttb::downsample(&raw, POINTS_PER_LINE)
        })
        .collect();
    let parsed_kind = kind.parse::<common::measurement::Kind>().ok();
    let judged_as = |key: &str| {
        parsed_kind
            .and_then(|k| k.summary_key(key))
            .unwrap_or_else(|| key.to_string())
    };
    let mut rules: Vec<(f64, String, bool)> = report
        .thresholds
        .iter()
        .filter(|t| t.kind == kind)
        .filter(|t| {
            common::threshold::KeySelector::new(&t.key)
                .map(|sel| series.iter().any(|s| sel.matches(&judged_as(&s.key))))
                .unwrap_or(false)
        })
        .flat_map(|t| {
            limits(t)
                .into_iter()
                .map(|(v, label)| (v, label, t.severity == "critical"))
        })
        .collect();
    let hi = lines
        .iter()
        .flatten()
        .map(|p| p.1)
        .fold(f64::NEG_INFINITY, f64::max);
    let (scale, unit) = display_unit(series.first().map(|s| s.unit.as_str()).unwrap_or(""), hi);
    for p in lines.iter_mut().flatten() {
        p.1 *= scale;
    }
    for r in &mut rules {
        r.0 *= scale;
    }
    let values = lines.iter().flatten().map(|p| p.1);
    let (mut lo, mut hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !lo.is_finite() {
        return;
    }
    for (limit, _, _) in &rules {
        // Show a limit when it is near the data (not a 0 W floor far away).
        if *limit <= hi + (hi - lo).max(hi.abs() * 0.5) && *limit >= lo - (hi - lo).max(1.0) {
            lo = lo.min(*limit);
            hi = hi.max(*limit);
        }
    }
    let pad = ((hi - lo) * 0.08).max(if hi.abs() < 10.0 { 0.1 } else { 1.0 });
    // Rates, fans and the like are never negative: no axis below zero for them.
    let floor = if lo >= 0.0 { 0.0 } else { f64::NEG_INFINITY };
    let (lo, hi) = ((lo - pad).max(floor), hi + pad);
    let span = (to - from).max(1) as f64;
    let x = |ms: f64| L + (ms / span).clamp(0.0, 1.0) * (W - L - R);
    let y = |v: f64| T + (1.0 - (v - lo) / (hi - lo)) * (H - T - B);
    let _ = write!(
        h,
        "<svg id=\"plot-{kind}-{index}\" viewBox=\"0 0 {W} {H}\" width=\"100%\" role=\"img\" aria-label=\"{kind} over time\" xmlns=\"http://www.w3.org/2000/svg\" font-size=\"11\">"
    );
    let frame = Frame {
        from,
        origin,
        span,
        lo,
        hi,
    };
    stage_bands(h, report, &frame, x);
    axes(h, &frame, &unit, x, y);
    // Threshold lines.
    for (limit, label, critical) in &rules {
        if *limit < lo || *limit > hi {
            continue;
        }
        let color = if *critical { "#c62828" } else { "#b26a00" };
        let _ = write!(
            h,
            "<line x1=\"{L}\" y1=\"{yy:.1}\" x2=\"{:.1}\" y2=\"{yy:.1}\" stroke=\"{color}\" stroke-dasharray=\"6 4\"/><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"{color}\">{}</text>",
            W - R,
            W - R - 2.0,
            y(*limit) - 3.0,
            esc(label),
            yy = y(*limit),
        );
    }
    // Series and legend.
    for (i, (s, line)) in series.iter().zip(&lines).enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let d = path(line, x, y);
        let _ = write!(
            h,
            "<path d=\"{d}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.5\"><title>{}</title></path>",
            esc(&s.key)
        );
        let lx = L + (i % 4) as f64 * 230.0;
        let ly = H - B + 32.0 + (i / 4) as f64 * 16.0;
        let _ = write!(
            h,
            "<rect x=\"{lx:.1}\" y=\"{:.1}\" width=\"12\" height=\"3\" fill=\"{color}\"/><text x=\"{:.1}\" y=\"{ly:.1}\">{}</text>",
            ly - 4.0,
            lx + 16.0,
            esc(&s.key)
        );
    }
    h.push_str("</svg>");
}

/// What a plot's axes span: time from `from` (axis labels count from the
/// run's start, `origin`) over `span` ms, values from `lo` to `hi`.
struct Frame {
    from: i64,
    origin: i64,
    span: f64,
    lo: f64,
    hi: f64,
}

/// The stage bands behind a plot, each named where it is wide enough.
fn stage_bands(h: &mut String, report: &Report, frame: &Frame, x: impl Fn(f64) -> f64) {
    let from = frame.from;
    for (i, s) in report.stages.iter().enumerate() {
        let (Some(a), Some(b)) = (s.started_at, s.completed_at.or(report.run.completed_at)) else {
            continue;
        };
        let (xa, xb) = (
            x((a.unix_millis() - from) as f64),
            x((b.unix_millis() - from) as f64),
        );
        if xb - xa < 0.5 {
            continue;
        }
        let fill = if s.state == StageState::Failed {
            "#fbe3e3"
        } else if i % 2 == 0 {
            "#f3f6fa"
        } else {
            "#e8eef5"
        };
        let _ = write!(
            h,
            "<rect x=\"{xa:.1}\" y=\"{T}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\"/>",
            xb - xa,
            H - T - B
        );
        if xb - xa > 40.0 {
            let _ = write!(
                h,
                "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#667\">{}</text>",
                xa + 3.0,
                T - 6.0,
                esc(&s.name)
            );
        }
    }
}

/// Axes, ticks and the unit; time reads as elapsed since the run started.
fn axes(h: &mut String, frame: &Frame, unit: &str, x: impl Fn(f64) -> f64, y: impl Fn(f64) -> f64) {
    let Frame {
        from,
        origin,
        span,
        lo,
        hi,
    } = *frame;
    let _ = write!(
        h,
        "<line x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#999\"/><line x1=\"{L}\" y1=\"{T}\" x2=\"{L}\" y2=\"{:.1}\" stroke=\"#999\"/>",
        H - B,
        W - R,
        H - B,
        H - B
    );
    let step = if hi - lo < 4.0 { 100.0 } else { 10.0 };
    for i in 0..=4 {
        let v = lo + (hi - lo) * i as f64 / 4.0;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text><line x1=\"{L}\" y1=\"{:.1}\" x2=\"{:.1}\" y2=\"{:.1}\" stroke=\"#eee\"/>",
            L - 4.0,
            y(v) + 4.0,
            num((v * step).round() / step),
            y(v),
            W - R,
            y(v)
        );
        let ms = span * i as f64 / 4.0;
        let _ = write!(
            h,
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
            x(ms),
            H - B + 14.0,
            elapsed(ms as i64 + from - origin)
        );
    }
    let _ = write!(
        h,
        "<text x=\"12\" y=\"{:.1}\" transform=\"rotate(-90 12 {:.1})\" text-anchor=\"middle\">{}</text>",
        (H - B + T) / 2.0,
        (H - B + T) / 2.0,
        esc(unit)
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_breaks_only_where_nothing_was_measured() {
        let uniform: Vec<(f64, f64)> = (0..10).map(|i| (i as f64 * 1000.0, 1.0)).collect();
        assert_eq!(path(&uniform, |x| x, |y| y).matches('M').count(), 1);
        let mut passes = uniform.clone();
        passes.extend((0..10).map(|i| (60_000.0 + i as f64 * 1000.0, 2.0)));
        let d = path(&passes, |x| x, |y| y);
        assert_eq!(d.matches('M').count(), 2, "{d}");
        assert!(d.contains("M60000.0,2.0"), "{d}");
        assert_eq!(path(&[(5.0, 1.0)], |x| x, |y| y), "M5.0,1.0");
        assert_eq!(display_unit("bit/s", 9.4e9), (1e-9, "Gbit/s".to_string()));
        assert_eq!(display_unit("bit/s", 9.4e8), (1e-6, "Mbit/s".to_string()));
        assert_eq!(display_unit("MB/s", 9.4e9), (1.0, "MB/s".to_string()));
    }

    #[test]
    fn elapsed_time_reads_as_a_clock() {
        assert_eq!(elapsed(61_000), "1:01");
        assert_eq!(elapsed(3_725_000), "1:02:05");
        assert_eq!(elapsed(-3_000), "-0:03");
    }
}
