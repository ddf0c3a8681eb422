//! CPUStress: `stress-ng --cpu N --verify --metrics --yaml` for the profile's
//! time; bogo-ops/s as `stress`, and the machine-check count before and
//! after as `mce/count` (kind mem).

use common::measurement::Kind;

use super::{StageCtx, StageReport, ToolEnd};
use crate::tools::{interrupts, stress_ng};

/// Machine checks so far, from /proc/interrupts.
pub fn mce_count(ctx: &StageCtx) -> Option<f64> {
    let text = std::fs::read_to_string(ctx.roots.proc.join("interrupts")).ok()?;
    interrupts::mce_count(&text)
}

/// Runs stress-ng with `stressors` for `secs` and emits its metrics.
pub async fn stress(
    ctx: &StageCtx,
    stressors: &[&str],
    secs: u64,
    tag: &str,
) -> Result<serde_json::Value, ToolEnd> {
    let yaml = ctx
        .work_dir
        .join(format!("stress-ng-{tag}-{}.yaml", ctx.stage.ordinal()));
    let _ = std::fs::remove_file(&yaml);
    let cmd = stress_ng::command(stressors, secs, &yaml);
    let out = ctx.run_tool(&cmd).await.map_err(|e| ToolEnd::of(&e))?;
    let bytes = std::fs::read(&yaml).map_err(|e| {
        ToolEnd::Failed(format!(
            "stress-ng wrote no metrics ({e}); stderr: {}",
            out.stderr_tail
        ))
    })?;
    let parsed = stress_ng::parse(&bytes).map_err(|e| ToolEnd::Failed(e.to_string()))?;
    for m in &parsed.measurements {
        ctx.emit(m.kind, m.key.clone(), m.value);
    }
    if !out.status.success() {
        return Err(ToolEnd::Failed(format!(
            "stress-ng exited with {} (verify failure or stressor error): {}",
            out.status, out.stderr_tail
        )));
    }
    Ok(serde_json::json!({"metrics": parsed.measurements, "notes": parsed.notes}))
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let before = mce_count(ctx);
    let cpus = ctx.inventory.cpu.logical_cores.max(1).to_string();
    let result = stress(
        ctx,
        &["--cpu", &cpus],
        ctx.claim.durations.cpu_stress_s,
        "cpu",
    )
    .await;
    if let (Some(b), Some(a)) = (before, mce_count(ctx)) {
        ctx.emit(Kind::Mem, "mce/count".into(), a - b);
    }
    match result {
        Ok(summary) => StageReport::passed(summary),
        Err(e) => e.report(),
    }
}
