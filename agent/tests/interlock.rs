//! The interlock on real block devices this test makes: loop devices that
//! are clean, carry ext4, carry a partition table, are mounted, or are
//! active swap; and the disk that holds this machine's `/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use vet_agent::host::Roots;
use vet_agent::interlock::{check, grant, open_exclusive, NoGrant};

struct Loop {
    dev: String,
    img: PathBuf,
}

impl Loop {
    fn new(dir: &Path, name: &str, mib: u64) -> Loop {
        let img = dir.join(format!("{name}.img"));
        std::fs::File::create(&img)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let out = Command::new("losetup")
            .args(["--find", "--show", "--partscan"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        Loop {
            dev: String::from_utf8(out.stdout).unwrap().trim().to_string(),
            img,
        }
    }
    fn name(&self) -> &str {
        self.dev.trim_start_matches("/dev/")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").arg("-d").arg(&self.dev).status();
    }
}

fn sh(cmd: &str) {
    let out = Command::new("sh").arg("-c").arg(cmd).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Undoes a mount or swapon even when an assertion fails.
struct Undo(String);
impl Drop for Undo {
    fn drop(&mut self) {
        let _ = Command::new("sh").arg("-c").arg(&self.0).status();
    }
}

fn digest(p: &Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(p).unwrap())
}

#[tokio::test]
async fn the_interlock_refuses_every_disk_in_use_and_signatures_unless_wiped() {
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots::default();

    let clean = Loop::new(dir.path(), "clean", 32);
    check(&roots, clean.name(), false)
        .await
        .expect("a blank disk may be written");
    // Leave to write comes only with a destructive run and names the disk.
    let g = grant(&roots, clean.name(), true, false)
        .await
        .expect("a blank disk in a destructive run gets a grant");
    assert_eq!(g.device(), clean.dev);
    assert_eq!(
        grant(&roots, clean.name(), false, false).await.unwrap_err(),
        NoGrant::NonDestructive
    );

    let fs = Loop::new(dir.path(), "fs", 32);
    sh(&format!(
        "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 {}",
        fs.dev
    ));
    let r = check(&roots, fs.name(), false).await.unwrap_err();
    assert!(r.wipe_lifts && r.reason.contains("ext4"), "{r:?}");
    check(&roots, fs.name(), true)
        .await
        .expect("wipe lifts a signature refusal");

    let parted = Loop::new(dir.path(), "parted", 32);
    sh(&format!(
        "echo 'label: gpt' | sfdisk -q {} && echo ',,L' | sfdisk -q --append {}",
        parted.dev, parted.dev
    ));
    sh(&format!("partx -u {} || true", parted.dev));
    let r = check(&roots, parted.name(), false).await.unwrap_err();
    assert!(r.wipe_lifts && r.reason.contains("gpt"), "{r:?}");

    let mounted = Loop::new(dir.path(), "mounted", 32);
    sh(&format!(
        "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 {}",
        mounted.dev
    ));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!("mount -o ro {} {}", mounted.dev, mnt.display()));
    let _umount = Undo(format!("umount {}", mnt.display()));
    let r = check(&roots, mounted.name(), true).await.unwrap_err();
    assert!(!r.wipe_lifts && r.reason.contains("mounted at"), "{r:?}");
    assert!(
        open_exclusive(Path::new(&mounted.dev), false, false).is_err(),
        "the kernel agrees"
    );

    let swap = Loop::new(dir.path(), "swap", 32);
    sh(&format!("mkswap -q {} && swapon {}", swap.dev, swap.dev));
    let _swapoff = Undo(format!("swapoff {}", swap.dev));
    let r = check(&roots, swap.name(), true).await.unwrap_err();
    assert!(!r.wipe_lifts && r.reason.contains("active swap"), "{r:?}");

    // The disk holding `/` here, found the way the interlock finds it.
    let root_dev = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&"/")).then(|| f[2].to_string())
        })
        .unwrap();
    let root_disk = std::fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .find(|e| {
            std::fs::read_to_string(e.path().join("dev")).is_ok_and(|d| d.trim() == root_dev)
                || std::fs::read_dir(e.path()).unwrap().flatten().any(|p| {
                    std::fs::read_to_string(p.path().join("dev"))
                        .is_ok_and(|d| d.trim() == root_dev)
                })
        });
    if let Some(disk) = root_disk {
        let name = disk.file_name().to_string_lossy().into_owned();
        let r = check(&roots, &name, true).await.unwrap_err();
        assert!(
            !r.wipe_lifts && r.reason.contains("running system"),
            "{name}: {r:?}"
        );
    }

    // Not whole disks or not disks at all.
    for bad in ["", "../vda", "no-such-disk"] {
        assert!(check(&roots, bad, true).await.is_err(), "{bad:?}");
    }

    // Looking changed nothing.
    let before: Vec<_> = [&fs, &parted, &swap]
        .iter()
        .map(|l| digest(&l.img))
        .collect();
    for l in [&fs, &parted, &swap] {
        let _ = check(&roots, l.name(), false).await;
    }
    let after: Vec<_> = [&fs, &parted, &swap]
        .iter()
        .map(|l| digest(&l.img))
        .collect();
    assert_eq!(before, after);
}

/// A grant holds the disk from the check to the end of the write: while it
/// lives, the disk cannot be mounted (nor claimed by md/dm).
#[tokio::test]
async fn a_grant_holds_the_disk_until_the_write_ends() {
    let dir = tempfile::tempdir().unwrap();
    let roots = Roots::default();
    let disk = Loop::new(dir.path(), "held", 32);
    sh(&format!(
        "mkfs.ext4 -q -E lazy_itable_init=0,lazy_journal_init=0 {}",
        disk.dev
    ));
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mount = || {
        Command::new("mount")
            .args(["-o", "ro"])
            .arg(&disk.dev)
            .arg(&mnt)
            .output()
            .unwrap()
    };
    let held = grant(&roots, disk.name(), true, true)
        .await
        .expect("a clean ext4 loop device with wipe");
    held.recheck(&roots).expect("still the device checked");
    let tried = mount();
    assert!(
        !tried.status.success(),
        "mounted while the agent held it for writing"
    );
    drop(held);
    let after = mount();
    assert!(
        after.status.success(),
        "{}",
        String::from_utf8_lossy(&after.stderr)
    );
    sh(&format!("umount {}", mnt.display()));
}
