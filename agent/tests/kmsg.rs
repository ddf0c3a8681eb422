//! Kernel log records recorded on this VM and from public reports are
//! classified: block/medium errors, machine checks, EDAC, AER, throttling.

use std::path::Path;

use vet_agent::tools::{self};

fn kmsg_fixture(name: &str) -> String {
    std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fixtures/kmsg")
            .join(name),
    )
    .unwrap()
}

#[test]
fn kernel_records_recorded_on_this_vm_are_classified() {
    use tools::kmsg::classify_record;
    let text = kmsg_fixture("vm-6.18-loop-nospc-dev-kmsg.txt");
    let found: Vec<_> = text.lines().filter_map(classify_record).collect();
    assert_eq!(found.len(), 4, "four block-layer errors, nothing else");
    for (r, e) in &found {
        assert_eq!((r.facility, r.level), (0, 3), "kernel facility, KERN_ERR");
        assert_eq!(e.key(), "io_error/loop1");
        assert!(
            !e.is_critical(),
            "a space allocation error is not a medium error"
        );
    }
    assert_eq!(found[0].0.seq, 449);
    // The same message written from user space (facility 1) is never counted.
    let forged = text
        .lines()
        .find(|l| l.contains("critical space"))
        .unwrap()
        .replacen("3,", "11,", 1);
    assert!(classify_record(&forged).is_none());
}

#[test]
fn public_recorded_kernel_hardware_errors_are_classified() {
    use tools::kmsg::classify;
    let text = kmsg_fixture("public-dmesg-hardware-errors.txt");
    let got: Vec<(String, u64, bool)> = text
        .lines()
        .filter_map(classify)
        .map(|e| (e.key(), e.count, e.is_critical()))
        .collect();
    let want: Vec<(String, u64, bool)> = [
        ("edac/mc1_ce", 1, false),
        ("edac/mc0_ce", 1, false),
        ("edac/mc0_ce", 4, false),
        ("edac/mc1_ce", 262, false),
        ("throttle/cpu2", 1, false),
        ("throttle/cpu6", 1, false),
        ("throttle/cpu1", 1, false),
        // Bank 128 is the kernel's thermal pseudo-bank, not a machine check.
        ("throttle/cpu1", 1, false),
        ("aer/0000:00:1d.0", 1, false),
        ("aer/0000:00:1c.1", 1, false),
        ("aer/0000:00:1c.5", 1, false),
        ("aer/0000:03:00.0", 1, false),
    ]
    .into_iter()
    .map(|(k, c, x)| (k.to_string(), c, x))
    .collect();
    assert_eq!(got, want);
}
