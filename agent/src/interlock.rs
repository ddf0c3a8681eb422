//! The destructive-test interlock: decides whether a disk may be written.
//!
//! Refused, always: the disk holding the running system (`/`), a disk with a
//! mounted partition or active swap, a disk with holders (md, LVM, dm), and
//! any disk the kernel will not give us exclusively (`O_EXCL` on a block
//! device fails while it is mounted, swapped on or claimed). Refused unless
//! the run has `wipe`: a disk with a partition table or a filesystem
//! signature (`wipefs --json`, read-only). `wipe` lifts only that refusal.
//!
//! A [`WriteGrant`] holds the disk open with `O_EXCL` from before the
//! check until it is dropped after the last write, so nobody can mount it
//! or assemble it into md/dm meanwhile; before each write
//! [`WriteGrant::recheck`] makes sure `/dev/<disk>` is still the device
//! checked (same device number and serial).
//!
//! Never: write anything itself, or answer "allowed" when it could not look
//! (an unreadable mount table or a failed probe is a refusal).

use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::exec::{self};
use crate::host::Roots;
use crate::tools::wipefs;

/// Why a disk may not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: String,
    /// `wipe` lifts it (partition table or signature, nothing else).
    pub wipe_lifts: bool,
}

impl Refusal {
    fn hard(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
            wipe_lifts: false,
        }
    }
}

/// The disk (not partition) names under /sys/block, with their partitions.
fn partitions(roots: &Roots, disk: &str) -> Vec<String> {
    let dir = roots.sys.join("block").join(disk);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut parts: Vec<String> = entries
        .flatten()
        .filter(|e| e.path().join("partition").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    parts.sort();
    parts
}

/// `MAJ:MIN` of the disk and each of its partitions.
fn dev_numbers(roots: &Roots, disk: &str) -> BTreeSet<String> {
    let base = roots.sys.join("block").join(disk);
    std::iter::once(base.clone())
        .chain(partitions(roots, disk).into_iter().map(|p| base.join(p)))
        .filter_map(|p| std::fs::read_to_string(p.join("dev")).ok())
        .map(|s| s.trim().to_string())
        .collect()
}

/// Where any of `devs` is mounted, from a mountinfo table.
fn mounts_of(mountinfo: &str, devs: &BTreeSet<String>) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, _, majmin, _, point) = (f.next()?, f.next()?, f.next()?, f.next()?, f.next()?);
            devs.contains(majmin).then(|| point.to_string())
        })
        .collect()
}

/// Swap areas on `disk` or its partitions, from /proc/swaps.
fn swaps_of(swaps: &str, disk: &str, parts: &[String]) -> Vec<String> {
    swaps
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| {
            let n = name.trim_start_matches("/dev/");
            n == disk || parts.iter().any(|p| p == n)
        })
        .map(str::to_string)
        .collect()
}

fn holders(roots: &Roots, disk: &str) -> Vec<String> {
    let base = roots.sys.join("block").join(disk);
    std::iter::once(base.clone())
        .chain(partitions(roots, disk).into_iter().map(|p| base.join(p)))
        .filter_map(|p| std::fs::read_dir(p.join("holders")).ok())
        .flat_map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
        })
        .collect()
}

/// Leave to write one disk, given by [`grant`] moments ago. A command that
/// writes to a disk takes one, so nothing can name a disk to write that the
/// interlock did not allow; there is no other way to make one.
#[derive(Debug)]
pub struct WriteGrant {
    disk: String,
    /// The disk, held with `O_EXCL` (none in unit tests of commands).
    hold: Option<File>,
    /// `major:minor` and serial at the check.
    dev: String,
    serial: String,
}

impl WriteGrant {
    /// The disk's /sys/block name.
    pub fn disk(&self) -> &str {
        &self.disk
    }

    /// The device to write: `/dev/<disk>`.
    pub fn device(&self) -> String {
        format!("/dev/{}", self.disk)
    }

