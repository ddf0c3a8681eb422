//! The report's tables: fio and iperf3 results, SMART, threshold
//! breaches, kernel errors, spec differences, firmware, thresholds and the
//! run's events.
//!
//! Never: put agent text into the page unescaped.

use std::fmt::Write;

use super::{esc, num, state_class};
use crate::report::Report;

/// Every table of the report, in reading order.
pub(super) fn all(h: &mut String, report: &Report) {
    table_rows(h, "fio", "Disk throughput (fio)", &report.fio);
    table_rows(h, "iperf", "Network (iperf3)", &report.iperf);
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
            e.level,
            e.kind,
            esc(&e.message)
        );
    }
    h.push_str("</table></details>");
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

fn table_rows(h: &mut String, id: &str, title: &str, rows: &[crate::report::ValueRow]) {
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
