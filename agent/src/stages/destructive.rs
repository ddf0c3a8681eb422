//! What a destructive pass covers: the byte ranges of a disk that
//! DiskSurface and WipeProbe write, by the profile's scope. No I/O but
//! reading the disk's current size from sysfs.

use serde_json::json;

use common::inventory::DiskInfo;
use common::profile::DestructiveScope;

use super::StageCtx;

/// The byte ranges a destructive pass covers on a disk of `size` bytes
/// (aligned to 4 KiB): all of it, or `sample` bytes at its start, middle
/// and end.
pub fn regions(size: u64, scope: DestructiveScope, sample: u64) -> Vec<(u64, u64)> {
    let align = |v: u64| v / 4096 * 4096;
    let size = align(size);
    match scope {
        DestructiveScope::WholeDisk => vec![(0, size)],
        DestructiveScope::Sample => {
            let len = align(sample.min(size / 3));
            if len == 0 {
                return vec![(0, size)];
            }
            let mid = align(size / 2 - len / 2);
            vec![(0, len), (mid, len), (size - len, len)]
        }
    }
}

/// The disk's size in bytes as the kernel sees it now.
pub fn disk_bytes(ctx: &StageCtx, d: &DiskInfo) -> u64 {
    std::fs::read_to_string(ctx.roots.sys.join("block").join(&d.name).join("size"))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .unwrap_or(d.size_bytes)
}

/// The ranges as sub-step summary JSON, in 512-byte sectors.
pub fn regions_json(regions: &[(u64, u64)]) -> Vec<serde_json::Value> {
    regions
        .iter()
        .map(|(o, l)| json!({"sector": o / 512, "sectors": l / 512}))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampled_regions_sit_at_start_middle_and_end() {
        let r = regions(1 << 30, DestructiveScope::Sample, 4 << 20);
        assert_eq!(
            r,
            [
                (0, 4 << 20),
                ((1 << 29) - (2 << 20), 4 << 20),
                ((1 << 30) - (4 << 20), 4 << 20)
            ]
        );
        assert_eq!(
            regions(1 << 30, DestructiveScope::WholeDisk, 4 << 20),
            [(0, 1 << 30)]
        );
        // Tiny disks: thirds, aligned.
        let r = regions(3 * 4096 * 5, DestructiveScope::Sample, 4 << 20);
        assert!(
            r.iter()
                .all(|(o, l)| o % 4096 == 0 && l % 4096 == 0 && *l > 0),
            "{r:?}"
        );
    }
}
