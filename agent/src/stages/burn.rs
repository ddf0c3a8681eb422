//! Burn: CPU and memory (stress-ng) and random reads on every disk (fio) at
//! once for the profile's burn time, the sidecar sampling throughout.

use super::cpu_stress::stress;
use super::{StageCtx, StageReport, ToolEnd};
use crate::tools::fio;
use crate::tools::fio::read_job;

pub async fn run(ctx: &StageCtx) -> StageReport {
    let secs = ctx.claim.durations.burn_s;
    let cpus = ctx.inventory.cpu.logical_cores.max(1).to_string();
    let stressors = ["--cpu", cpus.as_str(), "--vm", "1", "--vm-bytes", "25%"];
    let cpu = stress(ctx, &stressors, secs, "burn");
    let disks = futures_util::future::join_all(ctx.disks().iter().map(|d| async move {
        match ctx
            .run_tool(&read_job(&d.name, secs, "randread", "4k"))
            .await
        {
            Err(e) => Err(match ToolEnd::of(&e) {
                ToolEnd::Missing(m) => ToolEnd::Missing(m),
                ToolEnd::Failed(f) => ToolEnd::Failed(format!("{}: {f}", d.name)),
            }),
            Ok(out) => match fio::parse(&out.stdout, Some(&d.name)) {
                Ok(r) if r.errors.is_empty() => {
                    ctx.emit_result(&r, ctx.clock.now());
                    Ok(())
                }
                Ok(r) => Err(ToolEnd::Failed(format!(
                    "{}: {}",
                    d.name,
                    r.errors.join("; ")
                ))),
                Err(e) => Err(ToolEnd::Failed(format!("{}: {e}", d.name))),
            },
        }
    }));
    let (cpu, disks) = tokio::join!(cpu, disks);
    let ends: Vec<ToolEnd> = cpu
        .err()
        .into_iter()
        .chain(disks.into_iter().filter_map(Result::err))
        .collect();
    let failed: Vec<&str> = ends
        .iter()
        .filter_map(|e| match e {
            ToolEnd::Failed(f) => Some(f.as_str()),
            ToolEnd::Missing(_) => None,
        })
        .collect();
    let mut missing: Vec<&str> = ends
        .iter()
        .filter_map(|e| match e {
            ToolEnd::Missing(m) => Some(m.as_str()),
            ToolEnd::Failed(_) => None,
        })
        .collect();
    missing.dedup();
    if !failed.is_empty() {
        StageReport::failed(failed.join("; "))
    } else if !missing.is_empty() {
        // Part of the burn could not run: not a pass.
        StageReport::skipped(missing.join("; "))
    } else {
        StageReport::passed(serde_json::json!({"seconds": secs, "disks": ctx.disks().len()}))
    }
}
