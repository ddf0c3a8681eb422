//! `fio --output-format=json` (fio 2.x and 3.x).
//!
//! Per disk and direction: `<disk>/{read,write}_{bw_mbps,iops,clat_p50_us,
//! clat_p99_us}`, MB/s being 10^6 bytes/s. Jobs on the same disk are summed
//! (bandwidth, IOPS); their latency percentiles take the worst job. A
//! direction that moved no data yields nothing.
//!
//! With `--status-interval` fio prints a full JSON document at every status
//! report and the final one last, each with totals so far. The result comes
//! from the last; the bandwidth of each interval between reports becomes
//! `<disk>/{read,write}_interval_bw_mbps` (bytes moved over time run, summed
//! over the disk's jobs), placed by the reports' `timestamp_ms` (fio 3.x).

use std::collections::BTreeMap;
use std::time::Duration;

use crate::exec::ToolCommand;
use crate::interlock::WriteGrant;

use serde_json::Value;

use super::{device_name, Measured, ParseError, Timed, ToolResult};
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

/// The documents fio printed: one, or one per status report and the final
/// one last.
fn documents(bytes: &[u8]) -> Result<Vec<Value>, ParseError> {
    let docs = serde_json::Deserializer::from_slice(bytes)
        .into_iter::<Value>()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ParseError::new("fio", format!("not JSON: {e}")))?;
    if docs.is_empty() {
        return Err(ParseError::new("fio", "not JSON: empty output"));
    }
    for doc in &docs {
        if doc.get("fio version").is_none() {
            return Err(ParseError::new("fio", "no \"fio version\""));
        }
        if !doc.get("jobs").is_some_and(Value::is_array) {
            return Err(ParseError::new("fio", "no \"jobs\" list"));
        }
    }
    Ok(docs)
}

fn jobs(doc: &Value) -> &[Value] {
    doc.get("jobs")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

fn job_name(job: &Value, i: usize) -> String {
    job.get("jobname")
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| format!("job{i}"))
}

/// The name a job's keys start with: `disk` when given, else the job's
/// `/dev/…` file, else the job name.
fn device_of(doc: &Value, job: &Value, i: usize, disk: Option<&str>) -> String {
    let file = job
        .pointer("/job options/filename")
        .or_else(|| doc.pointer("/global options/filename"))
        .and_then(Value::as_str);
    match (disk, file) {
        (Some(d), _) => d.to_string(),
        (None, Some(f)) if f.starts_with("/dev/") => device_name(f),
        _ => job_name(job, i),
    }
}

/// Bytes a direction moved so far (`io_bytes`, or fio 2.x `io_kbytes`).
fn io_bytes(dir: &Value) -> Option<f64> {
    dir.get("io_bytes").and_then(Value::as_f64).or_else(|| {
        dir.get("io_kbytes")
            .and_then(Value::as_f64)
            .map(|k| k * 1024.0)
    })
}

/// Parses fio JSON. `disk` names the disk in keys; without it the job's
/// device (`/dev/…` filename) or the job name is used.
pub fn parse(bytes: &[u8], disk: Option<&str>) -> Result<ToolResult, ParseError> {
    let docs = documents(bytes)?;
    let mut out = ToolResult::default();
    if let Some(last) = docs.last() {
        summarize(last, disk, &mut out);
        out.series = intervals(&docs, disk);
    }
    if out.measurements.is_empty() && out.errors.is_empty() {
        out.errors
            .push("no job moved any data (see fio's stderr)".into());
    }
    Ok(out)
}

/// The final document's totals per disk and direction.
fn summarize(doc: &Value, disk: Option<&str>, out: &mut ToolResult) {
    let mut acc: BTreeMap<(String, &'static str), Acc> = BTreeMap::new();
    for (i, job) in jobs(doc).iter().enumerate() {
        let err = job.get("error").and_then(Value::as_i64).unwrap_or(0);
        if err != 0 {
            out.errors
                .push(format!("fio job {}: error {err}", job_name(job, i)));
        }
        let name = device_of(doc, job, i, disk);
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
}

/// Bandwidth between consecutive reports, per disk and direction, for the
/// directions that moved data by the end. A report without `timestamp_ms`
/// (fio 2.x) places nothing.
fn intervals(docs: &[Value], disk: Option<&str>) -> Vec<Timed> {
    let stamp = |d: &Value| d.get("timestamp_ms").and_then(Value::as_i64);
    let (Some(last), Some(end_ms)) = (docs.last(), docs.last().and_then(stamp)) else {
        return Vec::new();
    };
    let moved = |job: &Value, dir: &str| job.get(dir).and_then(io_bytes).is_some_and(|b| b > 0.0);
    let mut out = Vec::new();
    // Per (job, direction): bytes and run time (ms) at the previous report.
    let mut prev: BTreeMap<(usize, &str), (f64, f64)> = BTreeMap::new();
    for doc in docs {
        let Some(at) = stamp(doc) else { continue };
        let mut rates: BTreeMap<(String, &str), f64> = BTreeMap::new();
        for (i, job) in jobs(doc).iter().enumerate() {
            for dir in ["read", "write"] {
                if !jobs(last).get(i).is_some_and(|j| moved(j, dir)) {
                    continue;
                }
                let Some(d) = job.get(dir) else { continue };
                let bytes = io_bytes(d).unwrap_or(0.0);
                let ms = d.get("runtime").and_then(Value::as_f64).unwrap_or(0.0);
                let (b0, ms0) = prev.insert((i, dir), (bytes, ms)).unwrap_or((0.0, 0.0));
                if ms > ms0 && bytes >= b0 {
                    // bytes per ms / 1000 = 10^6 bytes per second.
                    *rates
                        .entry((device_of(doc, job, i, disk), dir))
                        .or_default() += (bytes - b0) / (ms - ms0) / 1000.0;
                }
            }
        }
        for ((name, dir), mbps) in rates {
            if let Some(m) =
                Measured::new(Kind::Fio, format!("{name}/{dir}_interval_bw_mbps"), mbps)
            {
                out.push(Timed {
                    before_end_ms: (end_ms - at).max(0),
                    measured: m,
                });
            }
        }
    }
    out
}
/// A time-based, direct, queue-depth-16 fio job over `device` for `secs`,
/// reporting its progress as it runs; `access` says what it does.
fn job(name: &str, device: &str, secs: u64, access: &[String]) -> ToolCommand {
    ToolCommand::new("fio", "fio", Duration::from_secs(secs + 60))
        .arg("--output-format=json")
        .arg(format!("--name={name}"))
        .arg(format!("--filename={device}"))
        .args(access.iter().cloned())
        .args([
            "--iodepth=16",
            "--ioengine=libaio",
            "--direct=1",
            "--time_based",
        ])
        .arg(format!("--runtime={secs}"))
        .arg(format!(
            "--status-interval={}",
            crate::stages::report_every(secs)
        ))
}

/// The fio command for a read-only pass over `/dev/<disk>`.
pub fn read_job(disk: &str, secs: u64, rw: &str, bs: &str) -> ToolCommand {
    let access = [
        "--readonly".to_string(),
        format!("--rw={rw}"),
        format!("--bs={bs}"),
    ];
    job(disk, &format!("/dev/{disk}"), secs, &access)
}

/// The fio command for a random-write pass over `/dev/<disk>` (destructive).
pub fn write_job(grant: &WriteGrant, secs: u64) -> ToolCommand {
    let access = ["--rw=randwrite".to_string(), "--bs=4k".to_string()];
    job(grant.disk(), &grant.device(), secs, &access)
}
