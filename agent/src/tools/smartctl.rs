//! `smartctl --json=c -x DEVICE` (any `-j` output of smartctl 7.x).
//!
//! The exit status is a bit mask and is decoded here, not in the process
//! runner: a non-zero exit with valid JSON is normal. ATA attributes become
//! `<disk>/<id>_<name>` (raw value), the NVMe health log `<disk>/<field>`,
//! SCSI counters `<disk>/scsi_*`; `<disk>/smart_status_passed` is 1 or 0.

use std::time::Duration;

use serde_json::Value;

use super::{device_name, Measured, ParseError, ToolResult};
use common::inventory::DiskInfo;
use common::measurement::Kind;

use crate::exec::ToolCommand;

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
    exit_and_messages(smartctl, exit, &mut out);
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
    let failing_now = health(&doc, &name, &mut out);
    if !failing_now.is_empty() {
        out.notes.push(format!(
            "attributes failing now: {}",
            failing_now.join(", ")
        ));
    }
    // The newest self-test, when the log has one.
    match newest_self_test(&doc).and_then(self_test_outcome) {
        Some(SelfTestOutcome::Passed) => out.notes.push("newest self-test passed".into()),
        Some(SelfTestOutcome::Failed(why)) => {
            out.notes.push(format!("newest self-test FAILED: {why}"))
        }
        Some(SelfTestOutcome::Aborted(why)) => {
            out.notes.push(format!("newest self-test aborted: {why}"))
        }
        Some(SelfTestOutcome::Running) => out.notes.push("a self-test is running".into()),
        None => {}
    }
    Ok(out)
}

/// smartctl's own messages and its exit status bits: errors where smartctl
/// could not measure (bits 0 and 1), notes otherwise.
fn exit_and_messages(smartctl: &Value, exit: u64, out: &mut ToolResult) {
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
            // smartctl's own error messages say best why it could not measure.
            if severity == "error" && exit & 0b11 != 0 {
                out.errors.push(format!("smartctl: {s}"));
            } else {
                out.notes.push(format!("smartctl {severity}: {s}"));
            }
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
}

/// Every health value of the output as a `smart_attr` measurement of
/// `name`; returns the ATA attributes failing now.
fn health(doc: &Value, name: &str, out: &mut ToolResult) -> Vec<String> {
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
    failing_now
}

/// Which self-test a SMART stage runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelfTestKind {
    Short,
    Long,
}

impl SelfTestKind {
    /// The argument of `smartctl -t`.
    pub fn arg(self) -> &'static str {
        match self {
            SelfTestKind::Short => "short",
            SelfTestKind::Long => "long",
        }
    }
}

/// Whether a device can run self-tests, read from its `-x` output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfTestSupport {
    /// Supported; the device's own estimate of the duration, when it gives one.
    Supported { minutes: Option<u64> },
    /// Not supported, with the reason shown to the operator.
    Unsupported(String),
}

/// Reads self-test support from a `smartctl -x` document. ATA says so in
/// its capabilities; smartctl shows an NVMe self-test log only when the
/// controller supports Device Self-test (smartctl 7.4+); SCSI devices that
/// report a self-test log or duration support it.
pub fn self_test_support(doc: &Value, kind: SelfTestKind) -> SelfTestSupport {
    if let Some(ata) = doc.get("ata_smart_data") {
        return match ata
            .pointer("/capabilities/self_tests_supported")
            .and_then(Value::as_bool)
        {
            Some(true) => {
                let field = match kind {
                    SelfTestKind::Short => "short",
                    SelfTestKind::Long => "extended",
                };
                SelfTestSupport::Supported {
                    minutes: ata
                        .pointer(&format!("/self_test/polling_minutes/{field}"))
                        .and_then(Value::as_u64),
                }
            }
            _ => SelfTestSupport::Unsupported("the ATA device reports no self-test support".into()),
        };
    }
    if doc.get("nvme_smart_health_information_log").is_some() {
        return if doc.get("nvme_self_test_log").is_some() {
            SelfTestSupport::Supported { minutes: None }
        } else {
            SelfTestSupport::Unsupported(
                "no NVMe self-test log: the controller lacks Device Self-test, or smartctl is older than 7.4".into(),
            )
        };
    }
    let scsi_log = doc
        .as_object()
        .is_some_and(|o| o.keys().any(|k| k.starts_with("scsi_self_test_")));
    if scsi_log || doc.get("scsi_extended_self_test_seconds").is_some() {
        let minutes = match kind {
            SelfTestKind::Long => doc
                .get("scsi_extended_self_test_seconds")
                .and_then(Value::as_u64)
                .map(|s| s.div_ceil(60)),
            SelfTestKind::Short => None,
        };
        return SelfTestSupport::Supported { minutes };
    }
    SelfTestSupport::Unsupported("smartctl shows no self-test capability for this device".into())
}

