//! Every recorded fixture of smartctl, fio, iperf3 and stress-ng parses; the
//! normalized, judged output is snapshotted; failing disks fail; no input
//! makes a parser panic.

use std::path::{Path, PathBuf};

use common::stage::Stage;
use proptest::prelude::*;
use vet_agent::tools::{self, judge, Judged, ParseError, ToolResult, Verdict};

fn fixtures(tool: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures")
        .join(tool);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml")
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no fixtures in {}", dir.display());
    files
}

fn parse(tool: &str, bytes: &[u8]) -> Result<ToolResult, ParseError> {
    match tool {
        "smartctl" => tools::smartctl::parse(bytes, None),
        "fio" => tools::fio::parse(bytes, None),
        "iperf3" => tools::iperf3::parse(bytes, None),
        "stress-ng" => tools::stress_ng::parse(bytes),
        _ => unreachable!(),
    }
}

fn stage(tool: &str) -> Stage {
    match tool {
        "smartctl" => Stage::Smart,
        "fio" => Stage::DiskPerf,
        "iperf3" => Stage::Network,
        _ => Stage::CpuStress,
    }
}

fn judged(tool: &str, file: &Path) -> Judged {
    let bytes = std::fs::read(file).unwrap();
    let result = parse(tool, &bytes)
        .unwrap_or_else(|e| panic!("{}: recorded fixture must parse: {e}", file.display()));
    judge(stage(tool), result)
}

#[test]
fn every_fixture_parses_and_matches_its_snapshot() {
    for tool in ["smartctl", "fio", "iperf3", "stress-ng"] {
        for file in fixtures(tool) {
            let j = judged(tool, &file);
            let name = format!("{tool}__{}", file.file_stem().unwrap().to_string_lossy());
            insta::assert_json_snapshot!(name, j);
        }
    }
}

