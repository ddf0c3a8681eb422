//! Inventory: CPU, memory, disks and NICs per the selection (with what was
//! left out and why), SMBIOS facts the kernel exposes, PCI devices; uploaded
//! as artifact `inventory` for SpecValidate.

use common::wire::ArtifactInfo;

use super::{StageCtx, StageReport};

pub async fn run(ctx: &StageCtx) -> StageReport {
    let inv = &ctx.inventory;
    if inv.cpu.logical_cores == 0 || inv.memory.total_bytes == 0 {
        return StageReport::failed("cannot inventory: no CPU or memory information under /proc");
    }
    let bytes = match serde_json::to_vec_pretty(inv) {
        Ok(b) => b,
        Err(e) => return StageReport::failed(format!("encoding inventory: {e}")),
    };
    let path = format!("/artifacts?kind=inventory&stage={}", ctx.stage.ordinal());
    let upload: Result<ArtifactInfo, _> = ctx.client.upload(&path, bytes).await;
    match upload {
        Ok(a) => StageReport::passed(serde_json::json!({
            "cpu": inv.cpu.model,
            "logical_cores": inv.cpu.logical_cores,
            "memory_bytes": inv.memory.total_bytes,
            "disks": inv.disks.iter().map(|d| d.name.clone()).collect::<Vec<_>>(),
            "nics": inv.nics.iter().map(|n| n.name.clone()).collect::<Vec<_>>(),
            "excluded": inv.excluded,
            "artifact_sha256": a.sha256,
        })),
        Err(e) => StageReport::failed(format!("uploading inventory: {e}")),
    }
}