    /// Checks, right before a write, that `/dev/<disk>` is still the device
    /// the interlock checked and holds: same device number (of the node,
    /// of the held descriptor, in sysfs) and same serial.
    pub fn recheck(&self, roots: &Roots) -> Result<(), Refusal> {
        use std::os::unix::fs::MetadataExt;
        let (dev, serial) = identity(roots, &self.disk);
        if dev != self.dev || serial != self.serial {
            return Err(Refusal::hard(format!(
                "{} changed since the check (device {dev:?} serial {serial:?}, was {:?} {:?})",
                self.disk, self.dev, self.serial
            )));
        }
        let node = std::fs::metadata(self.device())
            .map_err(|e| Refusal::hard(format!("cannot stat {}: {e}", self.device())))?
            .rdev();
        let held = match &self.hold {
            Some(f) => f
                .metadata()
                .map_err(|e| Refusal::hard(format!("cannot stat the held disk: {e}")))?
                .rdev(),
            None => node,
        };
        if node != held || majmin(node) != self.dev {
            return Err(Refusal::hard(format!(
                "{} is not the device checked (node {}, held {}, checked {})",
                self.device(),
                majmin(node),
                majmin(held),
                self.dev
            )));
        }
        Ok(())
    }

    /// Opens the disk for writing (the grant already holds it exclusively).
    pub fn open_for_write(&self, direct: bool) -> std::io::Result<File> {
        let mut opts = std::fs::OpenOptions::new();
        opts.read(true).write(true);
        if direct {
            opts.custom_flags(nix::libc::O_DIRECT);
        }
        opts.open(self.device())
    }

    /// A grant for tests of the commands that take one.
    #[cfg(test)]
    pub(crate) fn for_test(disk: &str) -> Self {
        Self {
            disk: disk.into(),
            hold: None,
            dev: String::new(),
            serial: String::new(),
        }
    }
}

fn majmin(rdev: u64) -> String {
    format!(
        "{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    )
}

/// A disk's `major:minor` and serial (NVMe/SCSI serial or WWID, a loop
/// device's backing file) as sysfs says now.
fn identity(roots: &Roots, disk: &str) -> (String, String) {
    let base = roots.sys.join("block").join(disk);
    let read = |p: &str| {
        std::fs::read_to_string(base.join(p))
            .map(|s| s.trim().to_string())
            .ok()
    };
    let dev = read("dev").unwrap_or_default();
    let serial = read("device/serial")
        .or_else(|| read("device/wwid"))
        .or_else(|| read("wwid"))
        .or_else(|| read("loop/backing_file"))
        .unwrap_or_default();
    (dev, serial)
}

/// Why no grant was given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoGrant {
    /// The run is non-destructive: no disk is written, none is checked.
    NonDestructive,
    /// The disk may not be written.
    Refused(Refusal),
}

/// Leave to write `disk` in a run that is `destructive`, with the run's
/// `wipe` override: the one place both the run and the disk are checked.
pub async fn grant(
    roots: &Roots,
    disk: &str,
    destructive: bool,
    wipe: bool,
) -> Result<WriteGrant, NoGrant> {
    if !destructive {
        return Err(NoGrant::NonDestructive);
    }
    if disk.is_empty() || disk.contains('/') || !roots.sys.join("block").join(disk).exists() {
        return Err(NoGrant::Refused(Refusal::hard(format!(
            "{disk:?} is not a whole disk under /sys/block"
        ))));
    }
    // Held from before the check to the end of the writes. When the kernel
    // will not give it, the check names why (mounted, swap, holders).
    let hold = match open_exclusive(Path::new(&format!("/dev/{disk}")), false, false) {
        Ok(f) => f,
        Err(e) => {
            check_held(roots, disk, wipe)
                .await
                .map_err(NoGrant::Refused)?;
            return Err(NoGrant::Refused(Refusal::hard(format!(
                "the kernel refuses exclusive access: {e}"
            ))));
        }
    };
    let (dev, serial) = identity(roots, disk);
    check_held(roots, disk, wipe)
        .await
        .map_err(NoGrant::Refused)?;
    let grant = WriteGrant {
        disk: disk.into(),
        hold: Some(hold),
        dev,
        serial,
    };
    grant.recheck(roots).map_err(NoGrant::Refused)?;
    Ok(grant)
}