/// Percent of a running self-test still to do, or `None` when none runs.
pub fn self_test_running(doc: &Value) -> Option<u64> {
    if let Some(st) = doc.pointer("/ata_smart_data/self_test/status") {
        let value = st.get("value").and_then(Value::as_u64).unwrap_or(0);
        return (value >> 4 == 0xF).then(|| {
            st.get("remaining_percent")
                .and_then(Value::as_u64)
                .unwrap_or((value & 0xF) * 10)
        });
    }
    if let Some(log) = doc.get("nvme_self_test_log") {
        let op = log
            .pointer("/current_self_test_operation/value")
            .and_then(Value::as_u64)
            .unwrap_or(0);
        return (op != 0).then(|| {
            100 - log
                .get("current_self_test_completion_percent")
                .and_then(Value::as_u64)
                .unwrap_or(0)
                .min(100)
        });
    }
    doc.pointer("/scsi_self_test_0/result/value")
        .and_then(Value::as_u64)
        .filter(|v| *v == 15)
        .map(|_| 100)
}

/// The result of one self-test log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelfTestOutcome {
    Passed,
    /// The device found an error; the text says what and where.
    Failed(String),
    /// Aborted or interrupted: says nothing about the medium.
    Aborted(String),
    Running,
}

/// The result the device recorded in one entry of its ATA, NVMe or SCSI
/// self-test log table.
pub fn self_test_outcome(entry: &Value) -> Option<SelfTestOutcome> {
    let text = |p: &str| entry.pointer(p).and_then(Value::as_str).unwrap_or("");
    let kind = [
        text("/type/string"),
        text("/self_test_code/string"),
        text("/code/string"),
    ]
    .into_iter()
    .find(|s| !s.is_empty())
    .unwrap_or("self-test")
    .to_string();
    // ATA: status.value, high nibble is the execution status.
    if let Some(status) = entry.get("status") {
        let value = status.get("value").and_then(Value::as_u64)?;
        let what = format!("{kind}: {}", text("/status/string"));
        let at = entry
            .get("lba")
            .and_then(Value::as_u64)
            .map(|l| format!(" at LBA {l}"))
            .unwrap_or_default();
        return Some(
            match (status.get("passed").and_then(Value::as_bool), value >> 4) {
                (_, 0xF) => SelfTestOutcome::Running,
                (Some(true), _) | (None, 0) => SelfTestOutcome::Passed,
                (_, 1 | 2) => SelfTestOutcome::Aborted(what),
                _ => SelfTestOutcome::Failed(format!("{what}{at}")),
            },
        );
    }
    // NVMe: self_test_result.value (NVMe base spec, Device Self-test log).
    if let Some(value) = entry
        .pointer("/self_test_result/value")
        .and_then(Value::as_u64)
    {
        let what = format!("{kind}: {}", text("/self_test_result/string"));
        let at = entry
            .get("lba")
            .and_then(Value::as_u64)
            .map(|l| format!(" at LBA {l}"))
            .unwrap_or_default();
        return Some(match value {
            0 => SelfTestOutcome::Passed,
            5..=7 => SelfTestOutcome::Failed(format!("{what}{at}")),
            0xF => SelfTestOutcome::Running,
            _ => SelfTestOutcome::Aborted(what),
        });
    }
    // SCSI: result.value (SPC self-test results log page).
    let value = entry.pointer("/result/value").and_then(Value::as_u64)?;
    let what = format!("{kind}: {}", text("/result/string"));
    Some(match value {
        0 => SelfTestOutcome::Passed,
        1 | 2 => SelfTestOutcome::Aborted(what),
        15 => SelfTestOutcome::Running,
        _ => SelfTestOutcome::Failed(what),
    })
}

/// The newest self-test log entry of a `-x` document (ATA extended or
/// standard log, NVMe log, SCSI `scsi_self_test_0`).
pub fn newest_self_test(doc: &Value) -> Option<&Value> {
    [
        "/ata_smart_self_test_log/extended/table/0",
        "/ata_smart_self_test_log/standard/table/0",
        "/nvme_self_test_log/table/0",
        "/scsi_self_test_0",
    ]
    .into_iter()
    .find_map(|p| doc.pointer(p))
}
/// `smartctl ARGS /dev/<disk>`.
pub fn command(args: &[&str], disk: &DiskInfo, timeout: Duration) -> ToolCommand {
    ToolCommand::new("smartctl", "smartmontools", timeout)
        .args(args.iter().copied())
        .arg(format!("/dev/{}", disk.name))
}
