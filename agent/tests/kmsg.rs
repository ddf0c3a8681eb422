//! The kernel-log watch on this machine's real /dev/kmsg: a loop device
//! whose backing file sits on a full tmpfs makes the block layer log a real
//! error, and the watch reports it with the device.

use std::process::Command;
use std::time::Duration;

use vet_agent::kmsg_watch;

fn sh(cmd: &str) -> std::process::Output {
    Command::new("sh").arg("-c").arg(cmd).output().unwrap()
}

#[tokio::test]
async fn a_real_block_error_in_the_kernel_log_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("full");
    std::fs::create_dir(&mnt).unwrap();
    assert!(sh(&format!(
        "mount -t tmpfs -o size=1m tmpfs {}",
        mnt.display()
    ))
    .status
    .success());
    let _umount = Defer(format!("umount {}", mnt.display()));
    let img = mnt.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(8 << 20)
        .unwrap();
    let out = sh(&format!("losetup --find --show {}", img.display()));
    let dev = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(dev.starts_with("/dev/loop"), "losetup: {dev}");
    let _detach = Defer(format!("losetup -d {dev}"));

    let mut rx = kmsg_watch::spawn("/dev/kmsg".into()).expect("/dev/kmsg readable as root");
    // Writing past what the tmpfs holds fails inside the loop driver.
    let _ = sh(&format!(
        "dd if=/dev/zero of={dev} bs=1M count=4 oflag=direct status=none"
    ));
    let name = dev.trim_start_matches("/dev/").to_string();
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (record, err) = rx.recv().await.expect("watch alive");
            if err.device == name {
                return (record, err);
            }
        }
    })
    .await
    .expect("the kernel logged the error and the watch saw it");
    assert_eq!(found.1.key(), format!("io_error/{name}"));
    assert!(
        found.0.message.contains(&format!("dev {name}, sector")),
        "{}",
        found.0.message
    );
}

struct Defer(String);
impl Drop for Defer {
    fn drop(&mut self) {
        let _ = sh(&self.0);
    }
}
