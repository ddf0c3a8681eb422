//! Stage executors, one file per stage. Each runs its tools through
//! `exec`, streams measurements through the uplink tagged with its ordinal,
//! and reports what it saw. The coordinator's gate decides the stage from
//! the thresholds; an executor reports `failed` when a tool could not do
//! its job, and today also where the tool's own finding is the verdict
//! (bad blocks, a WipeProbe mismatch, a failed self-test entry, memtester
//! errors), which is to move to the gate as reported facts.
//!
//! Never: write to a disk without a `WriteGrant` (only the destructive
//! passes ask for one, and the interlock gives it for a destructive run's
//! allowed disk moments before the write); or run a tool without a timeout.

mod burn;
mod cpu_stress;
mod destructive;
mod disk_perf;
mod disk_surface;
mod firmware;
mod gpu;
mod inventory;
mod memory;
mod network;
mod smart;
mod wipe_probe;

use crate::interlock::{self, NoGrant, WriteGrant};
use common::event::{EventKind, EventLevel};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use common::inventory::{DiskInfo, Inventory, NicInfo};
use common::measurement::{Finite, Kind, Sample};
use common::stage::{Stage, StageState};
use common::time::Timestamp;
use common::wire::{ClaimResponse, StageOutcome, SubStepReport};

use crate::exec::{self, ToolCommand, ToolError, ToolOutput};
use crate::host::Roots;
use crate::tools::ToolResult;
use crate::uplink::{Client, Uplink};

/// The coordinator's clock as seen from here: local time plus an offset
/// measured at the claim (new servers often have wrong clocks).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ms: i64,
}

impl Clock {
    pub fn from_claim(coordinator_time: Timestamp) -> Self {
        Clock {
            offset_ms: coordinator_time.unix_millis() - chrono::Utc::now().timestamp_millis(),
        }
    }

    pub fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(chrono::Utc::now().timestamp_millis() + self.offset_ms)
    }
}

/// Everything a stage executor needs.
pub struct StageCtx {
    pub stage: Stage,
    pub claim: Arc<ClaimResponse>,
    pub uplink: Uplink,
    pub client: Arc<Client>,
    pub clock: Clock,
    pub roots: Roots,
    /// The machine as selected at boot (`--disks`, `--nics`).
    pub inventory: Inventory,
    pub work_dir: PathBuf,
    /// Fired on `abort_stage`, with the coordinator's reason.
    pub abort: StageAbort,
}

