//! `smartctl --json=c -x DEVICE` (any `-j` output of smartctl 7.x).
//!
//! The exit status is a bit mask and is decoded here, not in the process
//! runner: a non-zero exit with valid JSON is normal. ATA attributes become
//! `<disk>/<id>_<name>` (raw value), the NVMe health log `<disk>/<field>`,
//! SCSI counters `<disk>/scsi_*`; `<disk>/smart_status_passed` is 1 or 0.

use serde_json::Value;

use super::{device_name, Measured, ParseError, ToolResult};
use common::measurement::Kind;

/// Meaning of each bit of smartctl's exit status (smartctl(8)).
pub const EXIT_BITS: [&str; 8] = [
    "command line did not parse",
    "device open failed or device did not return identify data",
    "a SMART or other ATA command to the disk failed, or a checksum error",
    "SMART status check returned DISK FAILING",
    "prefail attributes are at or below their threshold",
    "some attributes were at or below their threshold in the past",
    "the device error log contains records of errors",
    "the device self-test log contains records of errors",
];

/// Decodes an exit status into the meanings of its set bits.
pub fn decode_exit(status: u64) -> Vec<(u8, &'static str)> {
    (0..8u8)
        .filter(|b| status & (1 << b) != 0)
        .map(|b| (b, EXIT_BITS[b as usize]))
        .collect()
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

/// Parses smartctl JSON. `disk` names the disk in keys; without it the
/// device name from the output is used.
pub fn parse(bytes: &[u8], disk: Option<&str>) -> Result<ToolResult, ParseError> {
    let doc: Value = serde_json::from_slice(bytes)
        .map_err(|e| ParseError::new("smartctl", format!("not JSON: {e}")))?;
    let smartctl = doc
        .get("smartctl")
        .filter(|s| s.is_object())
        .ok_or_else(|| ParseError::new("smartctl", "no \"smartctl\" object"))?;
    let exit = smartctl
        .get("exit_status")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    let mut out = ToolResult::default();
    for m in smartctl
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        if let Some(s) = m.get("string").and_then(Value::as_str) {
            let severity = m
                .get("severity")
                .and_then(Value::as_str)
                .unwrap_or("information");
            out.notes.push(format!("smartctl {severity}: {s}"));
        }
    }
    for (bit, meaning) in decode_exit(exit) {
        let line = format!("exit status bit {bit}: {meaning}");
        if bit <= 1 {
            out.errors.push(line);
        } else {
            out.notes.push(line);
        }
    }
    let name = disk.map(str::to_string).or_else(|| {
        doc.pointer("/device/name")
            .and_then(Value::as_str)
            .map(device_name)
    });
    let has_health = [
        "smart_status",
        "ata_smart_attributes",
        "nvme_smart_health_information_log",
        "scsi_grown_defect_list",
        "scsi_error_counter_log",
    ]
    .iter()
    .any(|k| doc.get(*k).is_some());
    let Some(name) = name.filter(|_| has_health) else {
        if out.errors.is_empty() {
            out.errors.push(if doc.get("device").is_some() {
                "no SMART health data in the output (device does not support SMART?)".into()
            } else {
                "no device data in the output".into()
            });
        }
        return Ok(out);
    };
    let mut push = |field: String, value: Option<f64>| {
        if let Some(m) =
            value.and_then(|v| Measured::new(Kind::SmartAttr, format!("{name}/{field}"), v))
        {
            out.measurements.push(m);
        }
    };
    if let Some(passed) = doc.pointer("/smart_status/passed").and_then(Value::as_bool) {
        push(
            "smart_status_passed".into(),
            Some(if passed { 1.0 } else { 0.0 }),
        );
    }
    if let Some(t) = doc.pointer("/temperature/current").and_then(num) {
        push("temperature".into(), Some(t));
    }
    // ATA attributes: raw values by id and name.
    let mut failing_now = Vec::new();
    for a in doc
        .pointer("/ata_smart_attributes/table")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let (Some(id), Some(attr)) = (
            a.get("id").and_then(Value::as_u64),
            a.get("name").and_then(Value::as_str),
        ) else {
            continue;
        };
        push(
            format!("{id}_{attr}"),
            a.pointer("/raw/value").and_then(num),
        );
        if a.get("when_failed").and_then(Value::as_str) == Some("now") {
            failing_now.push(format!("{id} {attr}"));
        }
    }
    // NVMe health log: every numeric field, sensors numbered, spare margin derived.
    if let Some(log) = doc
        .get("nvme_smart_health_information_log")
        .and_then(Value::as_object)
    {
        for (field, v) in log {
            match v {
                Value::Number(_) => push(field.clone(), num(v)),
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        push(
                            format!("{}_{}", field.trim_end_matches('s'), i + 1),
                            num(item),
                        );
                    }
                }
                _ => {}
            }
        }
        if let (Some(spare), Some(thresh)) = (
            log.get("available_spare").and_then(num),
            log.get("available_spare_threshold").and_then(num),
        ) {
            push("available_spare_margin".into(), Some(spare - thresh));
        }
    }
    // SCSI: grown defects and uncorrected errors per direction.
    if let Some(g) = doc.get("scsi_grown_defect_list").and_then(num) {
        push("scsi_grown_defect_list".into(), Some(g));
    }
    for dir in ["read", "write", "verify"] {
        let p = format!("/scsi_error_counter_log/{dir}/total_uncorrected_errors");
        if let Some(v) = doc.pointer(&p).and_then(num) {
            push(format!("scsi_{dir}_uncorrected_errors"), Some(v));
        }
    }
    if !failing_now.is_empty() {
        out.notes.push(format!(
            "attributes failing now: {}",
            failing_now.join(", ")
        ));
    }
    // The newest self-test, when the log has one.
    let newest = doc
        .pointer("/ata_smart_self_test_log/standard/table/0")
        .or_else(|| doc.pointer("/nvme_self_test_log/table/0"));
    if let Some(t) = newest {
        let passed = t
            .pointer("/status/passed")
            .and_then(Value::as_bool)
            .or_else(|| {
                t.pointer("/self_test_result/value")
                    .and_then(Value::as_u64)
                    .map(|v| v == 0)
            });
        if let Some(p) = passed {
            out.notes.push(format!(
                "newest self-test {}",
                if p { "passed" } else { "FAILED" }
            ));
        }
    }
    Ok(out)
}
