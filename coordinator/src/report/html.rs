//! `report.html`: one self-contained page a person reads top-down —
//! verdict first, then where and why the run failed, what was not tested,
//! the stage timeline, breaches, kernel errors, SMART, fio and iperf
//! tables, and SVG plots of every sensor over the run and of fio and iperf3
//! throughput over the passes that measured it, with stage bands and
//! threshold lines (long series downsampled with LTTB).
//!
//! Never: reference anything outside the file (no scripts, fonts, images
//! or styles from elsewhere; it must read the same offline and without
//! JavaScript), or put text from the agent into the page unescaped.

use std::fmt::Write;

use common::time::Timestamp;

use super::{lttb, Report, Verdict};
use common::stage::StageState;

/// Points kept per plotted line.
pub const POINTS_PER_LINE: usize = 600;
/// Lines per plot before a kind is split over several plots.
const LINES_PER_PLOT: usize = 8;

pub use crate::store::PlotSeries;

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

pub(crate) fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number as a person reads it: at most 3 decimals, no trailing zeros.
fn num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let s = if v.abs() >= 1e6 {
        format!("{v:.0}")
    } else {
        format!("{v:.3}")
    };
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn ts(t: Option<Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "–".into())
}

fn state_class(s: StageState) -> &'static str {
    match s {
        StageState::Passed => "ok",
        StageState::Failed => "bad",
        StageState::Skipped => "skip",
        StageState::Running | StageState::Pending => "pend",
    }
}

