//! The store: everything the coordinator persists, behind one narrow trait.
//!
//! [`Store`] speaks in domain operations (claim, finish a stage, append a
//! batch), each one transaction, so a PostgreSQL implementation can be added
//! beside [`sqlite::SqliteStore`] without touching the API or the gate.
//!
//! Never: run network calls, hashing, file writes or report rendering inside
//! a transaction. Callers compute those before or after and pass results in.
//! Methods block; async callers use `spawn_blocking`.

mod rows;
pub mod sqlite;

pub use crate::gate::{ClaimKind, ClaimRefusal, RunFacts};
pub use rows::{
    Breach, MetricsSnapshot, PassResult, PlotSeries, BREACHES_SHOWN, SENSOR_PLOT_KINDS,
    THROUGHPUT_PLOT_KINDS,
};

use common::event::{EventKind, EventLevel};
use common::inventory::FirmwareComponent;
use common::mac::Mac;
use common::profile::Profile;
use common::run_state::{RunEvent, RunState};
use common::spec::SpecDiff;
use common::stage::StageState;
use common::threshold::{Rule, Source};
use common::time::Timestamp;
use common::wire::{
    BatchAck, Event, HoldReport, Host, MeasurementBatch, Overrides, Power, QueuedRun, Run,
    RunDetail, StageFinish, StagePlan, WebhookDelivery,
};

/// Why a store operation did not happen. Each variant maps to one HTTP status.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("batch {got} does not follow the last accepted batch; expected {expected}")]
    BatchGap { got: u64, expected: u64 },
    #[error("{0}")]
    Invalid(String),
    /// A write for a run that has ended (Passed, Failed, Aborted, Cancelled).
    #[error("run {run_id} is {state}; a finished run takes nothing more")]
    RunFinished { run_id: i64, state: RunState },
    /// A per-run limit (series, artifacts) would be passed; `code` names it.
    #[error("{message}")]
    OverLimit { code: &'static str, message: String },
    /// The database failed (I/O, a constraint, a lock held too long); the
    /// backend's own error is the source.
    #[error("database: {0}")]
    Backend(#[source] BackendError),
    #[error("database holds a value this version does not understand: {0}")]
    Corrupt(String),
    #[error("migration {name}: {source}")]
    Migration {
        name: String,
        #[source]
        source: BackendError,
    },
}

/// A backend's own error, kept as the source of a [`StoreError`] without
/// naming the backend's type in the trait.
pub type BackendError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which threshold evaluations get a `threshold_evaluations` row. Passes
/// are counted in `threshold_counts` either way, so every reader (gate,
/// reports, `run show`, `/metrics`) answers the same under both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Evaluations {
    /// Breaches only (`passed = 0`): one row per sample instead of four.
    #[default]
    Breaches,
    /// The seed's row per evaluated sample, passes too.
    All,
}

impl std::str::FromStr for Evaluations {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "breaches" => Ok(Evaluations::Breaches),
            "all" => Ok(Evaluations::All),
            _ => Err(format!("{s:?}: want \"breaches\" or \"all\"")),
        }
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An `events` row to write.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub run_id: Option<i64>,
    pub host_id: Option<i64>,
    pub level: EventLevel,
    pub kind: EventKind,
    pub message: String,
    pub data: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event of a run (and its host, where known) without data.
    pub fn new(
        run_id: Option<i64>,
        host_id: Option<i64>,
        level: EventLevel,
        kind: EventKind,
        message: impl Into<String>,
    ) -> Self {
        NewEvent {
            run_id,
            host_id,
            level,
            kind,
            message: message.into(),
            data: None,
        }
    }
}

/// A host to register.
#[derive(Debug, Clone)]
pub struct NewHost {
    pub name: String,
    pub mac: Mac,
    /// `None`: no Wake-on-LAN (stored as '').
    pub wol: Option<(String, u16)>,
    pub expected_spec_yaml: String,
    pub notes: String,
}

/// A run to queue, with the thresholds it freezes.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub host_id: i64,
    pub profile: Profile,
    pub non_destructive: bool,
    pub overrides: Overrides,
    pub require_all_disks: bool,
    pub thresholds: Vec<(Rule, Source)>,
}

/// What the claim handed out.
#[derive(Debug, Clone)]
pub struct Claimed {
    pub run: Run,
    pub kind: ClaimKind,
    pub stages: Vec<StagePlan>,
    pub resume_from: u32,
    pub thresholds: Vec<Rule>,
    pub next_batch_seq: u64,
    pub overrides: Overrides,
}

