//! DiskPerf: `fio --output-format=json` per disk, all disks in parallel:
//! sequential 128 KiB reads at queue depth 16 with O_DIRECT for the
//! profile's time per disk (`--readonly`), then, unless the run is
//! non-destructive, 4 KiB random writes for the same time on disks the
//! interlock allows. Bandwidth, IOPS and latency percentiles as `fio`, and
//! the bandwidth of each status report over time; one sub-step per disk and
//! direction.

use common::stage::StageState;

use super::{sub_step, StageCtx, StageReport};
use crate::exec::ToolCommand;
use crate::tools::fio::{self, read_job, write_job};

async fn fio_pass(ctx: &StageCtx, disk: &str, cmd: ToolCommand) -> (StageState, serde_json::Value) {
    let out = match ctx.run_tool(&cmd).await {
        Err(e) => return super::tool_error_step(&e),
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
            None,
            state,
            started,
            ctx.clock.now(),
            summary,
        )];
        let started = ctx.clock.now();
        let write = match super::write_grant(ctx, d).await {
            Err(None) => None,
            Err(Some(refused)) => Some(refused),
            // The grant holds the disk until the pass ends.
            Ok(grant) => Some(match super::recheck(ctx, &grant) {
                Err(refused) => refused,
                Ok(()) => fio_pass(ctx, &d.name, write_job(&grant, secs)).await,
            }),
        };
        if let Some((state, summary)) = write {
            subs.push(sub_step(
                2 * i + 1,
                format!("{} fio write", d.name),
                None,
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
