//! A destructive quick run on loop devices the test makes: the destructive
//! stages (DiskSurface, WipeProbe, fio writes) really write the clean disk,
//! and the interlock refuses a disk with a filesystem, a mounted one and one
//! used as swap, whose bytes are unchanged afterwards (for the swap disk:
//! all but the swap slots the kernel itself may use). The run passes, not
//! fully tested, with every refusal an event.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::run_state::RunState;
use support::{options, sh, Coord, Loop, Undo};
use vet_agent::host::Selector;
use vet_agent::run::boot;

fn image_of(dev: &str) -> std::path::PathBuf {
    let name = dev.trim_start_matches("/dev/");
    std::fs::read_to_string(format!("/sys/block/{name}/loop/backing_file"))
        .unwrap()
        .trim()
        .into()
}

fn digest(p: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(p).unwrap())
}

/// The swap disk's swap area is its first `SWAP_KIB` KiB: the kernel may
/// swap into it (that is its job), never into the header page or past it.
const SWAP_KIB: usize = 64;

fn digest_outside_swap_slots(p: &Path) -> blake3::Hash {
    let img = std::fs::read(p).unwrap();
    let mut h = blake3::Hasher::new();
    h.update(&img[..4096]);
    h.update(&img[SWAP_KIB * 1024..]);
    h.finalize()
}

/// `mount`'s error for `dev` at `at`, or `Ok` (then unmounted again).
fn try_mount(dev: &str, at: &Path) -> Result<(), String> {
    let out = std::process::Command::new("mount")
        .args(["-t", "ext4", "-o", "ro", dev])
        .arg(at)
        .output()
        .unwrap();
    if out.status.success() {
        let _ = std::process::Command::new("umount").arg(at).status();
        return Ok(());
    }
    Err(String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The pids of running `badblocks` processes that name `dev`.
fn badblocks_on(dev: &str) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let args: Vec<&[u8]> = c.split(|b| *b == 0).collect();
                args.first().is_some_and(|a| a.ends_with(b"badblocks"))
                    && args.contains(&dev.as_bytes())
            })
        })
        .collect()
}

/// Tries to mount `dev` while a badblocks that writes it is running, and
/// returns mount's error when that badblocks was still running after the
/// attempt; `None` when no write was under way throughout.
fn mount_while_written(dev: &str, at: &Path) -> Option<String> {
    let before = badblocks_on(dev);
    if before.is_empty() {
        return None;
    }
    let r = try_mount(dev, at);
    let during = before.iter().any(|p| badblocks_on(dev).contains(p));
    match r {
        Ok(()) => panic!("{dev} mounted while badblocks wrote it"),
        Err(e) if during => Some(e),
        Err(_) => None,
    }
}

fn stage<'a>(d: &'a Value, name: &str) -> &'a Value {
    d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn sub<'a>(stage: &'a Value, prefix: &str) -> &'a Value {
    stage["sub_steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"].as_str().unwrap().starts_with(prefix))
        .unwrap_or_else(|| panic!("no sub-step {prefix}* in {}", stage["name"]))
}

