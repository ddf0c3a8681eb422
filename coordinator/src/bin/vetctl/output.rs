//! What vetctl prints: the API object as JSON with `--json`, otherwise a
//! compact table.

use std::io::Write;

use common::wire::{Host, IgnoreDiffAck, Run, RunDetail, WebhookDelivery};

/// Standard output for people: every control character but newline and
/// tab (an agent's text may carry terminal escapes) printed as `?`.
pub fn stdout() -> Clean<std::io::StdoutLock<'static>> {
    Clean(std::io::stdout().lock())
}

pub struct Clean<W>(pub W);

impl<W: Write> Write for Clean<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let clean: String = text
            .chars()
            .map(|c| {
                if c.is_control() && c != '\n' && c != '\t' {
                    '?'
                } else {
                    c
                }
            })
            .collect();
        self.0.write_all(clean.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

pub fn print_json<T: serde::Serialize>(v: &T) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map(|v| v.to_string())
        .unwrap_or_else(|| "-".into())
}

pub fn ignored(ack: &IgnoreDiffAck, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(ack);
    }
    println!(
        "run {}: spec diff {} ignored ({} recorded diff(s) marked; later ones will be too)",
        ack.run_id, ack.field, ack.marked
    );
    Ok(())
}

pub fn host(h: &Host, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(h);
    }
    let mut out = stdout();
    writeln!(out, "host {} (id {})", h.name, h.id)?;
    writeln!(out, "  mac        {}", h.mac)?;
    let wol = if h.wol_broadcast_ip.is_empty() {
        "none (no packet is sent)".to_string()
    } else {
        format!("{}:{}", h.wol_broadcast_ip, h.wol_port)
    };
    writeln!(out, "  wol        {wol}")?;
    writeln!(out, "  last seen  {}", opt(&h.last_seen_at))?;
    let secret = if h.claim_secret { "set" } else { "none" };
    writeln!(out, "  claim secret {secret}")?;
    if h.expected_spec_yaml.trim().is_empty() {
        writeln!(out, "  spec       none")?;
    } else {
        writeln!(out, "  spec:")?;
        for line in h.expected_spec_yaml.lines() {
            writeln!(out, "    {line}")?;
        }
    }
    Ok(())
}

pub fn hosts(list: &[Host], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    let mut out = stdout();
    writeln!(
        out,
        "{:<5} {:<20} {:<18} {:<22} LAST SEEN",
        "ID", "NAME", "MAC", "WOL"
    )?;
    for h in list {
        let wol = if h.wol_broadcast_ip.is_empty() {
            "-".to_string()
        } else {
            format!("{}:{}", h.wol_broadcast_ip, h.wol_port)
        };
        writeln!(
            out,
            "{:<5} {:<20} {:<18} {:<22} {}",
            h.id,
            h.name,
            h.mac,
            wol,
            opt(&h.last_seen_at)
        )?;
    }
    Ok(())
}

pub fn run(r: &Run, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(r);
    }
    let mut out = stdout();
    writeln!(
        out,
        "run {} on {}: {} (profile {}{}) result {} failed stage {}",
        r.id,
        r.host,
        r.state,
        r.profile,
        if r.non_destructive {
            ", non-destructive"
        } else {
            ""
        },
        opt(&r.result),
        opt(&r.failed_stage)
    )?;
    Ok(())
}

pub fn runs(list: &[Run], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    let mut out = stdout();
    writeln!(
        out,
        "{:<5} {:<16} {:<14} {:<7} {:<6} {:<13} STARTED",
        "ID", "HOST", "STATE", "PROFILE", "RESULT", "FAILED STAGE"
    )?;
    for r in list {
        writeln!(
            out,
            "{:<5} {:<16} {:<14} {:<7} {:<6} {:<13} {}",
            r.id,
            r.host,
            r.state.as_str(),
            r.profile.as_str(),
            opt(&r.result),
            opt(&r.failed_stage),
            r.started_at
        )?;
    }
    Ok(())
}

pub fn webhooks(list: &[WebhookDelivery], json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(&list);
    }
    let mut out = stdout();
    if list.is_empty() {
        writeln!(out, "no deliveries")?;
        return Ok(());
    }
    writeln!(
        out,
        "{:<5} {:<5} {:<9} {:<9} {:<8} {:<24} {:<32} LAST ERROR",
        "ID", "RUN", "EVENT", "STATE", "ATTEMPTS", "NEXT/DELIVERED", "URL"
    )?;
    for d in list {
        let when = match (&d.delivered_at, d.state.as_str()) {
            (Some(t), _) => t.to_string(),
            (None, "pending") => d.next_attempt_at.to_string(),
            _ => "-".into(),
        };
        writeln!(
            out,
            "{:<5} {:<5} {:<9} {:<9} {:<8} {:<24} {:<32} {}",
            d.id,
            d.run_id,
            d.event,
            d.state,
            d.attempts,
            when,
            d.url,
            opt(&d.last_error)
        )?;
    }
    Ok(())
}