#[test]
fn verdicts_of_failing_and_broken_devices() {
    let cases = [
        (
            "smartctl",
            "megaraid-sat-hdd-wd4000fyyx-realloc387-smartctl71-a.json",
            Verdict::Fail,
        ),
        (
            "smartctl",
            "nvme-qemu72-emulated-critical-warning-4-FAILED-smartctl73-x.json",
            Verdict::Fail,
        ),
        (
            "smartctl",
            "nvme-samsung-970evo-media-errors7-smartctl70-x.json",
            Verdict::Fail,
        ),
        (
            "smartctl",
            "sas-hdd-seagate-st373453lc-smartctl74.json",
            Verdict::Fail,
        ),
        (
            "smartctl",
            "usb-jmicron-sata-hdd-hitachi-health-FAILED-smartctl71-a.json",
            Verdict::Fail,
        ),
        (
            "smartctl",
            "error-vm-virtio-unknown-device-type-smartctl73-x.json",
            Verdict::Error,
        ),
        (
            "smartctl",
            "error-windows-open-failed-smartctl70.json",
            Verdict::Error,
        ),
        (
            "smartctl",
            "scan-no-devices-smartctl73.json",
            Verdict::Error,
        ),
        (
            "smartctl",
            "nvme-qemu72-emulated-smartctl73-x.json",
            Verdict::Pass,
        ),
        (
            "smartctl",
            "nvme-intel-ssdpedmd800g4-spare93-used51-smartctl73.json",
            Verdict::Pass,
        ),
        // CRC errors (199) and a non-empty error log are warnings, not failures.
        (
            "smartctl",
            "sata-hdd-hgst-hus724020ale640-errorlog-exit64-smartctl73.json",
            Verdict::Pass,
        ),
        // NVMe error-log entries are a warning, not a failure.
        (
            "smartctl",
            "nvme-corsair-force-mp510-smartctl70-a.json",
            Verdict::Pass,
        ),
        (
            "fio",
            "fio-3.33-error-file-creation-disallowed.json",
            Verdict::Error,
        ),
        (
            "fio",
            "fio-3.14-samsung860pro-randread-qd8-32jobs-grouped.json",
            Verdict::Pass,
        ),
        (
            "iperf3",
            "iperf3-3.12-error-connection-refused.json",
            Verdict::Error,
        ),
        (
            "iperf3",
            "iperf3-3.12-udp-200M-loopback.json",
            Verdict::Pass,
        ),
        (
            "stress-ng",
            "stress-ng-0.15.06-cpu-vm-matrix-hdd.yaml",
            Verdict::Pass,
        ),
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    for (tool, file, want) in cases {
        let j = judged(tool, &root.join(tool).join(file));
        assert_eq!(j.verdict, want, "{file}: {:?}", j.reasons);
    }
    let hot = judged(
        "smartctl",
        &root.join("smartctl/nvme-qemu72-emulated-critical-warning-4-FAILED-smartctl73-x.json"),
    );
    assert!(
        hot.reasons
            .iter()
            .any(|r| r.contains("exit status bit 3: SMART status check returned DISK FAILING")),
        "{:?}",
        hot.reasons
    );
    assert!(
        hot.reasons
            .iter()
            .any(|r| r == "critical: nvme0/critical_warning = 4 (must be lte 0)"),
        "{:?}",
        hot.reasons
    );
}

fn smartctl_doc(name: &str) -> serde_json::Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smartctl")
        .join(name);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

#[test]
fn self_test_support_and_progress_from_recorded_devices() {
    use tools::smartctl::{
        self_test_running, self_test_support, SelfTestKind::*, SelfTestSupport::*,
    };
    let samsung = smartctl_doc("sata-ssd-samsung-860evo-smartctl70-x.json");
    assert_eq!(
        self_test_support(&samsung, Short),
        Supported { minutes: Some(2) }
    );
    assert_eq!(
        self_test_support(&samsung, Long),
        Supported { minutes: Some(85) }
    );
    assert_eq!(self_test_running(&samsung), None, "status 0: idle");
    // Recorded while a short test ran: status 241, "in progress, 10% remaining".
    let wdc = smartctl_doc("sata-hdd-wdc-wd140edfz-smartctl70-a.json");
    assert_eq!(self_test_running(&wdc), Some(10));
    // SCSI: the extended test's duration comes in seconds.
    let sas = smartctl_doc("sas-hdd-seagate-st600mp0036-smartctl73-a.json");
    let secs = sas["scsi_extended_self_test_seconds"].as_u64().unwrap();
    assert_eq!(
        self_test_support(&sas, Long),
        Supported {
            minutes: Some(secs.div_ceil(60))
        }
    );
    // smartctl 7.3 shows no NVMe self-test log: noted as unsupported.
    for name in [
        "nvme-qemu72-emulated-smartctl73-x.json",
        "error-vm-virtio-unknown-device-type-smartctl73-x.json",
        "scsi-intel-raid1-volume-no-smart-smartctl70-a.json",
    ] {
        assert!(
            matches!(
                self_test_support(&smartctl_doc(name), Short),
                Unsupported(_)
            ),
            "{name}"
        );
    }
}

#[test]
fn every_recorded_self_test_log_entry_is_read() {
    use tools::smartctl::{newest_self_test, self_test_outcome, SelfTestOutcome};
    let mut seen = std::collections::BTreeMap::new();
    for file in fixtures("smartctl") {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        let mut entries: Vec<serde_json::Value> = Vec::new();
        for log in ["standard", "extended"] {
            if let Some(t) = doc["ata_smart_self_test_log"][log]["table"].as_array() {
                entries.extend(t.iter().cloned());
            }
        }
        for (k, v) in doc.as_object().unwrap() {
            if k.starts_with("scsi_self_test_") {
                entries.push(v.clone());
            }
        }
        if let Some(newest) = newest_self_test(&doc) {
            assert_eq!(Some(newest), entries.first(), "{}", file.display());
        }
        for e in &entries {
            let outcome = self_test_outcome(e)
                .unwrap_or_else(|| panic!("{}: unread entry {e}", file.display()));
            if e["status"]["passed"] == true || e["result"]["value"] == 0 {
                assert_eq!(outcome, SelfTestOutcome::Passed, "{e}");
            }
            let label = match &outcome {
                SelfTestOutcome::Passed => "passed".to_string(),
                SelfTestOutcome::Failed(w) => format!("failed: {w}"),
                SelfTestOutcome::Aborted(w) => format!("aborted: {w}"),
                SelfTestOutcome::Running => "running".to_string(),
            };
            *seen.entry(label).or_insert(0) += 1;
        }
    }
    // The Hitachi behind a USB bridge failed an extended test with a read error.
    assert!(
        seen.contains_key("failed: Extended offline: Completed: read failure at LBA 104870168"),
        "{seen:?}"
    );
    assert!(
        seen.contains_key("aborted: Short offline: Aborted by host"),
        "{seen:?}"
    );
    assert!(seen["passed"] > 10, "{seen:?}");
}

#[test]
fn units_and_keys_follow_the_scheme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let j = judged(
        "fio",
        &root.join("fio/fio-3.14-samsung860pro-randread-qd8-32jobs-grouped.json"),
    );
    let bw = j
        .measurements
        .iter()
        .find(|m| m.key == "sdf/read_bw_mbps")
        .expect("bandwidth");
    assert_eq!(bw.unit, "MB/s");
    // bw_bytes 214,726,… B/s is 214.7 MB/s (10^6 bytes).
    assert!((bw.value - 214.7).abs() < 0.1, "{}", bw.value);
    assert_eq!(
        j.measurements
            .iter()
            .find(|m| m.key == "sdf/read_clat_p99_us")
            .unwrap()
            .unit,
        "µs"
    );
    let j = judged(
        "iperf3",
        &root.join("iperf3/iperf3-3.12-udp-200M-loopback.json"),
    );
    let keys: Vec<(&str, &str)> = j
        .measurements
        .iter()
        .map(|m| (m.key.as_str(), m.unit))
        .collect();
    assert_eq!(keys, [("nic/bps", "bit/s"), ("nic/lost_pct", "%")]);
    let j = judged(
        "smartctl",
        &root.join("smartctl/nvme-intel-ssdpedmd800g4-spare93-used51-smartctl73.json"),
    );
    let margin = j
        .measurements
        .iter()
        .find(|m| m.key == "nvme0/available_spare_margin")
        .unwrap();
    assert_eq!(margin.value, 93.0 - 10.0);
}

