//! What this machine is: disks and NICs per DESIGN.md's selection, CPU,
//! memory, MACs, boot id. Reads /proc and /sys under a configurable root so
//! tests can lay out a tree.
//!
//! Never: write anything, or select a loop/ram/zram/sr/dm/md/nbd device or
//! an empty one without an explicit `--disks` glob.

use std::fs;
use std::path::PathBuf;

use globset::{Glob, GlobMatcher};

use common::inventory::{CpuInfo, DiskInfo, Excluded, Inventory, MemoryInfo, NicInfo};
use common::mac::Mac;

use crate::sysfs::{entries, read};

/// Where to read /proc and /sys from (`/` on a real machine).
#[derive(Debug, Clone)]
pub struct Roots {
    pub proc: PathBuf,
    pub sys: PathBuf,
}

impl Default for Roots {
    fn default() -> Self {
        Roots {
            proc: "/proc".into(),
            sys: "/sys".into(),
        }
    }
}

/// A `--disks`/`--nics` glob, matched against the name and the /dev path.
#[derive(Debug, Clone)]
pub struct Selector(GlobMatcher);

impl Selector {
    pub fn new(pattern: &str) -> Result<Selector, String> {
        Glob::new(pattern)
            .map(|g| Selector(g.compile_matcher()))
            .map_err(|e| format!("bad glob {pattern:?}: {e}"))
    }

    pub fn matches(&self, name: &str) -> bool {
        self.0.is_match(name) || self.0.is_match(format!("/dev/{name}"))
    }
}

const VIRTUAL_DISKS: [&str; 7] = ["loop", "ram", "zram", "sr", "dm-", "md", "nbd"];

/// `nvme<X>c<Y>n<Z>`: a path of a multipath NVMe namespace.
fn is_nvme_path(name: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((ctrl, rest)) = rest.split_once('c') else {
        return false;
    };
    let Some((path, ns)) = rest.split_once('n') else {
        return false;
    };
    digits(ctrl) && digits(path) && digits(ns)
}

/// Disks to test and the ones left out, with reasons.
pub fn disks(roots: &Roots, select: Option<&Selector>) -> (Vec<DiskInfo>, Vec<Excluded>) {
    let block = roots.sys.join("class/block");
    let base = if block.exists() {
        block
    } else {
        roots.sys.join("block")
    };
    let mut chosen = Vec::new();
    let mut left = Vec::new();
    for name in entries(&base) {
        let dir = base.join(&name);
        // Partitions have a `partition` file; they are part of their disk.
        if dir.join("partition").exists() {
            continue;
        }
        let sectors: u64 = read(&dir.join("size"))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let exclude = |reason: String| Excluded {
            name: name.clone(),
            class: "disk".into(),
            reason,
        };
        // One path of a multipath namespace: the same disk as its head
        // nvmeXnY, never tested (nor written) twice, whatever --disks says.
        if is_nvme_path(&name) {
            left.push(exclude(
                "an NVMe multipath path device; its nvmeXnY head is the disk".into(),
            ));
            continue;
        }
        match select {
            Some(sel) if !sel.matches(&name) => {
                left.push(exclude("not selected by --disks".into()));
                continue;
            }
            Some(_) => {}
            None => {
                if let Some(v) = VIRTUAL_DISKS.iter().find(|p| name.starts_with(*p)) {
                    left.push(exclude(format!(
                        "{}* devices are not disks under test",
                        v.trim_end_matches('-')
                    )));
                    continue;
                }
            }
        }
        if sectors == 0 {
            left.push(exclude("size 0".into()));
            continue;
        }
        let model = read(&dir.join("device/model")).unwrap_or_default();
        let serial = read(&dir.join("device/serial"))
            .or_else(|| read(&dir.join("device/wwid")))
            .unwrap_or_default();
        let transport = if name.starts_with("nvme") {
            "nvme"
        } else if name.starts_with("vd") {
            "virtio"
        } else if name.starts_with("loop") {
            "loop"
        } else {
            "scsi"
        };
        chosen.push(DiskInfo {
            name: name.clone(),
            model,
            serial,
            size_bytes: sectors * 512,
            rotational: read(&dir.join("queue/rotational")).as_deref() == Some("1"),
            transport: transport.into(),
            firmware: read(&dir.join("device/firmware_rev"))
                .or_else(|| read(&dir.join("device/rev"))),
        });
    }
    (chosen, left)
}

