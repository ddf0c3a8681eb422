//! DiskPerf: `fio --output-format=json` per disk, all disks in parallel:
//! sequential 128 KiB reads at queue depth 16 with O_DIRECT for the
//! profile's time per disk (`--readonly`), then, unless the run is
//! non-destructive, 4 KiB random writes for the same time on disks the
//! interlock allows. Bandwidth, IOPS and latency percentiles as `fio`, and
//! the bandwidth of each status report over time; one sub-step per disk and
//! direction.

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
        .arg(format!("--status-interval={}", super::report_every(secs)))
}

/// The fio command for a random-write pass over `/dev/<disk>` (destructive).
pub fn write_job(disk: &str, secs: u64) -> ToolCommand {
    ToolCommand::new("fio", "fio", Duration::from_secs(secs + 60))
        .arg("--output-format=json")
        .arg(format!("--name={disk}"))
        .arg(format!("--filename=/dev/{disk}"))
        .args([
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--ioengine=libaio",
            "--direct=1",
            "--time_based",
        ])
        .arg(format!("--runtime={secs}"))
        .arg(format!("--status-interval={}", super::report_every(secs)))
}

async fn fio_pass(ctx: &StageCtx, disk: &str, cmd: ToolCommand) -> (StageState, serde_json::Value) {
    let out = match ctx.run_tool(&cmd).await {
        Err(e) => {
            return (
                StageState::Failed,
                serde_json::json!({"reason": super::tool_failure(&e)}),
            )
        }
        Ok(out) => out,
    };
    let ended = ctx.clock.now();
    match fio::parse(&out.stdout, Some(disk)) {
        Err(e) => (
            StageState::Failed,
            serde_json::json!({"reason": e.to_string(), "stderr": out.stderr_tail}),
        ),
        Ok(r) if !r.errors.is_empty() => (
            StageState::Failed,
            serde_json::json!({"reason": r.errors.join("; "), "stderr": out.stderr_tail}),
        ),
        Ok(r) => {
            ctx.emit_result(&r, ended);
            (
                StageState::Passed,
                serde_json::json!({"measurements": r.measurements}),
            )
        }
    }
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let secs = ctx.claim.durations.disk_perf_per_disk_s;
    let jobs = ctx.disks().iter().enumerate().map(|(i, d)| async move {
        let started = ctx.clock.now();
        let (state, summary) =
            fio_pass(ctx, &d.name, read_job(&d.name, secs, "read", "128k")).await;
        let mut subs = vec![sub_step(
            2 * i,
            format!("{} fio read", d.name),
            state,
            started,
            ctx.clock.now(),
            summary,
        )];
        if !ctx.claim.non_destructive {
            let started = ctx.clock.now();
            let (state, summary) = match super::interlock_check(ctx, d).await {
                Err(refused) => refused,
                Ok(()) => fio_pass(ctx, &d.name, write_job(&d.name, secs)).await,
            };
            subs.push(sub_step(
                2 * i + 1,
                format!("{} fio write", d.name),
                state,
                started,
                ctx.clock.now(),
                summary,
            ));
        }
        subs
    });
    let subs: Vec<_> = futures_util::future::join_all(jobs)
        .await
        .into_iter()
        .flatten()
        .collect();
    StageReport::from_sub_steps(
        subs,
        serde_json::json!({"disks": ctx.disks().len(), "seconds_per_disk": secs}),
    )
}