fn series(r: &ToolResult) -> Vec<(&str, i64, f64)> {
    r.series
        .iter()
        .map(|t| (t.measured.key.as_str(), t.before_end_ms, t.measured.value))
        .collect()
}

fn assert_series(got: &[(&str, i64, f64)], want: &[(&str, i64, f64)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for (g, w) in got.iter().zip(want) {
        assert_eq!((g.0, g.1), (w.0, w.1), "{got:?}");
        assert!(
            (g.2 - w.2).abs() < 1e-6 * w.2.abs().max(1.0),
            "{g:?} vs {w:?}"
        );
    }
}

#[test]
fn throughput_over_time_from_status_reports_and_intervals() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let read = |p: &str| std::fs::read(root.join(p)).unwrap();

    // Four documents (three status reports, then the final one); totals so
    // far in each: io_bytes 16503799808 @ 889 ms, 34504572928 @ 1889,
    // 56436719616 @ 2889, 58956840960 @ 3001; timestamp_ms …12233, …13232,
    // …14232, …14395.
    let r = tools::fio::parse(
        &read("fio/fio-3.33-status-interval-seqread-file.json"),
        Some("sdx"),
    )
    .unwrap();
    let k = "sdx/read_interval_bw_mbps";
    assert_series(
        &series(&r),
        &[
            (k, 2162, 16503799808.0 / 889.0 / 1000.0),
            (k, 1163, (34504572928.0 - 16503799808.0) / 1000.0 / 1000.0),
            (k, 163, (56436719616.0 - 34504572928.0) / 1000.0 / 1000.0),
            (k, 0, (58956840960.0 - 56436719616.0) / 112.0 / 1000.0),
        ],
    );
    // The pass's result is the final document's, as without status reports.
    let bw = r
        .measurements
        .iter()
        .find(|m| m.key == "sdx/read_bw_mbps")
        .unwrap();
    assert!((bw.value - 19645.731742).abs() < 1e-3, "{}", bw.value);
    assert_eq!(r.series[0].measured.unit, "MB/s");

    // Two jobs on one file: each interval is the sum of both jobs' rates.
    let r = tools::fio::parse(
        &read("fio/fio-3.33-status-interval-randwrite-2jobs-file.json"),
        None,
    )
    .unwrap();
    let k = "w/write_interval_bw_mbps";
    assert_series(
        &series(&r),
        &[
            (k, 2168, (89624576.0 / 889.0 + 91910144.0 / 888.0) / 1000.0),
            (
                k,
                1168,
                ((245030912.0 - 89624576.0) / 1000.0 + (247439360.0 - 91910144.0) / 1000.0)
                    / 1000.0,
            ),
            (
                k,
                168,
                ((403521536.0 - 245030912.0) / 1000.0 + (405946368.0 - 247439360.0) / 1000.0)
                    / 1000.0,
            ),
            (
                k,
                0,
                ((422842368.0 - 403521536.0) / 112.0 + (425369600.0 - 405946368.0) / 113.0)
                    / 1000.0,
            ),
        ],
    );
    // Without status reports there is one interval: the whole pass.
    let r = tools::fio::parse(
        &read("fio/fio-3.33-multijob-read-randwrite-randrw-vm.json"),
        None,
    )
    .unwrap();
    assert!(
        r.series.iter().all(|t| t.before_end_ms == 0),
        "{:?}",
        series(&r)
    );
    assert!(!r.series.is_empty());
    // fio 2.x has no timestamp_ms: no series, the result as before.
    let r = tools::fio::parse(
        &read("fio/fio-2.1.4-multijob-seq-rand-read-write.json"),
        None,
    )
    .unwrap();
    assert!(r.series.is_empty() && !r.measurements.is_empty());

    // iperf3: one point per interval, both directions of a --bidir test.
    let r = tools::iperf3::parse(
        &read("iperf3/iperf3-3.12-tcp-bidir-loopback.json"),
        Some("eth0"),
    )
    .unwrap();
    let (f, b) = ("eth0/interval_bps", "eth0/reverse_interval_bps");
    assert_series(
        &series(&r),
        &[
            (f, 1999, 6848715285.416707),
            (b, 1999, 7170206966.2459),
            (f, 999, 7437021857.85782),
            (b, 999, 6433181248.835262),
            (f, 0, 5226554904.43655),
            (b, 0, 7901225663.50579),
        ],
    );
    assert!(r.series.iter().all(|t| t.measured.unit == "bit/s"));
    let r = tools::iperf3::parse(
        &read("iperf3/iperf3-3.12-error-connection-refused.json"),
        None,
    )
    .unwrap();
    assert!(r.series.is_empty());
}