/// NICs to test (interfaces with a device link, or `--nics`) and the rest.
pub fn nics(roots: &Roots, select: Option<&Selector>) -> (Vec<NicInfo>, Vec<Excluded>) {
    let base = roots.sys.join("class/net");
    let mut chosen = Vec::new();
    let mut left = Vec::new();
    for name in entries(&base) {
        let dir = base.join(&name);
        let exclude = |reason: &str| Excluded {
            name: name.clone(),
            class: "nic".into(),
            reason: reason.into(),
        };
        let selected = match select {
            Some(sel) => sel.matches(&name),
            None => dir.join("device").exists(),
        };
        if !selected {
            left.push(exclude(if select.is_some() {
                "not selected by --nics"
            } else {
                "no device link (virtual interface)"
            }));
            continue;
        }
        let Some(mac) = read(&dir.join("address")).and_then(|a| a.parse::<Mac>().ok()) else {
            left.push(exclude("no MAC address"));
            continue;
        };
        let driver = fs::read_link(dir.join("device/driver"))
            .ok()
            .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
            .unwrap_or_default();
        let speed = read(&dir.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .filter(|s| *s > 0)
            .map(|s| s as u64);
        chosen.push(NicInfo {
            name,
            mac,
            driver,
            speed_mbps: speed,
            firmware: None,
        });
    }
    (chosen, left)
}

/// Every non-loopback MAC of the machine (what the agent claims with).
pub fn macs(roots: &Roots) -> Vec<Mac> {
    let base = roots.sys.join("class/net");
    let mut out: Vec<Mac> = entries(&base)
        .into_iter()
        .filter(|n| n != "lo")
        .filter_map(|n| read(&base.join(n).join("address"))?.parse().ok())
        .filter(|m: &Mac| m.0 != [0; 6])
        .collect();
    out.sort();
    out.dedup();
    out
}

pub fn boot_id(roots: &Roots) -> Option<String> {
    read(&roots.proc.join("sys/kernel/random/boot_id"))
}

pub fn cpu(roots: &Roots) -> CpuInfo {
    let text = read(&roots.proc.join("cpuinfo")).unwrap_or_default();
    let field = |line: &str, key: &str| -> Option<String> {
        let (k, v) = line.split_once(':')?;
        (k.trim() == key).then(|| v.trim().to_string())
    };
    let mut info = CpuInfo::default();
    let mut sockets = std::collections::BTreeSet::new();
    for line in text.lines() {
        if line.starts_with("processor") {
            info.logical_cores += 1;
        }
        if let Some(m) = field(line, "model name").filter(|_| info.model.is_empty()) {
            info.model = m;
        }
        if let Some(m) = field(line, "microcode").filter(|_| info.microcode.is_none()) {
            info.microcode = Some(m);
        }
        if let Some(p) = field(line, "physical id") {
            sockets.insert(p);
        }
    }
    info.sockets = sockets.len().max(1) as u32;
    info
}

/// One `/proc/meminfo` field (e.g. `MemAvailable`) in KiB.
pub fn meminfo_kib(roots: &Roots, field: &str) -> Option<u64> {
    let text = read(&roots.proc.join("meminfo"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
}

pub fn memory(roots: &Roots) -> MemoryInfo {
    MemoryInfo {
        total_bytes: meminfo_kib(roots, "MemTotal").unwrap_or(0) * 1024,
    }
}

/// SMBIOS facts the kernel exposes (no dmidecode needed).
pub fn dmi(roots: &Roots) -> Option<serde_json::Value> {
    let dir = roots.sys.join("class/dmi/id");
    let mut map = serde_json::Map::new();
    for f in [
        "sys_vendor",
        "product_name",
        "product_serial",
        "board_vendor",
        "board_name",
        "bios_vendor",
        "bios_version",
        "bios_date",
    ] {
        if let Some(v) = read(&dir.join(f)).filter(|v| !v.is_empty()) {
            map.insert(f.into(), v.into());
        }
    }
    (!map.is_empty()).then_some(serde_json::Value::Object(map))
}

/// PCI devices: address, class, vendor and device ids.
pub fn pci(roots: &Roots) -> Vec<serde_json::Value> {
    let base = roots.sys.join("bus/pci/devices");
    entries(&base)
        .into_iter()
        .map(|addr| {
            let d = base.join(&addr);
            serde_json::json!({
                "address": addr,
                "class": read(&d.join("class")),
                "vendor": read(&d.join("vendor")),
                "device": read(&d.join("device")),
            })
        })
        .collect()
}

pub fn inventory(
    roots: &Roots,
    disk_sel: Option<&Selector>,
    nic_sel: Option<&Selector>,
) -> Inventory {
    let (disks, mut excluded) = disks(roots, disk_sel);
    let (nics, left) = nics(roots, nic_sel);
    excluded.extend(left);
    Inventory {
        cpu: cpu(roots),
        memory: memory(roots),
        disks,
        nics,
        excluded,
        dmi: dmi(roots),
        pci: pci(roots),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn write(root: &Path, rel: &str, content: &str) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    #[test]
    fn selection_follows_the_design() {
        let t = tempfile::tempdir().unwrap();
        let sys = t.path().join("sys");
        for (name, size) in [
            ("sda", "1000"),
            ("nvme0n1", "2000"),
            ("nvme0c0n1", "2000"),
            ("nvme0c1n1", "2000"),
            ("loop0", "100"),
            ("ram0", "10"),
            ("sr0", "0"),
            ("dm-0", "50"),
            ("sdb", "0"),
        ] {
            write(&sys, &format!("block/{name}/size"), size);
        }
        write(&sys, "block/sda/device/model", "SAMSUNG MZ7LH960\n");
        write(&sys, "block/sda/queue/rotational", "0");
        write(&sys, "block/sda/sda1/partition", "1");
        write(&sys, "block/sda/sda1/size", "10");
        let roots = Roots {
            proc: t.path().join("proc"),
            sys,
        };
        let (chosen, left) = disks(&roots, None);
        let names: Vec<_> = chosen.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1", "sda"]);
        // A multipath path is never a disk, even when --disks names it.
        let all = Selector::new("nvme*").unwrap();
        let (by_glob, left_sel) = disks(&roots, Some(&all));
        let names: Vec<_> = by_glob.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["nvme0n1"]);
        assert!(left_sel
            .iter()
            .any(|e| e.name == "nvme0c1n1" && e.reason.contains("multipath")));
        assert!(
            is_nvme_path("nvme12c3n45") && !is_nvme_path("nvme1n1") && !is_nvme_path("nvme0cXn1")
        );
        assert_eq!(chosen[1].model, "SAMSUNG MZ7LH960");
        assert_eq!(chosen[1].size_bytes, 512_000);
        let reasons: Vec<_> = left
            .iter()
            .map(|e| (e.name.as_str(), e.reason.as_str()))
            .collect();
        assert!(
            reasons.contains(&("loop0", "loop* devices are not disks under test")),
            "{reasons:?}"
        );
        assert!(
            reasons.contains(&("dm-0", "dm* devices are not disks under test")),
            "{reasons:?}"
        );
        assert!(reasons.contains(&("sdb", "size 0")), "{reasons:?}");
        // --disks replaces the default: loop devices for tests.
        let sel = Selector::new("/dev/loop*").unwrap();
        let (chosen, _) = disks(&roots, Some(&sel));
        assert_eq!(
            chosen.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
            ["loop0"]
        );
    }

    #[test]
    fn reads_this_machine() {
        let roots = Roots::default();
        let inv = inventory(&roots, None, None);
        assert!(inv.cpu.logical_cores >= 1);
        assert!(inv.memory.total_bytes > 0);
        assert!(!macs(&roots).is_empty());
        assert!(boot_id(&roots).is_some_and(|b| b.len() >= 32));
    }
}
