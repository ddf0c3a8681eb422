//! WipeProbe (destructive): per disk, in parallel, write a pattern that
//! encodes each sector's own offset at the start, middle and end of the
//! disk (quick) or over all of it (deep, soak), then read everything back
//! with O_DIRECT and compare. Catches I/O errors, silent corruption and
//! misdirected or aliased writes (a disk smaller than it claims), and
//! reports them as `<disk>/{mismatched_sectors,io_errors}` with where they
//! were; the coordinator's thresholds fail the disk.
//!
//! Never: write a disk the interlock refused, or without holding it open
//! with `O_EXCL` for the whole probe.

use std::fs::File;
use std::os::unix::fs::FileExt;

use serde_json::json;

use common::inventory::DiskInfo;
use common::measurement::Kind;
use common::stage::StageState;
use tokio_util::sync::CancellationToken;

use super::destructive::{disk_bytes, regions, regions_json};
use super::{StageCtx, StageReport};

/// Bytes per write and read.
const CHUNK: u64 = 4 << 20;
/// Bytes per region in a sampled probe.
const SAMPLE_REGION: u64 = 4 << 20;

/// What went wrong, with the byte range it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeError {
    Io {
        op: &'static str,
        offset: u64,
        len: u64,
        error: String,
    },
    Mismatch {
        offset: u64,
        first_bad: u64,
        bad_sectors: u64,
    },
    Aborted,
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Io { op, offset, len, error } => write!(
                f,
                "{op} error at sectors {}-{}: {error}",
                offset / 512,
                (offset + len) / 512 - 1
            ),
            ProbeError::Mismatch { offset, first_bad, bad_sectors } => write!(
                f,
                "read back differs from what was written: {bad_sectors} bad sector(s) in the chunk at sector {}, first at sector {}",
                offset / 512,
                first_bad / 512
            ),
            ProbeError::Aborted => f.write_str("aborted"),
        }
    }
}

/// Fills `buf` (written at byte `offset`) so every 512-byte sector carries
/// its own offset and the run's seed, then a stream derived from both.
pub fn fill(buf: &mut [u8], offset: u64, seed: u64) {
    for (i, sector) in buf.chunks_mut(512).enumerate() {
        let at = offset + (i as u64) * 512;
        let mut x = at ^ seed.rotate_left(17) ^ 0x9E37_79B9_7F4A_7C15;
        for (j, word) in sector.chunks_mut(8).enumerate() {
            let v = match j {
                0 => at,
                1 => seed,
                _ => {
                    // xorshift64*
                    x ^= x >> 12;
                    x ^= x << 25;
                    x ^= x >> 27;
                    x.wrapping_mul(0x2545_F491_4F6C_DD1D)
                }
            };
            word.copy_from_slice(&v.to_le_bytes()[..word.len()]);
        }
    }
}

/// A 4 KiB-aligned buffer for O_DIRECT.
struct Aligned {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn new(len: usize) -> Self {
        let raw = vec![0u8; len + 4096];
        let start = raw.as_ptr().align_offset(4096);
        Self { raw, start, len }
    }
    fn get(&mut self, len: usize) -> &mut [u8] {
        &mut self.raw[self.start..self.start + len.min(self.len)]
    }
}

/// Writes then verifies `regions` of the open device. Blocking.
pub fn probe(
    dev: &File,
    regions: &[(u64, u64)],
    seed: u64,
    cancel: &CancellationToken,
) -> Result<u64, ProbeError> {
    let mut buf = Aligned::new(CHUNK as usize);
    let mut expect = vec![0u8; CHUNK as usize];
    let chunks = || {
        regions.iter().flat_map(|&(start, len)| {
            (0..len.div_ceil(CHUNK)).map(move |i| {
                let off = start + i * CHUNK;
                (off, CHUNK.min(start + len - off))
            })
        })
    };
    for (off, len) in chunks() {
        if cancel.is_cancelled() {
            return Err(ProbeError::Aborted);
        }
        let b = buf.get(len as usize);
        fill(b, off, seed);
        dev.write_all_at(b, off).map_err(|e| ProbeError::Io {
            op: "write",
            offset: off,
            len,
            error: e.to_string(),
        })?;
    }
    dev.sync_all().map_err(|e| ProbeError::Io {
        op: "flush",
        offset: 0,
        len: 512,
        error: e.to_string(),
    })?;
    let mut verified = 0;
    for (off, len) in chunks() {
        if cancel.is_cancelled() {
            return Err(ProbeError::Aborted);
        }
        let b = buf.get(len as usize);
        dev.read_exact_at(b, off).map_err(|e| ProbeError::Io {
            op: "read",
            offset: off,
            len,
            error: e.to_string(),
        })?;
        let e = &mut expect[..len as usize];
        fill(e, off, seed);
        if b != e {
            let bad: Vec<usize> = b
                .chunks(512)
                .zip(e.chunks(512))
                .enumerate()
                .filter(|(_, (x, y))| x != y)
                .map(|(i, _)| i)
                .collect();
            return Err(ProbeError::Mismatch {
                offset: off,
                first_bad: off + bad[0] as u64 * 512,
                bad_sectors: bad.len() as u64,
            });
        }
        verified += len;
    }
    Ok(verified)
}