#[test]
fn a_stream_with_a_document_that_is_not_fio_is_refused() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
    let mut bytes =
        std::fs::read(root.join("fio/fio-3.33-status-interval-seqread-file.json")).unwrap();
    bytes.extend(std::fs::read(root.join("iperf3/iperf3-3.12-tcp-client-loopback.json")).unwrap());
    let e = tools::fio::parse(&bytes, None).unwrap_err();
    assert!(e.to_string().contains("fio version"), "{e}");
}

#[test]
fn truncated_fixtures_never_panic() {
    for tool in ["smartctl", "fio", "iperf3", "stress-ng"] {
        for file in fixtures(tool) {
            let bytes = std::fs::read(&file).unwrap();
            let step = (bytes.len() / 97).max(1);
            for cut in (0..bytes.len()).step_by(step) {
                // Any answer is fine; a panic is not. A cut JSON document is never valid.
                let r = parse(tool, &bytes[..cut]);
                let only_whitespace_cut = bytes[cut..].iter().all(u8::is_ascii_whitespace);
                if tool != "stress-ng" && !only_whitespace_cut {
                    assert!(r.is_err(), "{} cut at {cut} parsed", file.display());
                }
            }
        }
    }
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for tool in ["smartctl", "fio", "iperf3", "stress-ng"] {
            let _ = parse(tool, &bytes);
        }
    }

    #[test]
    fn arbitrary_json_values_never_panic(v in arb_json()) {
        let bytes = serde_json::to_vec(&v).unwrap();
        for tool in ["smartctl", "fio", "iperf3"] {
            let _ = parse(tool, &bytes);
        }
    }
}

/// JSON documents shaped like tool output: the keys the parsers look at,
/// with values of any type.
fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(serde_json::Value::Number)
            .unwrap_or(serde_json::Value::Null)),
        "[a-z_ ]{0,8}".prop_map(serde_json::Value::from),
    ];
    let keys = prop_oneof![
        Just("smartctl"),
        Just("exit_status"),
        Just("device"),
        Just("name"),
        Just("smart_status"),
        Just("passed"),
        Just("ata_smart_attributes"),
        Just("table"),
        Just("raw"),
        Just("value"),
        Just("id"),
        Just("nvme_smart_health_information_log"),
        Just("fio version"),
        Just("jobs"),
        Just("read"),
        Just("write"),
        Just("clat_ns"),
        Just("percentile"),
        Just("50.000000"),
        Just("bw_bytes"),
        Just("start"),
        Just("end"),
        Just("error"),
        Just("sum_received"),
        Just("bits_per_second"),
        Just("test_start"),
        Just("protocol"),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            proptest::collection::vec((keys.clone(), inner), 0..6).prop_map(|kv| {
                serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
            }),
        ]
    })
}
