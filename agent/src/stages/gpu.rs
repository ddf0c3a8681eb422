//! GPU: GPUs are found by PCI class (display controller) from NVIDIA or AMD.
//! None → skipped with the reason. NVIDIA GPUs are read with `nvidia-smi`
//! (temperature, uncorrected ECC errors); a GPU without its tool is a stage
//! error naming what to install.

use super::{StageCtx, StageReport};
use crate::host;
use crate::tools::nvidia_smi;

pub async fn run(ctx: &StageCtx) -> StageReport {
    let gpus: Vec<(String, String)> = host::pci(&ctx.roots)
        .into_iter()
        .filter(|d| d["class"].as_str().is_some_and(|c| c.starts_with("0x03")))
        .filter_map(|d| {
            let vendor = d["vendor"].as_str()?.to_string();
            matches!(vendor.as_str(), "0x10de" | "0x1002")
                .then(|| (d["address"].as_str().unwrap_or("").to_string(), vendor))
        })
        .collect();
    if gpus.is_empty() {
        return StageReport::absent("no GPU (no NVIDIA or AMD display controller on the PCI bus)");
    }
    if gpus.iter().any(|(_, v)| v == "0x1002") && gpus.iter().all(|(_, v)| v == "0x1002") {
        return StageReport::failed("AMD GPU found but no AMD GPU test in this build; install rocm-smi and use a newer agent");
    }
    match ctx.run_tool(&nvidia_smi::query()).await {
        Err(e) => StageReport::failed(format!("{} GPU(s) found: {e}", gpus.len())),
        Ok(out) if !out.status.success() => {
            StageReport::failed(format!("nvidia-smi failed: {}", out.stderr_tail))
        }
        Ok(out) => {
            for m in nvidia_smi::parse(&String::from_utf8_lossy(&out.stdout)) {
                ctx.emit(m.kind, m.key, m.value);
            }
            StageReport::passed(serde_json::json!({"gpus": gpus.len()}))
        }
    }
}
