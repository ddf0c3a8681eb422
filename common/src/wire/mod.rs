//! `/api/v1` request and response bodies: the only types that cross HTTP.
//!
//! Field names of operator-facing objects (hosts, runs, stages, events) are
//! the seed's column names, so `vetctl --json` prints what the database holds.

use serde::{Deserialize, Serialize};

use crate::event::{EventKind, EventLevel};
use crate::inventory::FirmwareComponent;
use crate::mac::Mac;
use crate::measurement::Sample;
use crate::profile::Profile;
use crate::run_state::{RunResult, RunState};
use crate::stage::{Stage, StageState};
use crate::time::Timestamp;

mod claim;
pub use claim::*;

pub const API_PREFIX: &str = "/api/v1";

/// Error body of every 4xx/5xx answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    /// With code `batch_gap`: the batch number the coordinator expects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_seq: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Health {
    pub status: String,
    pub version: String,
    pub time: Timestamp,
}

/// Power action attached to `release` and `done`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Power {
    #[default]
    None,
    Poweroff,
    Reboot,
}

impl Power {
    pub fn as_str(self) -> &'static str {
        match self {
            Power::None => "none",
            Power::Poweroff => "poweroff",
            Power::Reboot => "reboot",
        }
    }
}

/// What the agent must do next: the answer to every stage report, heartbeat
/// and batch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "directive", rename_all = "snake_case")]
pub enum Directive {
    Continue,
    Wait {
        secs: u64,
    },
    /// Hold the host for SSH until `until` (coordinator time): then the
    /// agent removes the key and stops the SSH server it started on its
    /// own, even with the coordinator gone.
    Hold {
        public_key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<Timestamp>,
    },
    AbortStage {
        reason: String,
    },
    Release {
        power: Power,
    },
    Done {
        power: Power,
    },
}

// ---- agent side -----------------------------------------------------------

