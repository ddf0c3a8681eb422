//! `iperf3 -J` client output (iperf 3.0 and later).
//!
//! `<nic>/bps` is what the receiver got; `<nic>/retransmits` the sender's
//! TCP retransmits; UDP adds `<nic>/lost_pct`. A bidirectional test adds
//! `<nic>/reverse_bps`. iperf3 reports some failures only in the JSON
//! `error` field with exit 0: that is an error here.

use serde_json::Value;

use super::{Measured, ParseError, ToolResult};
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
    if out.measurements.is_empty() && out.errors.is_empty() {
        out.errors
            .push("no end-of-test summary in the output".into());
    }
    Ok(out)
}
