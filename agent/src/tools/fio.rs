//! `fio --output-format=json` (fio 2.x and 3.x).
//!
//! Per disk and direction: `<disk>/{read,write}_{bw_mbps,iops,clat_p50_us,
//! clat_p99_us}`, MB/s being 10^6 bytes/s. Jobs on the same disk are summed
//! (bandwidth, IOPS); their latency percentiles take the worst job. A
//! direction that moved no data yields nothing.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{device_name, Measured, ParseError, ToolResult};
use common::measurement::Kind;

#[derive(Default)]
struct Acc {
    bw_bytes: f64,
    iops: f64,
    p50_us: Option<f64>,
    p99_us: Option<f64>,
}

fn worst(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, y) => x.or(y),
    }
}

fn percentile_us(dir: &Value, pct: &str) -> Option<f64> {
    if let Some(ns) = dir
        .pointer("/clat_ns/percentile")
        .and_then(|p| p.get(pct))
        .and_then(Value::as_f64)
    {
        return Some(ns / 1000.0);
    }
    // fio 2.x: `clat` in microseconds.
    dir.pointer("/clat/percentile")
        .and_then(|p| p.get(pct))
        .and_then(Value::as_f64)
}

/// Parses fio JSON. `disk` names the disk in keys; without it the job's
/// device (`/dev/…` filename) or the job name is used.
pub fn parse(bytes: &[u8], disk: Option<&str>) -> Result<ToolResult, ParseError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| ParseError::new("fio", format!("not JSON: {e}")))?;
    if doc.get("fio version").is_none() {
        return Err(ParseError::new("fio", "no \"fio version\""));
    }
    let jobs = doc
        .get("jobs")
        .and_then(Value::as_array)
        .ok_or_else(|| ParseError::new("fio", "no \"jobs\" list"))?;
    let global_file = doc
        .pointer("/global options/filename")
        .and_then(Value::as_str);
    let mut out = ToolResult::default();
    let mut acc: BTreeMap<(String, &'static str), Acc> = BTreeMap::new();
    for (i, job) in jobs.iter().enumerate() {
        let jobname = job
            .get("jobname")
            .and_then(Value::as_str)
            .map(str::to_string)
            .unwrap_or_else(|| format!("job{i}"));
        let err = job.get("error").and_then(Value::as_i64).unwrap_or(0);
        if err != 0 {
            out.errors.push(format!("fio job {jobname}: error {err}"));
        }
        let file = job
            .pointer("/job options/filename")
            .and_then(Value::as_str)
            .or(global_file);
        let name = match (disk, file) {
            (Some(d), _) => d.to_string(),
            (None, Some(f)) if f.starts_with("/dev/") => device_name(f),
            _ => jobname.clone(),
        };
        for dir in ["read", "write"] {
            let Some(d) = job.get(dir) else { continue };
            let moved = ["io_bytes", "io_kbytes", "total_ios"]
                .iter()
                .filter_map(|k| d.get(*k).and_then(Value::as_f64))
                .any(|v| v > 0.0);
            if !moved {
                continue;
            }
            let bw = d
                .get("bw_bytes")
                .and_then(Value::as_f64)
                .or_else(|| d.get("bw").and_then(Value::as_f64).map(|kib| kib * 1024.0))
                .unwrap_or(0.0);
            let a = acc.entry((name.clone(), dir)).or_default();
            a.bw_bytes += bw;
            a.iops += d.get("iops").and_then(Value::as_f64).unwrap_or(0.0);
            a.p50_us = worst(a.p50_us, percentile_us(d, "50.000000"));
            a.p99_us = worst(a.p99_us, percentile_us(d, "99.000000"));
        }
    }
    for ((name, dir), a) in acc {
        let values = [
            ("bw_mbps", Some(a.bw_bytes / 1e6)),
            ("iops", Some(a.iops)),
            ("clat_p50_us", a.p50_us),
            ("clat_p99_us", a.p99_us),
        ];
        for (metric, v) in values {
            if let Some(m) =
                v.and_then(|v| Measured::new(Kind::Fio, format!("{name}/{dir}_{metric}"), v))
            {
                out.measurements.push(m);
            }
        }
    }
    if out.measurements.is_empty() && out.errors.is_empty() {
        out.errors
            .push("no job moved any data (see fio's stderr)".into());
    }
    Ok(out)
}
