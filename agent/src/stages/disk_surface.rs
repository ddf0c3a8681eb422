//! DiskSurface (destructive): `badblocks -w` per disk, in parallel, over
//! samples at the start, middle and end (quick) or the whole disk (deep,
//! soak). Reports each disk's bad blocks as `<disk>/bad_blocks` and their
//! sector ranges; the coordinator's threshold fails a disk with any.
//!
//! badblocks' machine-readable result is its `-o` file: one bad block
//! number per line. Never: run it on a disk the interlock refused (and
//! badblocks itself refuses a disk in use).

use serde_json::json;

use common::inventory::DiskInfo;
use common::measurement::Kind;
use common::profile::DestructiveScope;
use common::stage::StageState;

use super::destructive::{disk_bytes, regions, regions_json};
use super::{StageCtx, StageReport};
use crate::tools::badblocks::{self, BLOCK};

/// Bytes per sampled region.
const SAMPLE_REGION: u64 = 16 << 20;

async fn one(ctx: &StageCtx, i: usize, d: &DiskInfo) -> (StageState, serde_json::Value) {
    let size = disk_bytes(ctx, d);
    let scope = ctx.claim.durations.destructive_scope;
    let plan = regions(size, scope, SAMPLE_REGION);
    let mut bad: Vec<u64> = Vec::new();
    let mut tested = 0u64;
    for (r, (offset, len)) in plan.iter().enumerate() {
        // Checked before each pass: nothing may have claimed the disk meanwhile.
        let grant = match super::destructive_grant(ctx, d).await {
            Ok(g) => g,
            Err(refused) => return refused,
        };
        let out_file = ctx
            .work_dir
            .join(format!("badblocks-{}-{i}-{r}.txt", d.name));
        let _ = std::fs::remove_file(&out_file);
        let (first, last) = (offset / BLOCK, (offset + len) / BLOCK - 1);
        if let Err(refused) = super::recheck(ctx, &grant) {
            return refused;
        }
        let cmd = badblocks::write_test(&grant, first, last, &out_file);
        let out = match ctx.run_tool(&cmd).await {
            Ok(o) => o,
            Err(e) => return super::tool_error_step(&e),
        };
        let listed = match std::fs::read_to_string(&out_file) {
            Ok(t) => t,
            Err(_) if !out.status.success() => {
                return (
                    StageState::Failed,
                    json!({"reason": format!("badblocks exited with {}: {}", out.status, out.stderr_tail)}),
                )
            }
            Err(_) => String::new(),
        };
        match badblocks::parse(&listed) {
            Ok(b) => bad.extend(b),
            Err(e) => return (StageState::Failed, json!({"reason": e})),
        }
        if !out.status.success() && bad.is_empty() {
            return (
                StageState::Failed,
                json!({"reason": format!("badblocks exited with {}: {}", out.status, out.stderr_tail)}),
            );
        }
        tested += len;
    }
    let ranges = badblocks::sector_ranges(&bad, BLOCK);
    // What badblocks found is a fact; the coordinator's `*/bad_blocks`
    // threshold fails the disk.
    ctx.emit(
        Kind::Disk,
        format!("{}/bad_blocks", d.name),
        bad.len() as f64,
    );
    let mut summary = json!({"tested_bytes": tested, "regions": regions_json(&plan)});
    if !bad.is_empty() {
        summary["bad_blocks"] = json!(bad.len());
        summary["bad_sector_ranges"] = json!(ranges);
        summary["found"] = json!(format!(
            "{} bad block(s) of {BLOCK} bytes: {}",
            bad.len(),
            badblocks::describe(&ranges)
        ));
    }
    (StageState::Passed, summary)
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let subs = super::per_disk(ctx, "badblocks", |i, d| one(ctx, i, d)).await;
    let scope = match ctx.claim.durations.destructive_scope {
        DestructiveScope::Sample => "sample",
        DestructiveScope::WholeDisk => "whole disk",
    };
    StageReport::from_sub_steps(subs, json!({"disks": ctx.disks().len(), "scope": scope}))
}
