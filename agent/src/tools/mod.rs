//! One module per tool: the command lines the stages run (as
//! `ToolCommand` data) and the parser of what the tool printed, returning
//! normalized measurements plus what the tool itself reported as an error.
//!
//! Never: scrape human text where a structured form exists, panic on any
//! input, or read files or spawn processes (that is the stage executors'
//! and `exec.rs`'s).

pub mod badblocks;
pub mod ethtool;
pub mod fio;
pub mod interrupts;
pub mod iperf3;
pub mod ipmitool;
pub mod kmsg;
pub mod memtester;
pub mod nvidia_smi;
pub mod smartctl;
pub mod stress_ng;
pub mod wipefs;

use serde::Serialize;

use common::measurement::Kind;
use common::profile::Profile;
use common::stage::Stage;
use common::threshold::Severity;

/// The value of a `key: value` line (ethtool, ipmitool): trimmed, and
/// `None` where it is empty or `N/A`.
pub fn colon_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == key)
            .then(|| v.trim())
            .filter(|v| !v.is_empty() && *v != "N/A")
    })
}

/// One normalized measurement.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Measured {
    pub kind: Kind,
    pub key: String,
    pub value: f64,
    pub unit: &'static str,
}

impl Measured {
    pub fn new(kind: Kind, key: String, value: f64) -> Option<Measured> {
        let unit = kind.unit_for_key(&key).unwrap_or("");
        value.is_finite().then_some(Measured {
            kind,
            key,
            value,
            unit,
        })
    }
}

/// One measurement a tool reported while it ran (fio's status reports,
/// iperf3's intervals), placed in time relative to the tool's last report,
/// so the executor anchors it on its own clock when the tool has ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Timed {
    /// How long before the tool's last report this one was made.
    pub before_end_ms: i64,
    #[serde(flatten)]
    pub measured: Measured,
}

/// What a tool run yielded: measurements, and problems the tool reported
/// that mean it could not measure.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ToolResult {
    pub measurements: Vec<Measured>,
    /// Throughput over time (`…interval…` keys), oldest first.
    pub series: Vec<Timed>,
    /// The tool could not measure (smartctl exit bits 0–1, fio job error,
    /// iperf3 `error`, …).
    pub errors: Vec<String>,
    /// Facts worth showing that are not failures by themselves.
    pub notes: Vec<String>,
}

/// Why bytes are not output of the tool.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not {tool} output: {detail}")]
pub struct ParseError {
    pub tool: &'static str,
    pub detail: String,
}

impl ParseError {
    pub fn new(tool: &'static str, detail: impl Into<String>) -> Self {
        Self {
            tool,
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Fail,
    Error,
}

/// `vet-agent parse` output.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Judged {
    pub verdict: Verdict,
    pub reasons: Vec<String>,
    pub measurements: Vec<Measured>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub series: Vec<Timed>,
}

/// Judges a tool result by the `quick` profile's default thresholds for
/// `stage`: error when the tool could not measure, fail when a critical
/// default is breached, pass otherwise (warnings listed as reasons).
pub fn judge(stage: Stage, result: ToolResult) -> Judged {
    let rules = Profile::Quick.definition().default_thresholds();
    let mut reasons = result.errors.clone();
    let mut failed = false;
    for m in &result.measurements {
        for r in rules.iter().filter(|r| r.applies_to(stage, m.kind, &m.key)) {
            if !r.passes(m.value) {
                let what = match r.severity {
                    Severity::Critical => {
                        failed = true;
                        "critical"
                    }
                    Severity::Warning => "warning",
                };
                reasons.push(format!(
                    "{what}: {} = {} (must be {} {})",
                    m.key,
                    m.value,
                    r.op.as_str(),
                    r.threshold
                ));
            }
        }
    }
    reasons.extend(result.notes.iter().cloned());
    let verdict = if !result.errors.is_empty() {
        Verdict::Error
    } else if failed {
        Verdict::Fail
    } else {
        Verdict::Pass
    };
    Judged {
        verdict,
        reasons,
        measurements: result.measurements,
        series: result.series,
    }
}

/// The last path component of a device path (`/dev/sda` → `sda`).
pub fn device_name(path: &str) -> String {
    path.rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(path)
        .to_string()
}
