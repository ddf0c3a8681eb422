//! DiskSurface (destructive): `badblocks -w` per disk, in parallel, over
//! samples at the start, middle and end (quick) or the whole disk (deep,
//! soak). Any bad block fails the disk, named as a sector range.
//!
//! badblocks' machine-readable result is its `-o` file: one bad block
//! number per line. Never: run it on a disk the interlock refused (and
//! badblocks itself refuses a disk in use).

use std::time::Duration;

use serde_json::json;

use common::inventory::DiskInfo;
use common::profile::DestructiveScope;
use common::stage::StageState;

use super::destructive::{disk_bytes, regions, regions_json};
use super::{sub_step, StageCtx, StageReport};
use crate::exec::ToolCommand;

/// badblocks' block size.
const BLOCK: u64 = 4096;
/// Bytes per sampled region.
const SAMPLE_REGION: u64 = 16 << 20;
/// Stop counting after this many bad blocks: the disk has failed anyway.
const MAX_BAD: u32 = 256;

/// Parses badblocks' `-o` output: one block number per line.
pub fn parse_bad_blocks(text: &str) -> Result<Vec<u64>, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            l.parse::<u64>()
                .map_err(|_| format!("badblocks output line {l:?} is not a block number"))
        })
        .collect()
}

/// Bad blocks as inclusive 512-byte sector ranges, adjacent blocks merged.
pub fn sector_ranges(blocks: &[u64], block_size: u64) -> Vec<(u64, u64)> {
    let per = block_size / 512;
    let mut sorted = blocks.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for b in sorted {
        let (first, last) = (b * per, b * per + per - 1);
        match out.last_mut() {
            Some(r) if r.1 + 1 == first => r.1 = last,
            _ => out.push((first, last)),
        }
    }
    out
}

fn describe(ranges: &[(u64, u64)]) -> String {
    let shown: Vec<String> = ranges
        .iter()
        .take(10)
        .map(|(a, b)| format!("{a}-{b}"))
        .collect();
    let more = if ranges.len() > 10 {
        format!(" and {} more ranges", ranges.len() - 10)
    } else {
        String::new()
    };
    format!("sectors {}{more}", shown.join(", "))
}

async fn one(ctx: &StageCtx, i: usize, d: &DiskInfo) -> (StageState, serde_json::Value) {
    let size = disk_bytes(ctx, d);
    let scope = ctx.claim.durations.destructive_scope;
    let plan = regions(size, scope, SAMPLE_REGION);
    let mut bad: Vec<u64> = Vec::new();
    let mut tested = 0u64;
    for (r, (offset, len)) in plan.iter().enumerate() {
        // Checked before each pass: nothing may have claimed the disk meanwhile.
        if let Err(refused) = super::interlock_check(ctx, d).await {
            return refused;
        }
        let out_file = ctx
            .work_dir
            .join(format!("badblocks-{}-{i}-{r}.txt", d.name));
        let _ = std::fs::remove_file(&out_file);
        let (first, last) = (offset / BLOCK, (offset + len) / BLOCK - 1);
        // Four patterns, each written and read back: about 8 passes of I/O.
        let secs = 600 + len / (20 << 20) * 8;
        let cmd = ToolCommand::new("badblocks", "e2fsprogs", Duration::from_secs(secs))
            .args([
                "-w",
                "-b",
                &BLOCK.to_string(),
                "-e",
                &MAX_BAD.to_string(),
                "-o",
            ])
            .arg(&out_file)
            .arg(format!("/dev/{}", d.name))
            .arg(last.to_string())
            .arg(first.to_string());
        let out = match ctx.run_tool(&cmd).await {
            Ok(o) => o,
            Err(e) => {
                return (
                    StageState::Failed,
                    json!({"reason": super::tool_failure(&e)}),
                )
            }
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
        match parse_bad_blocks(&listed) {
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
    let ranges = sector_ranges(&bad, BLOCK);
    let regions_json = regions_json(&plan);
    if bad.is_empty() {
        (
            StageState::Passed,
            json!({"tested_bytes": tested, "regions": regions_json}),
        )
    } else {
        (
            StageState::Failed,
            json!({
                "reason": format!("{} bad block(s) of {BLOCK} bytes: {}", bad.len(), describe(&ranges)),
                "bad_sector_ranges": ranges,
                "regions": regions_json,
            }),
        )
    }
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let jobs = ctx.disks().iter().enumerate().map(|(i, d)| async move {
        let started = ctx.clock.now();
        let (state, summary) = one(ctx, i, d).await;
        sub_step(
            i,
            format!("{} badblocks", d.name),
            state,
            started,
            ctx.clock.now(),
            summary,
        )
    });
    let subs = futures_util::future::join_all(jobs).await;
    let scope = match ctx.claim.durations.destructive_scope {
        DestructiveScope::Sample => "sample",
        DestructiveScope::WholeDisk => "whole disk",
    };
    StageReport::from_sub_steps(subs, json!({"disks": ctx.disks().len(), "scope": scope}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_blocks_become_merged_sector_ranges() {
        assert_eq!(parse_bad_blocks("").unwrap(), Vec::<u64>::new());
        assert_eq!(parse_bad_blocks("12\n13\n40\n").unwrap(), [12, 13, 40]);
        assert!(parse_bad_blocks("12\nx\n").is_err());
        assert_eq!(sector_ranges(&[13, 12, 40], 4096), [(96, 111), (320, 327)]);
        assert!(describe(&sector_ranges(&[1], 4096)).contains("sectors 8-15"));
    }
}