pub(crate) const STYLE: &str = "body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;width:100%;margin:6px 0}th,td{border:1px solid #ddd;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.verdict{display:inline-block;padding:6px 14px;border-radius:4px;font-weight:700;font-size:20px;color:#fff}
.v-pass{background:#2e7d32}.v-pass-incomplete{background:#b26a00}.v-fail{background:#c62828}.v-none{background:#616161}
.ok{color:#2e7d32}.bad{color:#c62828;font-weight:600}.skip{color:#777}.pend{color:#555}
.box{border-left:4px solid #c62828;background:#fdecea;padding:8px 12px;margin:12px 0}
.warnbox{border-left:4px solid #b26a00;background:#fff4e5;padding:8px 12px;margin:12px 0}
.meta{color:#555}code,pre{font-family:ui-monospace,monospace;font-size:12px}pre{white-space:pre-wrap;margin:0}
svg{display:block;margin:6px 0 14px;background:#fff}";

/// Renders the page.
pub fn render(report: &Report, plots: &[PlotSeries]) -> String {
    render_page(report, plots, "", "")
}

/// The page with `head` added to its `<head>` and `header` first in its
/// body (the dashboard's navigation; both already escaped HTML).
pub fn render_page(report: &Report, plots: &[PlotSeries], head: &str, header: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let r = &report.run;
    let verdict = match report.verdict {
        Verdict::Pass => "pass",
        Verdict::PassIncomplete => "pass-incomplete",
        Verdict::Fail => "fail",
        Verdict::None => "none",
    };
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Run {id} on {host}: {verdict}</title><style>{STYLE}</style>{head}</head><body>{header}",
        id = r.id,
        host = esc(&report.host.name),
    );
    let _ = write!(
        h,
        "<h1>Run {id} on {host}</h1><p><span class=\"verdict v-{verdict}\" id=\"verdict\">{verdict_upper}</span> \
         <span class=\"meta\">state {state}, profile {profile}{nd}, {measurements} measurements, started {start}, ended {end}{hold}</span></p>",
        id = r.id,
        host = esc(&report.host.name),
        verdict_upper = verdict.to_uppercase(),
        state = r.state,
        profile = esc(&r.profile),
        nd = if r.non_destructive { ", non-destructive" } else { "" },
        measurements = r.measurements,
        start = r.started_at,
        end = ts(r.completed_at),
        hold = r
            .hold_ip
            .as_ref()
            .map(|ip| format!(", held at {}", esc(ip)))
            .unwrap_or_default(),
    );

    if let Some(f) = &report.failure {
        let _ = write!(
            h,
            "<div class=\"box\" id=\"failure\"><b>Failed at {}</b><ul>",
            esc(&f.stage)
        );
        for reason in &f.reasons {
            let _ = write!(h, "<li>{}</li>", esc(reason));
        }
        for s in &f.sub_steps {
            let why = s.summary["reason"].as_str().unwrap_or("failed");
            let _ = write!(h, "<li>{}: {}</li>", esc(&s.name), esc(why));
        }
        h.push_str("</ul></div>");
    }
    if !report.not_tested.is_empty() {
        h.push_str("<div class=\"warnbox\" id=\"not-tested\"><b>Not tested</b><ul>");
        for n in &report.not_tested {
            let _ = write!(
                h,
                "<li>{}{}: {}</li>",
                esc(&n.stage),
                n.item
                    .as_deref()
                    .map(|i| format!(" {}", esc(i)))
                    .unwrap_or_default(),
                esc(&n.reason)
            );
        }
        h.push_str("</ul></div>");
    }

    // Timeline.
    h.push_str("<h2>Stages</h2><table><tr><th>#</th><th>stage</th><th>state</th><th>started</th><th>seconds</th><th>reasons</th><th>sub-steps</th></tr>");
    for s in &report.stages {
        let subs: Vec<String> = s
            .sub_steps
            .iter()
            .map(|x| {
                format!(
                    "<span class=\"{}\">{} ({})</span>",
                    state_class(x.state),
                    esc(&x.name),
                    x.state.as_str()
                )
            })
            .collect();
        let _ = write!(
            h,
            "<tr><td class=\"n\">{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            s.ordinal,
            esc(&s.name),
            state_class(s.state),
            s.state.as_str(),
            ts(s.started_at),
            s.seconds.map(num).unwrap_or_else(|| "–".into()),
            s.reasons.iter().map(|r| esc(r)).collect::<Vec<_>>().join("<br>"),
            subs.join("<br>"),
        );
    }
    h.push_str("</table>");

    // Plots.
    let origin = r.started_at.unix_millis();
    let end = plots
        .iter()
        .filter_map(|p| p.points.last().map(|(t, _)| t.unix_millis()))
        .chain(r.completed_at.map(|t| t.unix_millis()))
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
            plot(&mut h, report, kind, i, chunk, window);
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
                plot(&mut h, report, kind, index, chunk, window);
                index += 1;
            }
        }
    }

    // Tables.
    table_rows(&mut h, "fio", "Disk throughput (fio)", &report.fio);
    table_rows(&mut h, "iperf", "Network (iperf3)", &report.iperf);
    if !report.smart.is_empty() {
        h.push_str("<h2>SMART</h2><table><tr><th>disk</th><th>state</th><th>detail</th></tr>");
        for s in &report.smart {
            let detail = s.summary["reason"]
                .as_str()
                .map(esc)
                .unwrap_or_else(|| esc(&compact(&s.summary)));
            let _ = write!(
                h,
                "<tr><td>{}</td><td class=\"{}\">{}</td><td><pre>{}</pre></td></tr>",
                esc(&s.name),
                state_class(s.state),
                s.state.as_str(),
                detail
            );
        }
        h.push_str("</table>");
    }
    let _ = write!(h, "<h2>Threshold breaches ({})</h2>", report.breaches.total);
    if report.breaches.shown.is_empty() {
        h.push_str("<p>None.</p>");
    } else {
        h.push_str("<table><tr><th>time</th><th>stage</th><th>series</th><th>observed</th><th>limit</th><th>severity</th></tr>");
        for b in &report.breaches.shown {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{} {}</td><td class=\"n\">{}</td><td>{} {} {}</td><td class=\"{}\">{}</td></tr>",
                b.ts,
                esc(&b.stage),
                esc(&b.kind),
                esc(&b.key),
                num(b.observed),
                esc(&b.op),
                num(b.threshold),
                esc(&b.unit),
                if b.severity == "critical" { "bad" } else { "pend" },
                esc(&b.severity)
            );
        }
        h.push_str("</table>");
    }
    if !report.kernel_errors.lines.is_empty() {
        h.push_str("<h2>Kernel errors</h2><table><tr><th>time</th><th>line</th></tr>");
        for e in &report.kernel_errors.lines {
            let _ = write!(
                h,
                "<tr><td>{}</td><td><code>{}</code></td></tr>",
                e.ts,
                esc(&e.message)
            );
        }
        h.push_str("</table>");
    }
    if !report.spec_diffs.is_empty() {
        h.push_str("<h2>Spec differences</h2><table><tr><th>field</th><th>expected</th><th>actual</th><th>severity</th><th>ignored</th></tr>");
        for d in &report.spec_diffs {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&d.field),
                esc(d.expected.as_deref().unwrap_or("–")),
                esc(d.actual.as_deref().unwrap_or("–")),
                esc(&d.severity),
                if d.ignored { "yes" } else { "no" }
            );
        }
        h.push_str("</table>");
    }
    if !report.firmware.is_empty() {
        h.push_str("<h2>Firmware</h2><table><tr><th>component</th><th>identifier</th><th>version</th><th>vendor</th></tr>");
        for f in &report.firmware {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&f.component),
                esc(&f.identifier),
                esc(&f.version),
                esc(&f.vendor)
            );
        }
        h.push_str("</table>");
    }
    h.push_str("<h2>Thresholds</h2><table><tr><th>stage</th><th>series</th><th>rule</th><th>severity</th><th>source</th><th>evaluated</th><th>breaches</th></tr>");
    for t in &report.thresholds {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{} {}</td><td>{} {} {}</td><td>{}</td><td>{}</td><td class=\"n\">{}</td><td class=\"n{}\">{}</td></tr>",
            esc(&t.stage_name),
            esc(&t.kind),
            esc(&t.key),
            esc(&t.op),
            num(t.threshold),
            esc(&t.unit),
            esc(&t.severity),
            esc(&t.source),
            t.evaluated,
            if t.breaches > 0 { " bad" } else { "" },
            t.breaches
        );
    }
    h.push_str("</table>");
    let _ = write!(h, "<details><summary>Events ({})</summary><table><tr><th>time</th><th>level</th><th>kind</th><th>message</th></tr>", report.events.len());
    for e in &report.events {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            e.ts,
            esc(&e.level),
            esc(&e.kind),
            esc(&e.message)
        );
    }
    h.push_str("</table></details>");
    let _ = writeln!(
        h,
        "<p class=\"meta\">Vetting report schema {}; the same data as report.json.</p></body></html>",
        report.schema_version
    );
    h
}