async fn one(ctx: &StageCtx, d: &DiskInfo) -> (StageState, serde_json::Value) {
    let grant = match super::destructive_grant(ctx, d).await {
        Ok(g) => g,
        Err(refused) => return refused,
    };
    if let Err(refused) = super::recheck(ctx, &grant) {
        return refused;
    }
    // The grant holds the disk exclusively; this descriptor writes it.
    let dev = match grant.open_for_write(true) {
        Ok(f) => f,
        Err(e) => {
            return (
                StageState::Skipped,
                common::wire::SubStepReport::interlock_refusal_summary(&format!(
                    "interlock refused {}: cannot open exclusively: {e}",
                    d.name
                )),
            )
        }
    };
    let size = disk_bytes(ctx, d);
    let regions = regions(size, ctx.claim.durations.destructive_scope, SAMPLE_REGION);
    let seed = (ctx.claim.run_id as u64).wrapping_mul(0x100_0000_01B3) ^ size;
    let cancel = ctx.abort.token().clone();
    let plan = regions.clone();
    let res = tokio::task::spawn_blocking(move || probe(&dev, &plan, seed, &cancel)).await;
    let regions_json = regions_json(&regions);
    // What the probe found is reported as facts (`<disk>/mismatched_sectors`,
    // `<disk>/io_errors`); the coordinator's thresholds fail the disk.
    let (mismatched, io_errors, mut summary) = match res {
        Ok(Ok(bytes)) => (0, 0, json!({"verified_bytes": bytes})),
        Ok(Err(
            e @ ProbeError::Mismatch {
                offset,
                first_bad,
                bad_sectors,
            },
        )) => (
            bad_sectors,
            0,
            json!({"found": e.to_string(), "mismatch": {
                "chunk_sector": offset / 512,
                "first_bad_sector": first_bad / 512,
                "bad_sectors": bad_sectors,
            }}),
        ),
        Ok(Err(
            e @ ProbeError::Io {
                op, offset, len, ..
            },
        )) => (
            0,
            1,
            json!({"found": e.to_string(), "io_error": {
                "op": op,
                "first_sector": offset / 512,
                "last_sector": (offset + len) / 512 - 1,
            }}),
        ),
        Ok(Err(e @ ProbeError::Aborted)) => {
            return (
                StageState::Failed,
                json!({"reason": e.to_string(), "regions": regions_json}),
            )
        }
        Err(e) => {
            return (
                StageState::Failed,
                json!({"reason": format!("probe task failed: {e}")}),
            )
        }
    };
    ctx.emit(
        Kind::Disk,
        format!("{}/mismatched_sectors", d.name),
        mismatched as f64,
    );
    ctx.emit(
        Kind::Disk,
        format!("{}/io_errors", d.name),
        io_errors as f64,
    );
    summary["regions"] = json!(regions_json);
    (StageState::Passed, summary)
}

pub async fn run(ctx: &StageCtx) -> StageReport {
    let subs = super::per_disk(ctx, "WipeProbe", |_, d| one(ctx, d)).await;
    StageReport::from_sub_steps(
        subs,
        json!({"disks": ctx.disks().len(), "scope": ctx.claim.durations.destructive_scope}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pattern_differs_per_sector_and_per_seed() {
        let mut a = vec![0u8; 1024];
        fill(&mut a, 0, 1);
        assert_ne!(a[..512], a[512..], "each sector carries its own offset");
        let mut b = vec![0u8; 1024];
        fill(&mut b, 0, 2);
        assert_ne!(a, b);
        let mut c = vec![0u8; 512];
        fill(&mut c, 512, 1);
        assert_eq!(c[..], a[512..], "the same sector gets the same bytes");
    }
}