#[tokio::test(flavor = "multi_thread")]
async fn destructive_stages_write_only_what_the_interlock_allows() {
    let dir = tempfile::tempdir().unwrap();
    let clean = Loop::new(dir.path(), 96);
    let fs = Loop::new(dir.path(), 32);
    let mounted = Loop::new(dir.path(), 32);
    let swap = Loop::new(dir.path(), 32);
    let mkfs = "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0";
    sh(&format!("{mkfs} {}", fs.0));
    sh(&format!("{mkfs} {}", mounted.0));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount -o ro {} {}", mounted.0, mnt.display()));
    let _umount = Undo(format!("umount {}", mnt.display()));
    sh(&format!(
        "mkswap -q {} {SWAP_KIB} && swapon {}",
        swap.0, swap.0
    ));
    let _swapoff = Undo(format!("swapoff {}", swap.0));
    let fingerprint = || {
        [
            digest(&image_of(&fs.0)),
            digest(&image_of(&mounted.0)),
            digest_outside_swap_slots(&image_of(&swap.0)),
        ]
    };
    let before = fingerprint();

    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:31";
    coord.operator().add_host("e2e-destroy", mac, None).await;
    let run = coord
        .operator()
        .start_run(
            "e2e-destroy",
            json!({"profile": "quick", "non_destructive": false}),
        )
        .await;
    let mut opts = options(&coord, dir.path(), mac, &clean.0);
    let names: Vec<&str> = [&clean, &fs, &mounted, &swap]
        .iter()
        .map(|l| l.0.as_str())
        .collect();
    opts.disks = Some(Selector::new(&format!("{{{}}}", names.join(","))).unwrap());
    let started = Instant::now();
    let mut agent = tokio::spawn(tokio::time::timeout(Duration::from_secs(600), boot(opts)));
    // While badblocks writes the clean disk, a mount of it fails because the
    // disk is held, not because it carries no filesystem: the two refusals
    // read differently (checked again after the run, when nothing holds it).
    let probe = dir.path().join("probe");
    std::fs::create_dir(&probe).unwrap();
    let mut busy_mount = None;
    let end = loop {
        tokio::select! {
            r = &mut agent => break r.unwrap().expect("run ends").expect("boot"),
            _ = tokio::time::sleep(Duration::from_millis(20)), if busy_mount.is_none() => {
                busy_mount = mount_while_written(&clean.0, &probe);
            }
        }
    };
    let busy = busy_mount.expect("never saw badblocks write the clean disk");
    assert!(busy.contains("busy"), "mount during the write: {busy}");
    let after = try_mount(&clean.0, &probe).expect_err("nothing mounts a patterned disk");
    assert!(!after.contains("busy"), "mount after the run: {after}");
    eprintln!("destructive quick run took {:?}", started.elapsed());
    let d = coord.get(&format!("/runs/{}", run)).await;
    assert_eq!(
        end.state,
        RunState::Passed,
        "{}",
        serde_json::to_string_pretty(&d["stages"]).unwrap()
    );

    for (name, prefix) in [
        ("DiskSurface", "badblocks"),
        ("WipeProbe", "WipeProbe"),
        ("DiskPerf", "fio write"),
    ] {
        let s = stage(&d, name);
        assert_eq!(s["state"], "passed", "{name}: {s}");
        let ok = sub(s, &format!("{} {prefix}", clean.name()));
        assert_eq!(ok["state"], "passed", "{ok}");
        for (l, why) in [
            (&fs, "ext4"),
            (&mounted, "mounted at"),
            (&swap, "active swap"),
        ] {
            let r = sub(s, &format!("{} {prefix}", l.name()));
            assert_eq!(r["state"], "skipped", "{r}");
            assert!(
                r["summary_json"].as_str().unwrap().contains(why),
                "{name}: {r}"
            );
        }
    }
    let events = d["events"].as_array().unwrap();
    let refusals = events
        .iter()
        .filter(|e| e["kind"] == "interlock_refused")
        .count();
    assert_eq!(refusals, 9, "three disks refused in three stages");
    assert!(
        events.iter().any(|e| e["kind"] == "pass_incomplete"),
        "passed, not fully tested"
    );

    assert_eq!(before, fingerprint(), "refused disks are byte-identical");
    // The clean disk was really written: WipeProbe's last pattern tags each
    // sector with its own offset (sector 1 of the disk starts with 512).
    let img = std::fs::read(image_of(&clean.0)).unwrap();
    assert_eq!(u64::from_le_bytes(img[512..520].try_into().unwrap()), 512);

    let ms = coord
        .get(&format!("/runs/{}/measurements?kind=fio", run))
        .await;
    assert!(
        ms.as_array()
            .unwrap()
            .iter()
            .any(|m| m["key"] == format!("{}/write_iops", clean.name())
                && m["value"].as_f64().is_some_and(|v| v > 0.0)),
        "fio wrote to the clean disk"
    );
}