fn compact(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.len() > 400 {
        let cut = s.char_indices().nth(400).map(|(i, _)| i).unwrap_or(s.len());
        format!("{}…", &s[..cut])
    } else {
        s
    }
}

fn table_rows(h: &mut String, id: &str, title: &str, rows: &[super::ValueRow]) {
    if rows.is_empty() {
        return;
    }
    let _ = write!(
        h,
        "<h2 id=\"{id}\">{title}</h2><table><tr><th>stage</th><th>device</th><th>metric</th><th>value</th></tr>"
    );
    for r in rows {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"n\">{} {}</td></tr>",
            esc(r.stage.as_deref().unwrap_or("–")),
            esc(&r.device),
            esc(&r.metric),
            num(r.value),
            esc(&r.unit)
        );
    }
    h.push_str("</table>");
}

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
    const W: f64 = 1000.0;
    const H: f64 = 300.0;
    const L: f64 = 60.0;
    const R: f64 = 20.0;
    const T: f64 = 26.0;
    const B: f64 = 70.0;
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
    // Stage bands.
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
    // Axes and ticks; time reads as elapsed since the run started.
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
        esc(&unit)
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_text_is_escaped() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }

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
    fn numbers_read_as_a_person_writes_them() {
        assert_eq!(num(93.5), "93.5");
        assert_eq!(num(90.0), "90");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(2_500_000_000.0), "2500000000");
        assert_eq!(elapsed(61_000), "1:01");
        assert_eq!(elapsed(3_725_000), "1:02:05");
        assert_eq!(elapsed(-3_000), "-0:03");
    }
}