/// The coordinator's order to stop one stage now: fired at most once, and
/// its reason is set before anyone waiting on it wakes.
#[derive(Clone, Default)]
pub struct StageAbort {
    token: CancellationToken,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl StageAbort {
    /// Fires the abort; returns false when it had fired already.
    pub fn fire(&self, reason: String) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    pub fn is_fired(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why the stage was aborted ('' before it was).
    pub fn reason(&self) -> String {
        self.reason.get().cloned().unwrap_or_default()
    }

    /// Resolves when the abort fires.
    pub async fn cancelled(&self) {
        self.token.cancelled().await
    }

    /// The token the tools' process groups are killed by.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl StageCtx {
    /// Sends one measurement of this stage.
    pub fn emit(&self, kind: Kind, key: String, value: f64) {
        self.emit_at(kind, key, value, self.clock.now());
    }

    /// Streams a measurement made at `ts` (a tool's report during its run).
    pub fn emit_at(&self, kind: Kind, key: String, value: f64, ts: Timestamp) {
        let Ok(value) = Finite::new(value) else {
            return;
        };
        let unit = kind.unit_for_key(&key).unwrap_or("").to_string();
        self.uplink.push(Sample {
            ts,
            kind,
            key,
            value,
            unit,
            stage: Some(self.stage.ordinal()),
        });
    }

    /// Streams what a tool measured: its results now, and its reports over
    /// time placed back from `ended` (when the tool returned).
    pub fn emit_result(&self, r: &ToolResult, ended: Timestamp) {
        for m in &r.measurements {
            self.emit(m.kind, m.key.clone(), m.value);
        }
        for t in &r.series {
            let ts = Timestamp::from_unix_millis(ended.unix_millis() - t.before_end_ms);
            self.emit_at(
                t.measured.kind,
                t.measured.key.clone(),
                t.measured.value,
                ts,
            );
        }
    }

    /// Runs a tool for this stage. A missing tool or a timeout is also
    /// reported as an event, so `run show` says so and not only the log.
    pub async fn run_tool(&self, cmd: &ToolCommand) -> Result<ToolOutput, ToolError> {
        let abort = self.abort.clone();
        let out = exec::run(cmd, self.abort.token(), move || abort.reason()).await;
        let kind = match &out {
            Err(ToolError::NotInstalled { .. }) => Some(EventKind::ToolMissing),
            Err(ToolError::TimedOut { .. }) => Some(EventKind::ToolTimeout),
            _ => None,
        };
        if let (Some(kind), Err(e)) = (kind, &out) {
            let event = common::wire::AgentEvent {
                kind,
                // The stage's own verdict says whether it failed.
                level: EventLevel::Warn,
                message: format!("{}: {}", self.stage.name(), tool_failure(e)),
            };
            if let Err(e) = self
                .client
                .post::<_, common::wire::EventAck>("/events", &event)
                .await
            {
                tracing::warn!(error = %e, "could not report a {kind} event");
            }
        }
        out
    }

    pub fn disks(&self) -> &[DiskInfo] {
        &self.inventory.disks
    }

    pub fn nics(&self) -> &[NicInfo] {
        &self.inventory.nics
    }

    pub fn seconds(&self, s: u64) -> Duration {
        Duration::from_secs(s.max(1))
    }
}

/// Seconds between a tool's progress reports (fio `--status-interval`,
/// iperf3 `-i`) for a pass of `secs`: every second, and no more than 600
/// reports in one pass however long it runs (a 24 h burn reports every
/// 144 s), so the plot of a pass keeps its shape and the output stays small.
pub fn report_every(secs: u64) -> u64 {
    secs.div_ceil(600).max(1)
}

/// What a stage executor reports.
#[derive(Debug, Clone)]
pub struct StageReport {
    pub outcome: StageOutcome,
    /// Skipped because there is nothing to test or the plan leaves it out
    /// (see [`common::wire::StageFinish::absent`]).
    pub absent: bool,
    pub reason: Option<String>,
    pub summary: serde_json::Value,
    pub sub_steps: Vec<SubStepReport>,
}

impl StageReport {
    pub fn passed(summary: serde_json::Value) -> Self {
        Self {
            outcome: StageOutcome::Passed,
            absent: false,
            reason: None,
            summary,
            sub_steps: Vec::new(),
        }
    }

    pub fn failed(reason: impl Into<String>) -> Self {
        Self {
            outcome: StageOutcome::Failed,
            absent: false,
            reason: Some(reason.into()),
            summary: serde_json::json!({}),
            sub_steps: Vec::new(),
        }
    }

    /// Skipped for a reason that leaves the run not fully tested.
    pub fn skipped(reason: impl Into<String>) -> Self {
        Self {
            outcome: StageOutcome::Skipped,
            absent: false,
            reason: Some(reason.into()),
            summary: serde_json::json!({}),
            sub_steps: Vec::new(),
        }
    }

    /// Skipped because there is nothing of the kind here, or the run's
    /// plan leaves the stage out: the run can still pass.
    pub fn absent(reason: impl Into<String>) -> Self {
        Self {
            absent: true,
            ..Self::skipped(reason)
        }
    }

    /// A stage made of sub-steps: failed if any failed, skipped if all were
    /// skipped, passed otherwise.
    pub fn from_sub_steps(sub_steps: Vec<SubStepReport>, summary: serde_json::Value) -> Self {
        let failed: Vec<&str> = sub_steps
            .iter()
            .filter(|s| s.state == StageState::Failed)
            .map(|s| s.name.as_str())
            .collect();
        let all_skipped = sub_steps.iter().all(|s| s.state == StageState::Skipped);
        let (outcome, reason) = if !failed.is_empty() {
            (
                StageOutcome::Failed,
                Some(format!("failed: {}", failed.join(", "))),
            )
        } else if all_skipped {
            (
                StageOutcome::Skipped,
                Some(if sub_steps.is_empty() {
                    "nothing to test".into()
                } else {
                    "every sub-step skipped".into()
                }),
            )
        } else {
            (StageOutcome::Passed, None)
        };
        Self {
            outcome,
            // No sub-step at all: no disk or NIC was selected.
            absent: sub_steps.is_empty(),
            reason,
            summary,
            sub_steps,
        }
    }
}

/// One sub-step's report. `device` names the disk or NIC it tested, so a
/// critical breach on that device fails it; `None` where several sub-steps
/// share a device (DiskPerf's read and write passes).
pub fn sub_step(
    ordinal: usize,
    name: String,
    device: Option<&str>,
    state: StageState,
    started: Timestamp,
    ended: Timestamp,
    summary: serde_json::Value,
) -> SubStepReport {
    SubStepReport {
        ordinal: ordinal as u32,
        name,
        state,
        device: device.map(str::to_string),
        started_at: Some(started),
        completed_at: Some(ended),
        summary: Some(summary),
    }
}

/// Runs the executor of `ctx.stage`.
pub async fn run(ctx: &StageCtx) -> StageReport {
    match ctx.stage {
        Stage::Inventory => inventory::run(ctx).await,
        // Judged by the coordinator from the uploaded inventory.
        Stage::SpecValidate => StageReport::passed(serde_json::json!({})),
        Stage::Firmware => firmware::run(ctx).await,
        Stage::Smart => smart::run(ctx).await,
        Stage::CpuStress => cpu_stress::run(ctx).await,
        Stage::Memory => memory::run(ctx).await,
        Stage::DiskPerf => disk_perf::run(ctx).await,
        Stage::DiskSurface if !ctx.claim.non_destructive => disk_surface::run(ctx).await,
        Stage::WipeProbe if !ctx.claim.non_destructive => wipe_probe::run(ctx).await,
        Stage::DiskSurface | Stage::WipeProbe => StageReport::absent("the run is non-destructive"),
        Stage::Network => network::run(ctx).await,
        Stage::Gpu => gpu::run(ctx).await,
        Stage::Burn => burn::run(ctx).await,
    }
}

/// Runs `one` on every selected disk at once, each as sub-step `i` named
/// `<disk> <what>`, timed on the run's clock.
pub async fn per_disk<'a, F, Fut>(ctx: &'a StageCtx, what: &str, one: F) -> Vec<SubStepReport>
where
    F: Fn(usize, &'a common::inventory::DiskInfo) -> Fut,
    Fut: std::future::Future<Output = (StageState, serde_json::Value)>,
{
    let one = &one;
    let jobs = ctx.disks().iter().enumerate().map(|(i, d)| async move {
        let started = ctx.clock.now();
        let (state, summary) = one(i, d).await;
        sub_step(
            i,
            format!("{} {what}", d.name),
            Some(&d.name),
            state,
            started,
            ctx.clock.now(),
            summary,
        )
    });
    futures_util::future::join_all(jobs).await
}

/// Leave from the interlock to write one disk. A refusal comes back as the
/// skipped sub-step's state and summary (see
/// `SubStepReport::interlock_refusal`); a non-destructive run as `None`:
/// it writes nothing and has no write sub-step.
pub async fn write_grant(
    ctx: &StageCtx,
    d: &common::inventory::DiskInfo,
) -> Result<WriteGrant, Option<(StageState, serde_json::Value)>> {
    let destructive = !ctx.claim.non_destructive;
    match interlock::grant(&ctx.roots, &d.name, destructive, ctx.claim.overrides.wipe).await {
        Ok(g) => Ok(g),
        Err(NoGrant::NonDestructive) => Err(None),
        Err(NoGrant::Refused(r)) => Err(Some((
            StageState::Skipped,
            SubStepReport::interlock_refusal_summary(&format!(
                "interlock refused {}: {}",
                d.name, r.reason
            )),
        ))),
    }
}

/// Right before a write: the disk is still the one the grant checked and
/// holds; otherwise the write's sub-step is skipped as an interlock refusal.
pub fn recheck(ctx: &StageCtx, grant: &WriteGrant) -> Result<(), (StageState, serde_json::Value)> {
    grant.recheck(&ctx.roots).map_err(|r| {
        (
            StageState::Skipped,
            SubStepReport::interlock_refusal_summary(&format!(
                "interlock refused {}: {}",
                grant.disk(),
                r.reason
            )),
        )
    })
}

/// [`write_grant`] for a stage that only runs destructively.
pub async fn destructive_grant(
    ctx: &StageCtx,
    d: &common::inventory::DiskInfo,
) -> Result<WriteGrant, (StageState, serde_json::Value)> {
    write_grant(ctx, d).await.map_err(|refused| {
        refused.unwrap_or_else(|| {
            (
                StageState::Skipped,
                serde_json::json!({"reason": "the run is non-destructive"}),
            )
        })
    })
}

/// A tool error as a sub-step's state and summary: a tool that is not
/// installed skips the sub-step (so the run passes at best incompletely),
/// any other error fails it.
pub fn tool_error_step(e: &ToolError) -> (StageState, serde_json::Value) {
    match e {
        ToolError::NotInstalled { .. } => (
            StageState::Skipped,
            serde_json::json!({"reason": e.to_string(), "tool_missing": true}),
        ),
        _ => (
            StageState::Failed,
            serde_json::json!({"reason": tool_failure(e)}),
        ),
    }
}

/// Why a stage's own tool gave no result.
#[derive(Debug, Clone, PartialEq)]
pub enum ToolEnd {
    /// Not installed: the stage is skipped, not passed.
    Missing(String),
    /// It ran and failed (or could not run): the stage fails.
    Failed(String),
}

impl ToolEnd {
    pub fn of(e: &ToolError) -> Self {
        match e {
            ToolError::NotInstalled { .. } => ToolEnd::Missing(e.to_string()),
            _ => ToolEnd::Failed(tool_failure(e)),
        }
    }

    pub fn report(self) -> StageReport {
        match self {
            ToolEnd::Missing(why) => StageReport::skipped(why),
            ToolEnd::Failed(why) => StageReport::failed(why),
        }
    }
}

/// A tool error as a stage failure line.
pub fn tool_failure(e: &ToolError) -> String {
    match e {
        ToolError::TimedOut { stderr_tail, .. } if !stderr_tail.is_empty() => {
            format!("{e}: {stderr_tail}")
        }
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_tool_skips_without_absence_and_a_broken_one_fails() {
        let missing = ToolError::NotInstalled {
            tool: "fio",
            package: "fio",
        };
        let (state, summary) = tool_error_step(&missing);
        assert_eq!(state, StageState::Skipped);
        assert_eq!(summary["tool_missing"], true);
        let timed_out = ToolError::TimedOut {
            tool: "fio",
            after: std::time::Duration::from_secs(1),
            stderr_tail: String::new(),
        };
        assert_eq!(tool_error_step(&timed_out).0, StageState::Failed);

        // Every disk's sub-step skipped for the tool: the stage is skipped,
        // and not for want of hardware, so the run passes only incompletely.
        let now = common::time::Timestamp::from_unix_millis(0);
        let subs = (0..2)
            .map(|i| {
                sub_step(
                    i,
                    format!("d{i} fio read"),
                    None,
                    state,
                    now,
                    now,
                    summary.clone(),
                )
            })
            .collect();
        let report = StageReport::from_sub_steps(subs, serde_json::json!({}));
        assert_eq!(
            (report.outcome, report.absent),
            (StageOutcome::Skipped, false)
        );
        let nothing = StageReport::from_sub_steps(Vec::new(), serde_json::json!({}));
        assert_eq!(
            (nothing.outcome, nothing.absent),
            (StageOutcome::Skipped, true)
        );

        let end = ToolEnd::of(&missing).report();
        assert_eq!((end.outcome, end.absent), (StageOutcome::Skipped, false));
        assert_eq!(
            ToolEnd::of(&timed_out).report().outcome,
            StageOutcome::Failed
        );
    }
}