/// `POST /host/heartbeat` (host token): a host-mode agent is alive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostHeartbeat {
    pub boot_id: String,
    pub macs: Vec<Mac>,
    pub agent_version: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostHeartbeatAck {
    pub host: String,
    pub server_time: Timestamp,
    /// Seconds until the next heartbeat.
    pub interval_s: u64,
    /// A run queued for this host, if any: the agent claims it when it is
    /// non-destructive and runs it in place.
    #[serde(default)]
    pub queued_run: Option<QueuedRun>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct QueuedRun {
    pub run_id: i64,
    pub non_destructive: bool,
}

/// `POST /hosts/{name}/token` (operator): a new host-mode token. Shown once;
/// only its hash is stored, and it replaces any earlier one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostToken {
    pub host: String,
    pub token: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Overrides {
    /// Lets destructive stages write over a partition table or filesystem
    /// signature. Never lifts any other refusal.
    #[serde(default)]
    pub wipe: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StagePlan {
    pub ordinal: u32,
    pub name: String,
    pub state: StageState,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Iperf3Servers {
    /// Address the agent connects to; `None` means the coordinator's own host.
    pub host: Option<String>,
    pub ports: Vec<u16>,
}

/// Outcome of a stage as the agent saw it. The coordinator decides the final
/// state: a `passed` stage with a critical breach still fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum StageOutcome {
    Passed,
    Failed,
    Skipped,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SubStepReport {
    pub ordinal: u32,
    pub name: String,
    pub state: StageState,
    /// The device the sub-step tested (`sda`, `eth0`), when it tested one:
    /// the coordinator fails the sub-step whose device a critical breach's
    /// key names (`sda/bad_blocks`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub completed_at: Option<Timestamp>,
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
}

impl SubStepReport {
    /// The summary of a sub-step the destructive-test interlock refused; the
    /// coordinator turns it into an `interlock_refused` event.
    pub fn interlock_refusal_summary(reason: &str) -> serde_json::Value {
        serde_json::json!({"interlock": true, "reason": reason})
    }

    /// Why the interlock refused this sub-step, if it did.
    pub fn interlock_refusal(&self) -> Option<&str> {
        let s = self.summary.as_ref()?;
        if s.get("interlock")?.as_bool()? {
            Some(
                s.get("reason")
                    .and_then(|r| r.as_str())
                    .unwrap_or("refused"),
            )
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StageStart {
    #[serde(default)]
    pub at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StageFinish {
    pub outcome: StageOutcome,
    /// A skip because there is nothing of the kind to test (no GPU, no disk
    /// or NIC selected) or the run's plan leaves the stage out (a
    /// non-destructive run). Any other skip (every disk unreadable, no
    /// iperf3 server) leaves the run at best `pass-incomplete`.
    #[serde(default)]
    pub absent: bool,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub at: Option<Timestamp>,
    #[serde(default)]
    pub summary: Option<serde_json::Value>,
    #[serde(default)]
    pub sub_steps: Vec<SubStepReport>,
}

impl StageFinish {
    /// A report of `outcome` alone: no reason, summary or sub-steps.
    pub fn of(outcome: StageOutcome) -> Self {
        StageFinish {
            outcome,
            absent: false,
            reason: None,
            at: None,
            summary: None,
            sub_steps: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StageVerdict {
    pub ordinal: u32,
    pub name: String,
    pub state: StageState,
    /// Why the stage failed (agent reason, critical breaches, spec diffs).
    pub reasons: Vec<String>,
    pub directive: Directive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MeasurementBatch {
    /// 1, 2, 3, … per run.
    pub seq: u64,
    pub samples: Vec<Sample>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct BatchAck {
    pub seq: u64,
    pub stored: u64,
    /// True when this batch had been stored before (a resend).
    pub duplicate: bool,
    pub directive: Directive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Heartbeat {
    #[serde(default)]
    pub stage: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct DirectiveResponse {
    pub state: RunState,
    pub directive: Directive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareReport {
    pub components: Vec<FirmwareComponent>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HoldReport {
    pub hold_ip: String,
    /// Where the held host's SSH server listens.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    /// Why the held host has no SSH server, when it has none.
    #[serde(default)]
    pub ssh_error: Option<String>,
}

/// `POST /runs/{id}/events` (run token): something the agent saw that an
/// operator must find in `run show`: `kernel_error`, `tool_missing`,
/// `tool_timeout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct AgentEvent {
    /// One of [`EventKind::FROM_AGENT`].
    pub kind: EventKind,
    pub level: EventLevel,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct EventAck {
    pub recorded: bool,
}

/// Sent once at the end: how many samples the agent produced in total, and
/// how many of them the coordinator refused because the run had already
/// ended (`run_finished`), which it therefore never stored. Any other
/// difference from what was stored is a loss, an error event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RunComplete {
    pub samples_produced: u64,
    #[serde(default)]
    pub samples_refused: u64,
}

/// The coordinator's count next to the agent's; a mismatch is an error event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct CompleteAck {
    pub samples_produced: u64,
    pub samples_stored: u64,
    pub state: RunState,
    pub directive: Directive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct FirmwareAck {
    pub stored: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ArtifactInfo {
    pub id: i64,
    pub run_id: i64,
    pub stage_id: Option<i64>,
    pub kind: String,
    pub path: String,
    pub sha256: String,
    pub blake3: String,
    pub size_bytes: i64,
}

// ---- operator side --------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostCreate {
    pub name: String,
    pub mac: Mac,
    /// `IP` or `IP:PORT` for the Wake-on-LAN packet; absent → none is sent.
    #[serde(default)]
    pub wol_broadcast: Option<String>,
    #[serde(default)]
    pub expected_spec_yaml: Option<String>,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HostUpdate {
    pub expected_spec_yaml: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Host {
    pub id: i64,
    pub name: String,
    pub mac: String,
    pub wol_broadcast_ip: String,
    pub wol_port: u16,
    pub expected_spec_yaml: String,
    pub notes: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_seen_at: Option<Timestamp>,
    /// The host has a claim secret (never the secret itself).
    #[serde(default)]
    pub claim_secret: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RunCreate {
    pub host: String,
    #[serde(default = "default_profile")]
    pub profile: Profile,
    #[serde(default)]
    pub non_destructive: bool,
    #[serde(default)]
    pub overrides: Overrides,
    #[serde(default)]
    pub require_all_disks: bool,
}

fn default_profile() -> Profile {
    Profile::Quick
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Run {
    pub id: i64,
    pub host_id: i64,
    pub host: String,
    pub state: RunState,
    pub result: Option<RunResult>,
    pub failed_stage: Option<Stage>,
    pub next_boot_target: Option<String>,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    pub report_path: Option<String>,
    pub hold_ip: Option<String>,
    pub override_flags_json: Option<String>,
    pub non_destructive: bool,
    pub profile: Profile,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SubStep {
    pub id: i64,
    pub ordinal: u32,
    pub name: String,
    pub state: StageState,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub summary_json: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct StageView {
    pub id: i64,
    pub name: String,
    pub ordinal: u32,
    pub state: StageState,
    pub started_at: Option<Timestamp>,
    pub completed_at: Option<Timestamp>,
    pub summary_json: Option<String>,
    pub sub_steps: Vec<SubStep>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Event {
    pub id: i64,
    pub run_id: Option<i64>,
    pub host_id: Option<i64>,
    pub ts: Timestamp,
    pub level: EventLevel,
    pub kind: EventKind,
    pub message: String,
    pub data_json: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SpecDiffRow {
    pub id: i64,
    pub field: String,
    pub expected: Option<String>,
    pub actual: Option<String>,
    pub severity: String,
    pub ignored: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ThresholdRow {
    pub id: i64,
    pub stage_name: String,
    pub kind: String,
    pub key: String,
    pub op: String,
    pub threshold: f64,
    pub nominal: f64,
    pub unit: String,
    pub severity: String,
    pub source: String,
    /// Samples evaluated against this rule, and how many breached it.
    pub evaluated: i64,
    pub breaches: i64,
}

/// `GET /runs/{id}`: one run with everything an operator reads.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct RunDetail {
    #[serde(flatten)]
    pub run: Run,
    pub stages: Vec<StageView>,
    pub events: Vec<Event>,
    pub spec_diffs: Vec<SpecDiffRow>,
    pub thresholds: Vec<ThresholdRow>,
    pub measurements: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReleaseRequest {
    #[serde(default)]
    pub power: Power,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IgnoreDiffRequest {
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct IgnoreDiffAck {
    pub run_id: i64,
    pub field: String,
    /// Existing spec_diffs rows marked ignored (0 when SpecValidate is still to come).
    pub marked: u64,
}

/// `GET /runs/{id}/hold-key`: what an engineer needs to log into a held host.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct HoldKey {
    pub run_id: i64,
    /// OpenSSH private key.
    pub private_key: String,
    pub hold_ip: Option<String>,
    /// The held host's SSH port, when its agent reported one.
    #[serde(default)]
    pub ssh_port: Option<u16>,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct Measurement {
    pub id: i64,
    pub stage_id: Option<i64>,
    pub ts: Timestamp,
    pub kind: String,
    pub key: String,
    pub value: Option<f64>,
    pub unit: Option<String>,
}

/// `GET /runs/{id}/series`: what is known of one measured series (kind and
/// key) of a run, kept up to date by every batch: a live view reads the
/// latest values here instead of paging through every sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct SeriesStats {
    pub kind: String,
    pub key: String,
    pub unit: String,
    pub count: i64,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// The latest value in time.
    pub last: f64,
    pub first_ts: Timestamp,
    pub last_ts: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_are_tagged() {
        let cases = [
            (Directive::Continue, r#"{"directive":"continue"}"#),
            (
                Directive::Wait { secs: 5 },
                r#"{"directive":"wait","secs":5}"#,
            ),
            (
                Directive::Hold {
                    public_key: "ssh-ed25519 AAAA".into(),
                    until: None,
                },
                r#"{"directive":"hold","public_key":"ssh-ed25519 AAAA"}"#,
            ),
            (
                Directive::Hold {
                    public_key: "ssh-ed25519 AAAA".into(),
                    until: Some(Timestamp::from_unix_millis(1_795_000_000_000)),
                },
                r#"{"directive":"hold","public_key":"ssh-ed25519 AAAA","until":"2026-11-18T11:06:40.000Z"}"#,
            ),
            (
                Directive::AbortStage {
                    reason: "hot".into(),
                },
                r#"{"directive":"abort_stage","reason":"hot"}"#,
            ),
            (
                Directive::Release {
                    power: Power::Poweroff,
                },
                r#"{"directive":"release","power":"poweroff"}"#,
            ),
            (
                Directive::Done { power: Power::None },
                r#"{"directive":"done","power":"none"}"#,
            ),
        ];
        for (d, json) in cases {
            assert_eq!(serde_json::to_string(&d).unwrap(), json);
            assert_eq!(serde_json::from_str::<Directive>(json).unwrap(), d);
        }
    }

    #[test]
    fn claim_refuses_bad_macs() {
        assert!(serde_json::from_str::<ClaimRequest>(
            r#"{"macs":["52:54:00:12:34:56"],"boot_id":"b"}"#
        )
        .is_ok());
        assert!(
            serde_json::from_str::<ClaimRequest>(r#"{"macs":["nope"],"boot_id":"b"}"#).is_err()
        );
        assert!(serde_json::from_str::<ClaimRequest>(
            r#"{"macs":"52:54:00:12:34:56","boot_id":"b"}"#
        )
        .is_err());
    }
}

/// The webhook event a run entering `state` sends: a hold or an end.
pub fn webhook_event(state: RunState) -> Option<&'static str> {
    match state {
        RunState::FailedHolding => Some("held"),
        RunState::Passed => Some("passed"),
        RunState::Failed => Some("failed"),
        RunState::Aborted => Some("aborted"),
        RunState::Cancelled => Some("cancelled"),
        _ => None,
    }
}

/// The JSON body POSTed to every configured webhook URL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookPayload {
    /// `held`, `passed`, `failed`, `aborted` or `cancelled`.
    pub event: String,
    pub run_id: i64,
    pub host: String,
    pub profile: String,
    /// The state the run entered, and the one it left.
    pub state: RunState,
    pub previous_state: RunState,
    /// When it changed (the transition event's time).
    pub at: Timestamp,
    /// The first failed stage and why, when there is one.
    pub failed_stage: Option<String>,
    pub failure_reason: Option<String>,
    /// Where the report is (relative to the coordinator's URL).
    pub report_html: String,
}

/// Delivery states: `pending` (will be tried at `next_attempt_at`),
/// `delivered`, `dead` (out of attempts; `vetctl webhook retry` revives it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct WebhookDelivery {
    pub id: i64,
    pub run_id: i64,
    pub url: String,
    pub event: String,
    pub state: String,
    pub attempts: u32,
    pub next_attempt_at: Timestamp,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub delivered_at: Option<Timestamp>,
}
