//! `iperf3 -J` client output (iperf 3.0 and later).
//!
//! `<nic>/bps` is what the receiver got; `<nic>/retransmits` the sender's
//! TCP retransmits; UDP adds `<nic>/lost_pct`. A bidirectional test adds
//! `<nic>/reverse_bps`. iperf3 reports some failures only in the JSON
//! `error` field with exit 0: that is an error here.
//!
//! Each reported interval (`-i`) becomes `<nic>/interval_bps` (and
//! `<nic>/reverse_interval_bps` in a bidirectional test): the rate this end
//! sent, or received with `-R`, placed by the interval's end. Omitted
//! warm-up intervals (`-O`) are left out.

use std::time::Duration;

use crate::exec::ToolCommand;
use serde_json::Value;

use super::{Measured, ParseError, Timed, ToolResult};
use common::measurement::Kind;

pub fn parse(bytes: &[u8], nic: Option<&str>) -> Result<ToolResult, ParseError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| ParseError::new("iperf3", format!("not JSON: {e}")))?;
    let obj = doc
        .as_object()
        .ok_or_else(|| ParseError::new("iperf3", "not a JSON object"))?;
    if !obj.contains_key("start") && !obj.contains_key("end") && !obj.contains_key("error") {
        return Err(ParseError::new(
            "iperf3",
            "no \"start\", \"end\" or \"error\"",
        ));
    }
    let nic = nic.unwrap_or("nic");
    let mut out = ToolResult::default();
    if let Some(e) = obj.get("error").and_then(Value::as_str) {
        out.errors.push(format!("iperf3: {e}"));
    }
    let end = obj.get("end").cloned().unwrap_or(Value::Null);
    let udp = doc
        .pointer("/start/test_start/protocol")
        .and_then(Value::as_str)
        == Some("UDP");
    let mut push = |metric: &str, v: Option<f64>| {
        if let Some(m) = v.and_then(|v| Measured::new(Kind::Iperf, format!("{nic}/{metric}"), v)) {
            out.measurements.push(m);
        }
    };
    let f = |p: &str| end.pointer(p).and_then(Value::as_f64);
    if udp {
        let sum = if end.get("sum_received").is_some() {
            "/sum_received"
        } else {
            "/sum"
        };
        push("bps", f(&format!("{sum}/bits_per_second")));
        push("lost_pct", f(&format!("{sum}/lost_percent")));
    } else {
        push("bps", f("/sum_received/bits_per_second"));
        push("retransmits", f("/sum_sent/retransmits"));
        push(
            "reverse_bps",
            f("/sum_received_bidir_reverse/bits_per_second"),
        );
    }
    out.series = intervals(&doc, nic);
    if out.measurements.is_empty() && out.errors.is_empty() {
        out.errors
            .push("no end-of-test summary in the output".into());
    }
    Ok(out)
}

fn intervals(doc: &Value, nic: &str) -> Vec<Timed> {
    let list: Vec<&Value> = doc
        .get("intervals")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter(|i| i.pointer("/sum/omitted").and_then(Value::as_bool) != Some(true))
                .collect()
        })
        .unwrap_or_default();
    let end_of = |i: &Value| i.pointer("/sum/end").and_then(Value::as_f64);
    let Some(last) = list.iter().filter_map(|i| end_of(i)).reduce(f64::max) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for i in list {
        let Some(end) = end_of(i) else { continue };
        let before_end_ms = ((last - end) * 1000.0).round() as i64;
        for (sum, metric) in [
            ("/sum/bits_per_second", "interval_bps"),
            ("/sum_bidir_reverse/bits_per_second", "reverse_interval_bps"),
        ] {
            if let Some(m) = i
                .pointer(sum)
                .and_then(Value::as_f64)
                .and_then(|v| Measured::new(Kind::Iperf, format!("{nic}/{metric}"), v))
            {
                out.push(Timed {
                    before_end_ms,
                    measured: m,
                });
            }
        }
    }
    out
}
/// `iperf3 -J -c HOST -p PORT` for `secs`, reporting as it runs.
pub fn client(host: &str, port: u16, secs: u64) -> ToolCommand {
    ToolCommand::new("iperf3", "iperf3", Duration::from_secs(secs + 30))
        .args(["-J", "-c"])
        .arg(host)
        .arg("-p")
        .arg(port.to_string())
        .arg("-t")
        .arg(secs.to_string())
        .arg("-i")
        .arg(crate::stages::report_every(secs).to_string())
}