/// A claim as the agent made it.
#[derive(Debug, Clone)]
pub struct ClaimAttempt {
    pub macs: Vec<Mac>,
    pub boot_id: String,
    /// The hash of the token the claim hands out if it wins.
    pub token_hash: String,
    /// The hash of the claim secret the agent carried, if any.
    pub secret_hash: Option<String>,
    /// The protocol the agent speaks, and its version, as it said.
    pub protocol_version: u32,
    pub agent_version: Option<String>,
    /// The caller's address, for a refusal's event.
    pub caller: String,
    /// A host-mode agent's claim: only this run, non-destructive.
    pub host_mode_run: Option<i64>,
}

impl ClaimAttempt {
    /// A claim without a secret by an agent of this build's protocol.
    pub fn new(macs: Vec<Mac>, boot_id: &str, token_hash: &str, caller: &str) -> Self {
        Self {
            macs,
            boot_id: boot_id.into(),
            token_hash: token_hash.into(),
            caller: caller.into(),
            secret_hash: None,
            protocol_version: common::wire::PROTOCOL_VERSION,
            agent_version: None,
            host_mode_run: None,
        }
    }
}

/// What a claim came to.
#[derive(Debug, Clone)]
pub enum ClaimOutcome {
    Claimed(Box<Claimed>),
    /// No queued or running run for any of the MACs.
    NothingQueued,
    /// Refused by the gate (`why`); the refusal's event was written.
    Refused {
        run_id: i64,
        why: ClaimRefusal,
        message: String,
    },
}

/// The stage result after the gate, and the run it left behind.
#[derive(Debug, Clone, PartialEq)]
pub struct StageResult {
    pub ordinal: u32,
    pub name: String,
    pub state: StageState,
    pub reasons: Vec<String>,
    pub facts: RunFacts,
}

/// Precomputed diffs for a stage the coordinator judges from data.
#[derive(Debug, Clone, Default)]
pub struct ComputedDiffs(pub Vec<SpecDiff>);

/// An artifact already written to disk, with digests computed outside any
/// transaction.
#[derive(Debug, Clone)]
pub struct NewArtifact {
    pub run_id: i64,
    pub stage_ordinal: Option<u32>,
    pub kind: String,
    pub path: String,
    pub sha256: String,
    pub blake3: String,
    pub size_bytes: i64,
}

/// A page of measurements: ids above `after`, at most `limit`, optionally one kind.
#[derive(Debug, Clone)]
pub struct MeasurementPage {
    pub kind: Option<String>,
    pub after: i64,
    pub limit: u32,
}

/// A webhook delivery the notifier should try now.
#[derive(Debug, Clone)]
pub struct DueDelivery {
    pub id: i64,
    pub url: String,
    pub event: String,
    pub payload_json: String,
    /// Attempts made before this one.
    pub attempts: u32,
}

/// Rows an operator can count to see that a refused request changed nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RowCounts(pub Vec<(String, i64)>);

/// One consistent read of everything a run report shows.
#[derive(Debug, Clone)]
pub struct ReportInputs {
    pub detail: RunDetail,
    pub host: Host,
    pub firmware: Vec<FirmwareComponent>,
    /// The first [`BREACHES_SHOWN`] failed evaluations.
    pub breaches: Vec<Breach>,
    pub breach_total: i64,
    /// Statistics of every measured series, by kind and key.
    pub stats: Vec<common::wire::SeriesStats>,
    /// fio and iperf pass results (interval series left out), each with the
    /// stage that measured it, in stage order: DiskPerf's and Burn's fio
    /// passes are different workloads and must not stand for each other.
    pub pass_results: Vec<PassResult>,
    /// Raw points of the plotted sensor series (empty unless asked for).
    pub plots: Vec<PlotSeries>,
}

