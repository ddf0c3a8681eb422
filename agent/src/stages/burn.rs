//! Burn: CPU and memory (stress-ng) and random reads on every disk (fio) at
//! once for the profile's burn time, the sidecar sampling throughout.

use super::cpu_stress::stress;
use super::{StageCtx, StageReport};
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
            Err(e) => Err(format!("{}: {}", d.name, super::tool_failure(&e))),
            Ok(out) => match fio::parse(&out.stdout, Some(&d.name)) {
                Ok(r) if r.errors.is_empty() => {
                    ctx.emit_result(&r, ctx.clock.now());
                    Ok(())
                }
                Ok(r) => Err(format!("{}: {}", d.name, r.errors.join("; "))),
                Err(e) => Err(format!("{}: {e}", d.name)),
            },
        }
    }));
    let (cpu, disks) = tokio::join!(cpu, disks);
    let mut failures: Vec<String> = disks.into_iter().filter_map(Result::err).collect();
    if let Err(e) = &cpu {
        failures.insert(0, e.clone());
    }
    if failures.is_empty() {
        StageReport::passed(serde_json::json!({"seconds": secs, "disks": ctx.disks().len()}))
    } else {
        StageReport::failed(failures.join("; "))
    }
}
