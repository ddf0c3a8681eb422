//! Memory: `stress-ng --vm --verify` for the profile's time (a quarter of
//! free memory per worker) and the EDAC corrected/uncorrected counters per
//! memory controller before and after, as `<mc>/{ce,ue}` deltas. Deep and
//! soak give half the time to memtester over a quarter of available memory
//! when it is installed (its failures as `memtester/failures`); its absence
//! is noted, not failed.

use std::collections::BTreeMap;

use common::measurement::Kind;

use super::cpu_stress::stress;
use super::{StageCtx, StageReport};
use crate::exec::ToolError;
use crate::tools::memtester;

/// One memtester pass over a quarter of available memory, stopped after
/// `secs`. `Err` is memtester's own failure (it could not test); what it
/// found in the memory is reported as `memtester/failures` (the
/// coordinator's threshold judges it) with its `FAILURE:` lines here.
async fn run_memtester(ctx: &StageCtx, secs: u64) -> Result<serde_json::Value, String> {
    let available_mib =
        crate::host::meminfo_kib(&ctx.roots, "MemAvailable").map_or(64, |k| k / 1024);
    let mib = (available_mib / 4).max(16);
    let found = |r: &memtester::MemtesterResult, mut summary: serde_json::Value| {
        ctx.emit(
            Kind::Mem,
            "memtester/failures".into(),
            r.failure_count() as f64,
        );
        if !r.memory_failures.is_empty() {
            summary["failures"] = serde_json::json!(r.memory_failures);
        }
        summary
    };
    match ctx.run_tool(&memtester::one_pass(mib, secs)).await {
        Err(e @ ToolError::NotInstalled { .. }) => {
            Ok(serde_json::json!({"skipped": e.to_string()}))
        }
        Err(ToolError::TimedOut { stderr_tail, .. }) => {
            let r = memtester::MemtesterResult {
                memory_failures: memtester::failure_lines(&stderr_tail),
                ..Default::default()
            };
            let note = format!("stopped after {secs} s before finishing a pass");
            Ok(found(&r, serde_json::json!({"mib": mib, "note": note})))
        }
        Err(e) => Err(super::tool_failure(&e)),
        Ok(out) => {
            let r = memtester::read(out.status.code().unwrap_or(-1), &out.stderr_tail);
            if r.result.errors.is_empty() {
                let summary = serde_json::json!({"mib": mib, "passes": 1, "elapsed_s": out.elapsed.as_secs()});
                Ok(found(&r, summary))
            } else {
                Err(format!(
                    "memtester could not test: {}",
                    r.result.errors.join("; ")
                ))
            }
        }
    }
}

fn edac(ctx: &StageCtx) -> BTreeMap<String, (f64, f64)> {
    let base = ctx.roots.sys.join("devices/system/edac/mc");
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(&base) else {
        return out;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("mc") {
            continue;
        }
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .ok()
                .and_then(|s| s.trim().parse::<f64>().ok())
        };
        if let (Some(ce), Some(ue)) = (read("ce_count"), read("ue_count")) {
            out.insert(name, (ce, ue));
        }
    }
    out
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let before = edac(ctx);
    let workers = ctx.inventory.cpu.logical_cores.clamp(1, 4).to_string();
    let total = ctx.claim.durations.memory_s;
    let with_memtester = ctx.claim.durations.memtester;
    let stress_secs = if with_memtester {
        total.div_ceil(2)
    } else {
        total
    };
    let mut result = stress(
        ctx,
        &["--vm", &workers, "--vm-bytes", "25%"],
        stress_secs,
        "vm",
    )
    .await;
    if with_memtester {
        if let Ok(summary) = &mut result {
            match run_memtester(ctx, (total - stress_secs).max(1)).await {
                Ok(m) => summary["memtester"] = m,
                Err(e) => result = Err(super::ToolEnd::Failed(e)),
            }
        }
    }
    for (mc, (ce, ue)) in edac(ctx) {
        let (ce0, ue0) = before.get(&mc).copied().unwrap_or((ce, ue));
        ctx.emit(Kind::Mem, format!("{mc}/ce"), ce - ce0);
        ctx.emit(Kind::Mem, format!("{mc}/ue"), ue - ue0);
    }
    match result {
        Ok(mut summary) => {
            summary["edac_controllers"] = serde_json::json!(before.len());
            StageReport::passed(summary)
        }
        Err(e) => e.report(),
    }
}