/// Everything the coordinator persists. Each method is one transaction.
pub trait Store: Send + Sync + 'static {
    // Hosts.
    fn create_host(&self, host: &NewHost, now: Timestamp) -> StoreResult<Host>;
    fn update_host_spec(&self, name: &str, spec_yaml: &str, now: Timestamp) -> StoreResult<Host>;
    fn list_hosts(&self) -> StoreResult<Vec<Host>>;
    fn host(&self, name: &str) -> StoreResult<Host>;
    /// Replaces the host's host-mode token hash.
    fn set_host_token(&self, name: &str, token_hash: &str, now: Timestamp) -> StoreResult<Host>;
    /// Sets the hash of the host's claim secret ('' removes it).
    fn set_claim_secret(&self, name: &str, secret_hash: &str, now: Timestamp) -> StoreResult<Host>;
    /// Marks the host whose token hashes to `token_hash` as seen now; `None`
    /// when no host has that token.
    fn host_heartbeat(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Host, Option<QueuedRun>)>>;

    // Runs, operator side.
    fn create_run(&self, run: &NewRun, now: Timestamp) -> StoreResult<Run>;
    fn list_runs(&self) -> StoreResult<Vec<Run>>;
    /// Newest first: at most `limit` runs with an id below `before`.
    fn runs_page(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<Run>>;
    fn run(&self, run_id: i64) -> StoreResult<Run>;
    fn run_detail(&self, run_id: i64) -> StoreResult<RunDetail>;
    /// Cancel, abort or release. `power` goes with release.
    fn operator_transition(
        &self,
        run_id: i64,
        event: RunEvent,
        power: Option<Power>,
        now: Timestamp,
    ) -> StoreResult<Run>;
    fn ignore_diff(&self, run_id: i64, field: &str, now: Timestamp) -> StoreResult<usize>;
    fn record_event(&self, event: &NewEvent, now: Timestamp) -> StoreResult<()>;
    fn events(&self, run_id: i64) -> StoreResult<Vec<Event>>;
    /// Oldest first: at most `limit` of the run's events with an id above `after`.
    fn events_page(&self, run_id: i64, after: i64, limit: u32) -> StoreResult<Vec<Event>>;
    /// One page of a run's stored measurements, oldest first.
    fn measurements(
        &self,
        run_id: i64,
        page: &MeasurementPage,
    ) -> StoreResult<Vec<common::wire::Measurement>>;

    /// Every measured series of a run with its latest value (one indexed
    /// read of the summaries, however long the run).
    fn series(&self, run_id: i64) -> StoreResult<Vec<common::wire::SeriesStats>>;

    // Agent side.
    fn agent_token_hash(&self, run_id: i64) -> StoreResult<String>;
    /// Claims the run queued or running for the attempt's MACs, as the gate
    /// decides. Claims for MACs with no such run take no write lock.
    /// The run's stages as the coordinator has them (what an agent
    /// re-synchronises with after the coordinator lost data).
    fn stage_plan(&self, run_id: i64) -> StoreResult<Vec<common::wire::StagePlan>>;
    fn claim(&self, attempt: &ClaimAttempt, now: Timestamp) -> StoreResult<ClaimOutcome>;
    fn start_stage(
        &self,
        run_id: i64,
        ordinal: u32,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RunFacts>;
    fn finish_stage(
        &self,
        run_id: i64,
        ordinal: u32,
        report: &StageFinish,
        diffs: Option<ComputedDiffs>,
        now: Timestamp,
    ) -> StoreResult<StageResult>;
    /// Appends several runs' batches in one transaction (group commit),
    /// durable when this returns. Each batch is judged alone, in order: a
    /// refused one changes nothing and its neighbours are stored. The outer
    /// error is the group's (nothing of it was stored).
    fn append_batches(
        &self,
        group: &[(i64, &MeasurementBatch)],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<(BatchAck, RunFacts)>>>;
    /// One batch as a group of one.
    fn append_batch(
        &self,
        run_id: i64,
        batch: &MeasurementBatch,
        now: Timestamp,
    ) -> StoreResult<(BatchAck, RunFacts)> {
        self.append_batches(&[(run_id, batch)], now)?
            .pop()
            .unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "a group of one batch got no answer".into(),
                ))
            })
    }
    fn heartbeat(&self, run_id: i64, now: Timestamp) -> StoreResult<RunFacts>;
    fn facts(&self, run_id: i64) -> StoreResult<RunFacts>;
    fn record_firmware(
        &self,
        run_id: i64,
        components: &[FirmwareComponent],
        now: Timestamp,
    ) -> StoreResult<()>;
    fn firmware(&self, run_id: i64) -> StoreResult<Vec<FirmwareComponent>>;

    /// Runs by state, hosts' and running agents' last contact (`/metrics`).
    fn metrics_snapshot(&self) -> StoreResult<MetricsSnapshot>;

    // Webhooks.
    /// Makes the deliveries for holds and ends recorded since the last call.
    fn webhook_enqueue(&self, urls: &[String], now: Timestamp) -> StoreResult<usize>;
    fn webhooks_due(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<DueDelivery>>;
    /// One attempt's outcome; `next: None` after a failure makes a dead letter.
    fn webhook_attempted(
        &self,
        id: i64,
        outcome: Result<(), &str>,
        next: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()>;
    fn webhook_deliveries(&self, state: Option<&str>) -> StoreResult<Vec<WebhookDelivery>>;
    /// A dead letter back to pending, due now.
    fn webhook_retry(&self, id: i64, now: Timestamp) -> StoreResult<WebhookDelivery>;

    // Reports.
    /// Everything a report shows, in one read; the plotted series' points
    /// only with `plots` (the HTML needs them, report.json does not).
    fn report_inputs(&self, run_id: i64, plots: bool) -> StoreResult<ReportInputs>;
    /// Held or ended runs whose report is missing or older than their state.
    fn reports_due(&self) -> StoreResult<Vec<i64>>;
    /// Records rendered report files (report.json first: it becomes
    /// `report_path`) and the state they show.
    fn record_report(
        &self,
        artifacts: &[NewArtifact],
        rendered_at: RunState,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// An agent's upload: [`StoreError::RunFinished`] once the run ended,
    /// [`StoreError::OverLimit`] past 1,000 artifacts.
    fn record_agent_artifact(
        &self,
        artifact: &NewArtifact,
        now: Timestamp,
    ) -> StoreResult<common::wire::ArtifactInfo>;
    /// Whether any artifact row names the file at `path`.
    fn artifact_path_known(&self, path: &str) -> StoreResult<bool>;
    /// Whether [`Store::record_agent_artifact`] would take one more now.
    fn check_agent_artifact(&self, run_id: i64) -> StoreResult<()>;
    fn record_artifact(
        &self,
        artifact: &NewArtifact,
        now: Timestamp,
    ) -> StoreResult<common::wire::ArtifactInfo>;
    /// Path of the newest artifact of `kind` for the run.
    fn latest_artifact(
        &self,
        run_id: i64,
        kind: &str,
    ) -> StoreResult<Option<common::wire::ArtifactInfo>>;
    fn set_hold_key(
        &self,
        run_id: i64,
        public_key: &str,
        key_artifact: &NewArtifact,
        now: Timestamp,
    ) -> StoreResult<RunFacts>;
    /// The held host's address and SSH port (or why it has no SSH server).
    fn report_hold_ip(
        &self,
        run_id: i64,
        report: &HoldReport,
        now: Timestamp,
    ) -> StoreResult<RunFacts>;
    /// Artifact files every row of which was created before `cutoff`, none
    /// pruned yet and none the hold key of a held run.
    fn prune_candidates(&self, cutoff: Timestamp) -> StoreResult<Vec<String>>;
    /// Marks every row of `path` pruned (checking the conditions again) and
    /// writes a `prune` event per row; false when the file must stay.
    fn mark_pruned(&self, path: &str, cutoff: Timestamp, now: Timestamp) -> StoreResult<bool>;
    /// An event the run's agent reports (already validated).
    fn agent_event(
        &self,
        run_id: i64,
        level: EventLevel,
        kind: EventKind,
        message: &str,
        now: Timestamp,
    ) -> StoreResult<()>;
    /// The SSH port the held host reported, if any.
    fn hold_ssh_port(&self, run_id: i64) -> StoreResult<Option<u16>>;
    /// The agent's closing count: produced minus refused must match what
    /// was stored, else an error event. Taken once, also just after the run
    /// ended (the agent counts after the verdict); a repeat changes nothing
    /// and, once the run ended, is [`StoreError::RunFinished`].
    fn complete(
        &self,
        run_id: i64,
        count: &common::wire::RunComplete,
        now: Timestamp,
    ) -> StoreResult<(u64, RunFacts)>;
    /// Aborts running runs whose agent has been silent since `cutoff`.
    fn expire_silent_agents(&self, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>>;
    /// Ends holds that began before `cutoff`: Failed, power off, event.
    fn expire_holds(&self, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>>;

    /// Row count of every table (for tests and diagnostics).
    fn row_counts(&self) -> StoreResult<RowCounts>;
}
