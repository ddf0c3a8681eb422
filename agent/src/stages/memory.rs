//! Memory: `stress-ng --vm --verify` for the profile's time (a quarter of
//! free memory per worker) and the EDAC corrected/uncorrected counters per
//! memory controller before and after, as `<mc>/{ce,ue}` deltas.

use std::collections::BTreeMap;

use common::measurement::Kind;

use super::cpu_stress::stress;
use super::{StageCtx, StageReport};

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
    let result = stress(
        ctx,
        &["--vm", &workers, "--vm-bytes", "25%"],
        ctx.claim.durations.memory_s,
        "vm",
    )
    .await;
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
        Err(e) => StageReport::failed(e),
    }
}
