//! Run reports. [`build`] turns one consistent read of a run
//! ([`ReportInputs`]) into the `report.json` document: the verdict, the run
//! and host, the stage timeline with sub-steps, spec diffs, firmware, every
//! threshold with its breaches, kernel errors, per-disk SMART, per-disk fio
//! and per-NIC iperf tables, statistics per measured series, and what was
//! not tested and why. Schema: `docs/report.schema.json`.
//!
//! Never: read the store or touch the disk here ([`writer`] does, outside
//! any transaction), or put anything in a report that is not in the
//! database (no "generated at"): the same database gives the same bytes.

pub mod html;
pub mod lttb;
pub mod writer;

use serde::Serialize;
use serde_json::Value;

use common::event::EventKind;
use common::inventory::FirmwareComponent;
use common::run_state::{RunResult, RunState};
use common::stage::{Stage, StageReason, StageState};
use common::time::Timestamp;
use common::wire::{Event, SpecDiffRow, ThresholdRow};

use crate::store::ReportInputs;
pub use crate::store::{Breach, PassResult, BREACHES_SHOWN};

/// Bumped when a field changes meaning or goes away.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Pass,
    /// Passed, but something the run should have tested was not (a disk the
    /// interlock refused).
    PassIncomplete,
    Fail,
    /// Not decided: queued, running, or cancelled.
    None,
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub schema_version: u32,
    pub verdict: Verdict,
    pub run: RunSection,
    pub host: HostSection,
    /// The failing stage and why, when the run failed at one.
    pub failure: Option<Failure>,
    pub stages: Vec<StageSection>,
    pub spec_diffs: Vec<SpecDiffRow>,
    pub firmware: Vec<FirmwareComponent>,
    pub thresholds: Vec<ThresholdRow>,
    pub breaches: Breaches,
    pub kernel_errors: KernelErrors,
    pub smart: Vec<SubStepRow>,
    pub fio: Vec<ValueRow>,
    pub iperf: Vec<ValueRow>,
    pub series: Vec<SeriesStats>,
    pub not_tested: Vec<NotTested>,
    pub events: Vec<Event>,
}

#[derive(Debug, Serialize)]
pub struct RunSection {
    pub id: i64,
    pub state: RunState,
    pub result: Option<RunResult>,
    pub profile: String,
    pub non_destructive: bool,
    pub failed_stage: Option<Stage>,
    pub hold_ip: Option<String>,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub measurements: i64,
}

#[derive(Debug, Serialize)]
pub struct HostSection {
    pub name: String,
    pub mac: String,
    pub expected_spec_yaml: String,
}

#[derive(Debug, Serialize)]
pub struct Failure {
    pub stage: String,
    pub reasons: Vec<String>,
    /// Sub-steps of that stage that failed, with their reasons.
    pub sub_steps: Vec<SubStepRow>,
}

