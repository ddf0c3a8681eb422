//! DiskPerf: read-only `fio --output-format=json` per disk, all disks in
//! parallel, one sub-step each: sequential 128 KiB reads at queue depth 16
//! with O_DIRECT for the profile's time per disk. Bandwidth, IOPS and
//! latency percentiles as `fio`. Write tests come with the safety interlock.

use std::time::Duration;

use common::stage::StageState;

use super::{sub_step, StageCtx, StageReport};
use crate::exec::ToolCommand;
use crate::tools::fio;

/// The fio command for a read-only pass over `/dev/<disk>`.
pub fn read_job(disk: &str, secs: u64, rw: &str, bs: &str) -> ToolCommand {
    ToolCommand::new("fio", "fio", Duration::from_secs(secs + 60))
        .arg("--output-format=json")
        .arg(format!("--name={disk}"))
        .arg(format!("--filename=/dev/{disk}"))
        .arg("--readonly")
        .arg(format!("--rw={rw}"))
        .arg(format!("--bs={bs}"))
        .args([
            "--iodepth=16",
            "--ioengine=libaio",
            "--direct=1",
            "--time_based",
        ])
        .arg(format!("--runtime={secs}"))
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let secs = ctx.claim.durations.disk_perf_per_disk_s;
    let jobs = ctx.disks().iter().enumerate().map(|(i, d)| async move {
        let started = ctx.clock.now();
        let (state, summary) = match ctx.run_tool(&read_job(&d.name, secs, "read", "128k")).await {
            Err(e) => (
                StageState::Failed,
                serde_json::json!({"reason": super::tool_failure(&e)}),
            ),
            Ok(out) => match fio::parse(&out.stdout, Some(&d.name)) {
                Err(e) => (
                    StageState::Failed,
                    serde_json::json!({"reason": e.to_string(), "stderr": out.stderr_tail}),
                ),
                Ok(r) if !r.errors.is_empty() => (
                    StageState::Failed,
                    serde_json::json!({"reason": r.errors.join("; "), "stderr": out.stderr_tail}),
                ),
                Ok(r) => {
                    for m in &r.measurements {
                        ctx.emit(m.kind, m.key.clone(), m.value);
                    }
                    (
                        StageState::Passed,
                        serde_json::json!({"measurements": r.measurements}),
                    )
                }
            },
        };
        sub_step(
            i,
            format!("{} fio read", d.name),
            state,
            started,
            ctx.clock.now(),
            summary,
        )
    });
    let subs = futures_util::future::join_all(jobs).await;
    StageReport::from_sub_steps(
        subs,
        serde_json::json!({"disks": ctx.disks().len(), "seconds_per_disk": secs}),
    )
}
