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

use common::stage::StageState;
use common::time::Timestamp;

use super::{Report, Verdict};

mod plot;
mod tables;

/// Points kept per plotted line.
pub const POINTS_PER_LINE: usize = 600;

pub use crate::store::PlotSeries;

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

    problem_boxes(&mut h, report);
    timeline(&mut h, report);
    plot::plots(&mut h, report, plots);
    tables::all(&mut h, report);
    let _ = writeln!(
        h,
        "<p class=\"meta\">Vetting report schema {}; the same data as report.json.</p></body></html>",
        report.schema_version
    );
    h
}

/// Where and why the run failed, and what was not tested.
fn problem_boxes(h: &mut String, report: &Report) {
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
}

/// The stage timeline table.
fn timeline(h: &mut String, report: &Report) {
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
    fn numbers_read_as_a_person_writes_them() {
        assert_eq!(num(93.5), "93.5");
        assert_eq!(num(90.0), "90");
        assert_eq!(num(0.12345), "0.123");
        assert_eq!(num(2_500_000_000.0), "2500000000");
    }
}
