//! SMART: `smartctl --json=c -x` per disk, in parallel, one sub-step each,
//! then the profile's self-test (short in quick, long in deep and soak),
//! whose result is read from the device's self-test log and reported as
//! `<disk>/self_test_passed` for the coordinator's threshold to judge.
//!
//! A disk without SMART (virtio, loop) is a skipped sub-step with its
//! reason; a device without self-test support is noted, never failed. A
//! self-test this stage started is aborted on the device (`smartctl -X`)
//! when the stage is aborted or runs out of time, so none is left running.

use std::time::Duration;

use serde_json::{json, Value};

use common::measurement::Kind;
use common::profile::SelfTest;
use common::stage::StageState;

use super::{StageCtx, StageReport};
use crate::exec::ToolError;
use crate::tools::smartctl::{self, SelfTestKind, SelfTestOutcome, SelfTestSupport};
use common::inventory::DiskInfo;

/// How long to wait between polls and in all, from the device's estimate.
fn self_test_timing(minutes: Option<u64>, kind: SelfTestKind) -> (Duration, Duration) {
    let expected = Duration::from_secs(
        60 * minutes.unwrap_or(match kind {
            SelfTestKind::Short => 2,
            SelfTestKind::Long => 120,
        }),
    );
    let poll = (expected / 12).clamp(Duration::from_secs(2), Duration::from_secs(60));
    (poll, expected * 2 + Duration::from_secs(120))
}

/// What the self-test of one disk came to.
struct SelfTestReport {
    /// The self-test could not be run to its end (the tool's failure, not
    /// the disk's): fails the sub-step.
    failed: Option<String>,
    summary: Value,
}

impl SelfTestReport {
    fn note(state: &str, detail: impl Into<String>) -> Self {
        Self {
            failed: None,
            summary: json!({"state": state, "detail": detail.into()}),
        }
    }
}

/// Runs one self-test on `disk` and reads the newest log entry after it.
async fn self_test(
    ctx: &StageCtx,
    disk: &DiskInfo,
    x: &Value,
    kind: SelfTestKind,
) -> SelfTestReport {
    let minutes = match smartctl::self_test_support(x, kind) {
        SelfTestSupport::Unsupported(why) => return SelfTestReport::note("not supported", why),
        SelfTestSupport::Supported { minutes } => minutes,
    };
    let short = Duration::from_secs(60);
    if let Some(left) = smartctl::self_test_running(x) {
        // A test someone else started would block ours; ours must be judged.
        let _ = ctx
            .run_tool(&smartctl::command(&["--json=c", "-X"], disk, short))
            .await;
        tracing::info!(disk = %disk.name, left, "aborted a self-test already running");
    }
    let start = smartctl::command(&["--json=c", "-t", kind.arg()], disk, short);
    match ctx.run_tool(&start).await {
        Err(e) => return SelfTestReport::note("not started", super::tool_failure(&e)),
        Ok(out) => {
            let bits = out.status.code().unwrap_or(0) as u64 & 0b111;
            if bits != 0 {
                let why: Vec<&str> = smartctl::decode_exit(bits)
                    .into_iter()
                    .map(|(_, m)| m)
                    .collect();
                return SelfTestReport::note(
                    "not started",
                    format!("smartctl -t {}: {}", kind.arg(), why.join("; ")),
                );
            }
        }
    }
    let (poll, limit) = self_test_timing(minutes, kind);
    let began = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = ctx.abort.cancelled() => {
                let never = tokio_util::sync::CancellationToken::new();
                let _ = crate::exec::run(&smartctl::command(&["--json=c", "-X"], disk, short), &never, String::new).await;
                return SelfTestReport::note("aborted", "the stage was aborted; the self-test was stopped on the device");
            }
        }
        let status = smartctl::command(&["--json=c", "-c", "-l", "selftest"], disk, short);
        let doc: Option<Value> = match ctx.run_tool(&status).await {
            Ok(out) => serde_json::from_slice(&out.stdout).ok(),
            Err(ToolError::Aborted { .. }) => None,
            Err(e) => {
                tracing::warn!(disk = %disk.name, "self-test poll: {}", super::tool_failure(&e));
                None
            }
        };
        let running = doc.as_ref().and_then(smartctl::self_test_running);
        if let (Some(doc), None) = (&doc, running) {
            return outcome(ctx, disk, doc, kind);
        }
        if began.elapsed() > limit {
            let _ = ctx
                .run_tool(&smartctl::command(&["--json=c", "-X"], disk, short))
                .await;
            return SelfTestReport {
                failed: Some(format!(
                    "{} self-test still running after {} min (device estimate {} min); aborted",
                    kind.arg(),
                    limit.as_secs() / 60,
                    minutes.map_or("none".into(), |m| m.to_string())
                )),
                summary: json!({"state": "timed out"}),
            };
        }
        if let Some(left) = running {
            tracing::debug!(disk = %disk.name, left, "self-test running");
        }
    }
}

/// Reports the self-test's result as the device logged it: a fact
/// (`<disk>/self_test_passed`, 1 or 0) the coordinator's threshold judges.
fn outcome(ctx: &StageCtx, disk: &DiskInfo, doc: &Value, kind: SelfTestKind) -> SelfTestReport {
    let key = format!("{}/self_test_passed", disk.name);
    match smartctl::newest_self_test(doc).and_then(smartctl::self_test_outcome) {
        Some(SelfTestOutcome::Passed) => {
            ctx.emit(Kind::SmartAttr, key, 1.0);
            SelfTestReport::note(
                "passed",
                format!("{} self-test completed without error", kind.arg()),
            )
        }
        Some(SelfTestOutcome::Failed(why)) => {
            ctx.emit(Kind::SmartAttr, key, 0.0);
            SelfTestReport::note("failed", why)
        }
        Some(SelfTestOutcome::Aborted(why)) => SelfTestReport::note("aborted", why),
        Some(SelfTestOutcome::Running) | None => SelfTestReport::note(
            "no result",
            "the device's self-test log has no finished entry",
        ),
    }
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let kind = match ctx.claim.durations.smart_self_test {
        SelfTest::Short => SelfTestKind::Short,
        SelfTest::Long => SelfTestKind::Long,
    };
    let subs = super::per_disk(ctx, "SMART", |_, d| async move {
        let cmd = smartctl::command(&["--json=c", "-x"], d, Duration::from_secs(120));
        match ctx.run_tool(&cmd).await {
            Err(e) => super::tool_error_step(&e),
            Ok(out) => match smartctl::parse(&out.stdout, Some(&d.name)) {
                Err(e) => (StageState::Failed, json!({"reason": e.to_string(), "stderr": out.stderr_tail})),
                Ok(r) if !r.errors.is_empty() => (
                    StageState::Skipped,
                    json!({"reason": format!("no SMART: {}", r.errors.join("; ")), "notes": r.notes}),
                ),
                Ok(r) => {
                    for m in &r.measurements {
                        ctx.emit(m.kind, m.key.clone(), m.value);
                    }
                    // `parse` accepted it, so it is JSON.
                    let x: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                    let st = self_test(ctx, d, &x, kind).await;
                    let mut summary = json!({
                        "measurements": r.measurements.len(),
                        "notes": r.notes,
                        "self_test": st.summary,
                    });
                    match st.failed {
                        Some(why) => {
                            summary["reason"] = json!(why);
                            (StageState::Failed, summary)
                        }
                        None => (StageState::Passed, summary),
                    }
                }
            },
        }
    })
    .await;
    StageReport::from_sub_steps(
        subs,
        json!({"disks": ctx.disks().len(), "self_test": kind.arg()}),
    )
}