#[derive(Debug, Serialize)]
pub struct StageSection {
    pub name: String,
    pub ordinal: u32,
    pub state: StageState,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub seconds: Option<f64>,
    pub reasons: Vec<String>,
    pub summary: Value,
    pub sub_steps: Vec<SubStepRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct SubStepRow {
    pub stage: String,
    pub name: String,
    pub state: StageState,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    /// The agent's summary as it sent it (reasons, parsed tool output).
    pub summary: Value,
}

#[derive(Debug, Serialize)]
pub struct Breaches {
    pub total: i64,
    pub shown: Vec<Breach>,
}

#[derive(Debug, Serialize)]
pub struct KernelErrors {
    /// `kmsg` series: how many lines of each class and device.
    pub counts: Vec<SeriesStats>,
    /// The `kernel_error` events, with the kernel's line.
    pub lines: Vec<Event>,
}

/// One value from a table measurement (`<device>/<metric>`).
#[derive(Debug, Clone, Serialize)]
pub struct ValueRow {
    /// The stage whose pass measured it (DiskPerf, Network, Burn); none for
    /// a sample sent between stages.
    pub stage: Option<String>,
    pub device: String,
    pub metric: String,
    pub value: f64,
    pub unit: String,
}

/// Summary statistics of one measured series (kind and key).
pub use common::wire::SeriesStats;

#[derive(Debug, Serialize)]
pub struct NotTested {
    pub stage: String,
    /// The sub-step (disk, NIC) left out; none when the whole stage was.
    pub item: Option<String>,
    pub reason: String,
}

/// The verdict a run's state and events give.
pub fn verdict(state: RunState, events: &[Event]) -> Verdict {
    match state {
        RunState::Passed if events.iter().any(|e| e.kind == EventKind::PassIncomplete) => {
            Verdict::PassIncomplete
        }
        RunState::Passed => Verdict::Pass,
        RunState::Failed | RunState::FailedHolding | RunState::Aborted => Verdict::Fail,
        RunState::Queued | RunState::Running | RunState::Cancelled => Verdict::None,
    }
}

fn parse_object(text: Option<&str>) -> Value {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_else(|| Value::Object(Default::default()))
}

/// The gate's reasons, then the agent's own `reason` unless a gate reason
/// already carries it (the gate writes it as `agent: R` or `skipped: R`).
fn reasons_of(summary: &Value) -> Vec<String> {
    let mut out: Vec<String> = summary["reasons"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|r| r.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    if let Some(r) = summary["reason"].as_str() {
        if !out.iter().any(|x| StageReason::parse(x).carries(r)) {
            out.push(r.to_string());
        }
    }
    out
}

/// What a "not tested" line says: the first reason's cause (the list is of
/// what was skipped, so it does not say `skipped: ` again).
fn not_tested_reason(reasons: &[String]) -> String {
    reasons
        .first()
        .map_or_else(|| "skipped".to_string(), |r| StageReason::after_skipped(r))
}

fn seconds(start: Option<Timestamp>, end: Option<Timestamp>) -> Option<f64> {
    let (s, e) = (start?, end?);
    Some((e.unix_millis() - s.unix_millis()) as f64 / 1000.0)
}

/// The pass results of a kind, one row per stage, device and metric, in
/// stage order (interval series are plotted, not tabled: their last value
/// is one second's).
fn table(results: &[PassResult], kind: &str) -> Vec<ValueRow> {
    results
        .iter()
        .filter(|r| r.kind == kind)
        .filter_map(|r| {
            let (device, metric) = r.key.split_once('/')?;
            Some(ValueRow {
                stage: r.stage.clone(),
                device: device.to_string(),
                metric: metric.to_string(),
                value: r.value,
                unit: r.unit.clone(),
            })
        })
        .collect()
}

/// Builds the report; pure.
pub fn build(inputs: &ReportInputs) -> Report {
    let d = &inputs.detail;
    let run = &d.run;
    let mut stages = Vec::new();
    let mut not_tested = Vec::new();
    for s in &d.stages {
        let summary = parse_object(s.summary_json.as_deref());
        let reasons = reasons_of(&summary);
        let sub_steps: Vec<SubStepRow> = s
            .sub_steps
            .iter()
            .map(|x| SubStepRow {
                stage: s.name.clone(),
                name: x.name.clone(),
                state: x.state,
                started_at: x.started_at,
                completed_at: x.completed_at,
                summary: parse_object(Some(&x.summary_json)),
            })
            .collect();
        if s.state == StageState::Skipped {
            not_tested.push(NotTested {
                stage: s.name.clone(),
                item: None,
                reason: not_tested_reason(&reasons),
            });
        } else {
            for x in sub_steps.iter().filter(|x| x.state == StageState::Skipped) {
                not_tested.push(NotTested {
                    stage: s.name.clone(),
                    item: Some(x.name.clone()),
                    reason: not_tested_reason(&reasons_of(&x.summary)),
                });
            }
        }
        stages.push(StageSection {
            name: s.name.clone(),
            ordinal: s.ordinal,
            state: s.state,
            started_at: s.started_at,
            completed_at: s.completed_at,
            seconds: seconds(s.started_at, s.completed_at),
            reasons,
            summary,
            sub_steps,
        });
    }
    let failure = run.failed_stage.as_ref().and_then(|name| {
        let s = stages.iter().find(|s| s.name == name.name())?;
        Some(Failure {
            stage: name.to_string(),
            reasons: s.reasons.clone(),
            sub_steps: s
                .sub_steps
                .iter()
                .filter(|x| x.state == StageState::Failed)
                .cloned()
                .collect(),
        })
    });
    let smart = stages
        .iter()
        .filter(|s| s.name == "SMART")
        .flat_map(|s| s.sub_steps.iter().cloned())
        .collect();
    let series = inputs.stats.clone();
    Report {
        schema_version: SCHEMA_VERSION,
        verdict: verdict(run.state, &d.events),
        run: RunSection {
            id: run.id,
            state: run.state,
            result: run.result,
            profile: run.profile.as_str().to_string(),
            non_destructive: run.non_destructive,
            failed_stage: run.failed_stage,
            hold_ip: run.hold_ip.clone(),
            started_at: run.started_at,
            completed_at: run.completed_at,
            measurements: d.measurements,
        },
        host: HostSection {
            name: inputs.host.name.clone(),
            mac: inputs.host.mac.clone(),
            expected_spec_yaml: inputs.host.expected_spec_yaml.clone(),
        },
        failure,
        stages,
        spec_diffs: d.spec_diffs.clone(),
        firmware: inputs.firmware.clone(),
        thresholds: d.thresholds.clone(),
        breaches: Breaches {
            total: inputs.breach_total,
            shown: inputs.breaches.clone(),
        },
        kernel_errors: KernelErrors {
            counts: series
                .iter()
                .filter(|s| s.kind == "kmsg")
                .cloned()
                .collect(),
            lines: d
                .events
                .iter()
                .filter(|e| e.kind == EventKind::KernelError)
                .cloned()
                .collect(),
        },
        smart,
        fio: table(&inputs.pass_results, "fio"),
        iperf: table(&inputs.pass_results, "iperf"),
        series,
        not_tested,
        events: d.events.clone(),
    }
}

/// The report as the bytes stored and served: pretty JSON, one newline.
pub fn to_json(report: &Report) -> Vec<u8> {
    let mut bytes = serde_json::to_vec_pretty(report).expect("a report always serializes");
    bytes.push(b'\n');
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_agents_reason_is_listed_once() {
        let cases = [
            // The gate folded the agent's reason into its own.
            (
                json!({"reason": "no GPU", "reasons": ["skipped: no GPU"]}),
                vec!["skipped: no GPU"],
            ),
            (
                json!({"reason": "3 stressors failed", "reasons": ["agent: 3 stressors failed"]}),
                vec!["agent: 3 stressors failed"],
            ),
            // A reason the gate did not repeat is kept.
            (
                json!({"reason": "stopped by the agent", "reasons": ["run Aborted while the stage ran"]}),
                vec!["run Aborted while the stage ran", "stopped by the agent"],
            ),
            // A sub-step has only the agent's reason.
            (
                json!({"reason": "mounted at /mnt"}),
                vec!["mounted at /mnt"],
            ),
            (json!({}), vec![]),
        ];
        for (summary, want) in cases {
            assert_eq!(reasons_of(&summary), want, "{summary}");
        }
    }

    #[test]
    fn not_tested_says_why_without_repeating_skipped() {
        assert_eq!(
            not_tested_reason(&["skipped: non-destructive run".into()]),
            "non-destructive run"
        );
        assert_eq!(
            not_tested_reason(&["mounted at /mnt".into()]),
            "mounted at /mnt"
        );
        assert_eq!(not_tested_reason(&[]), "skipped");
    }
}