/// Decides whether `disk` (a /sys/block name) may be written, `wipe` being
/// the run's override. Reads /proc and /sys under `roots` and probes the
/// device read-only.
pub async fn check(roots: &Roots, disk: &str, wipe: bool) -> Result<(), Refusal> {
    check_held(roots, disk, wipe).await?;
    let dev = format!("/dev/{disk}");
    open_exclusive(Path::new(&dev), false, false)
        .map(drop)
        .map_err(|e| Refusal::hard(format!("the kernel refuses exclusive access: {e}")))
}

/// [`check`] for a disk this process already holds with `O_EXCL`.
async fn check_held(roots: &Roots, disk: &str, wipe: bool) -> Result<(), Refusal> {
    if disk.is_empty() || disk.contains('/') || !roots.sys.join("block").join(disk).exists() {
        return Err(Refusal::hard(format!(
            "{disk:?} is not a whole disk under /sys/block"
        )));
    }
    let devs = dev_numbers(roots, disk);
    if devs.is_empty() {
        return Err(Refusal::hard("cannot read the device numbers from sysfs"));
    }
    let mountinfo = std::fs::read_to_string(roots.proc.join("self/mountinfo"))
        .map_err(|e| Refusal::hard(format!("cannot read the mount table: {e}")))?;
    let mounts = mounts_of(&mountinfo, &devs);
    if mounts.iter().any(|m| m == "/") {
        return Err(Refusal::hard("holds the running system (mounted at /)"));
    }
    if !mounts.is_empty() {
        return Err(Refusal::hard(format!("mounted at {}", mounts.join(", "))));
    }
    let swaps = std::fs::read_to_string(roots.proc.join("swaps"))
        .map_err(|e| Refusal::hard(format!("cannot read /proc/swaps: {e}")))?;
    let parts = partitions(roots, disk);
    let on = swaps_of(&swaps, disk, &parts);
    if !on.is_empty() {
        return Err(Refusal::hard(format!("active swap on {}", on.join(", "))));
    }
    let held = holders(roots, disk);
    if !held.is_empty() {
        return Err(Refusal::hard(format!(
            "held by {} (md, LVM or dm)",
            held.join(", ")
        )));
    }
    let dev = format!("/dev/{disk}");
    let probe = wipefs::probe(&dev);
    let out = exec::run(&probe, &CancellationToken::new(), String::new)
        .await
        .map_err(|e| Refusal::hard(format!("cannot probe for signatures: {e}")))?;
    if !out.status.success() {
        return Err(Refusal::hard(format!("wipefs failed: {}", out.stderr_tail)));
    }
    let mut found = wipefs::parse(&out.stdout).map_err(Refusal::hard)?;
    if !parts.is_empty() {
        found.push(format!("partitions {}", parts.join(", ")));
    }
    if !found.is_empty() && !wipe {
        return Err(Refusal {
            reason: format!(
                "has data signatures ({}); start the run with --override wipe=true to allow",
                found.join("; ")
            ),
            wipe_lifts: true,
        });
    }
    Ok(())
}

/// Opens a block device with `O_EXCL`, which the kernel refuses while it is
/// mounted, an active swap, or claimed by md/dm. Holding the descriptor keeps
/// anyone else from claiming it exclusively meanwhile. `direct` adds
/// `O_DIRECT` (reads and writes bypass the page cache).
pub fn open_exclusive(dev: &Path, write: bool, direct: bool) -> std::io::Result<File> {
    let mut flags = nix::libc::O_EXCL;
    if direct {
        flags |= nix::libc::O_DIRECT;
    }
    std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(flags)
        .open(dev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_and_swaps_are_matched_by_device_number_and_name() {
        // The first lines of this machine's /proc/self/mountinfo.
        let mi = "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard\n\
                  22 27 0:21 / /proc rw,relatime - proc proc rw\n";
        let devs: BTreeSet<String> = ["254:0".to_string()].into();
        assert_eq!(mounts_of(mi, &devs), ["/"]);
        assert!(mounts_of(mi, &["7:0".to_string()].into()).is_empty());
        let swaps = "Filename\tType\tSize\tUsed\tPriority\n/dev/loop3 partition 65532 0 -2\n";
        assert_eq!(swaps_of(swaps, "loop3", &[]), ["/dev/loop3"]);
        assert!(swaps_of(swaps, "loop30", &[]).is_empty());
        assert_eq!(swaps_of(swaps, "sda", &["loop3".into()]), ["/dev/loop3"]);
    }
}