pub fn run_detail(d: &RunDetail, json: bool) -> anyhow::Result<()> {
    if json {
        return print_json(d);
    }
    run(&d.run, false)?;
    let mut out = stdout();
    if let Some(ip) = &d.run.hold_ip {
        writeln!(
            out,
            "held at {ip}: `vetctl run ssh {}` gives the command",
            d.run.id
        )?;
    }
    writeln!(out, "\nstages:")?;
    for s in &d.stages {
        let reasons = s
            .summary_json
            .as_deref()
            .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
            .and_then(|v| v.get("reasons").cloned())
            .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
            .unwrap_or_default();
        writeln!(
            out,
            "  {:>2} {:<13} {:<8} {}",
            s.ordinal,
            s.name,
            s.state.as_str(),
            reasons.join("; ")
        )?;
        for sub in &s.sub_steps {
            let reason = serde_json::from_str::<serde_json::Value>(&sub.summary_json)
                .ok()
                .and_then(|v| v.get("reason").and_then(|r| r.as_str()).map(str::to_string))
                .unwrap_or_default();
            writeln!(
                out,
                "       - {:<20} {:<8} {reason}",
                sub.name,
                sub.state.as_str()
            )?;
        }
    }
    if !d.spec_diffs.is_empty() {
        writeln!(out, "\nspec diffs:")?;
        for s in &d.spec_diffs {
            writeln!(
                out,
                "  {:<24} expected {:<16} actual {:<16} {}{}",
                s.field,
                opt(&s.expected),
                opt(&s.actual),
                s.severity,
                if s.ignored { " (ignored)" } else { "" }
            )?;
        }
    }
    let breached: Vec<_> = d.thresholds.iter().filter(|t| t.breaches > 0).collect();
    writeln!(
        out,
        "\nmeasurements: {}; thresholds: {} ({} breached)",
        d.measurements,
        d.thresholds.len(),
        breached.len()
    )?;
    for t in breached {
        writeln!(
            out,
            "  {} {} {} {} {} {}: {} of {} samples breached",
            t.severity, t.stage_name, t.kind, t.key, t.op, t.threshold, t.breaches, t.evaluated
        )?;
    }
    writeln!(out, "\nevents:")?;
    for e in &d.events {
        writeln!(
            out,
            "  {} {:<5} {:<22} {}",
            e.ts, e.level, e.kind, e.message
        )?;
    }
    Ok(())
}

/// The head of a report.json for a person: verdict, where it failed and
/// why, what was not tested, breaches.
pub fn report_summary(bytes: &[u8]) -> anyhow::Result<()> {
    let r: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| anyhow::anyhow!("the coordinator sent a report that is not JSON: {e}"))?;
    let mut out = stdout();
    writeln!(
        out,
        "run {} on {}: verdict {} (state {}, profile {})",
        r["run"]["id"],
        r["host"]["name"].as_str().unwrap_or("?"),
        r["verdict"].as_str().unwrap_or("?"),
        r["run"]["state"].as_str().unwrap_or("?"),
        r["run"]["profile"].as_str().unwrap_or("?"),
    )?;
    if let Some(f) = r["failure"].as_object() {
        writeln!(out, "failed at {}", f["stage"].as_str().unwrap_or("?"))?;
        for reason in f["reasons"].as_array().into_iter().flatten() {
            writeln!(out, "  {}", reason.as_str().unwrap_or_default())?;
        }
        for s in f["sub_steps"].as_array().into_iter().flatten() {
            let why = s["summary"]["reason"].as_str().unwrap_or_default();
            writeln!(out, "  {}: {why}", s["name"].as_str().unwrap_or("?"))?;
        }
    }
    let breaches = r["breaches"]["total"].as_i64().unwrap_or(0);
    if breaches > 0 {
        writeln!(out, "{breaches} threshold breach(es); first:")?;
        for b in r["breaches"]["shown"]
            .as_array()
            .into_iter()
            .flatten()
            .take(5)
        {
            writeln!(
                out,
                "  {} {} {} = {} (limit {} {} {}, {})",
                b["ts"].as_str().unwrap_or_default(),
                b["stage"].as_str().unwrap_or_default(),
                b["key"].as_str().unwrap_or_default(),
                b["observed"],
                b["op"].as_str().unwrap_or_default(),
                b["threshold"],
                b["unit"].as_str().unwrap_or_default(),
                b["severity"].as_str().unwrap_or_default(),
            )?;
        }
    }
    for n in r["not_tested"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "not tested: {}{}: {}",
            n["stage"].as_str().unwrap_or("?"),
            n["item"]
                .as_str()
                .map(|i| format!(" {i}"))
                .unwrap_or_default(),
            n["reason"].as_str().unwrap_or_default()
        )?;
    }
    writeln!(out, "(--json prints report.json; --json F writes it)")?;
    Ok(())
}
