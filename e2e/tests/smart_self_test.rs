//! The SMART stage's self-test, end to end through a real boot run. No disk
//! here has SMART, so `smartctl` is a stand-in that replays recorded real
//! output (`fixtures/smartctl`) and logs how it was called: a Samsung 860
//! EVO that supports self-tests (short: 2 min), then a WD drive recorded
//! with a short test in progress, then the 860 EVO idle with its newest
//! self-test passed.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;

use common::run_state::RunState;
use support::{options, Coord, Loop};
use vet_agent::run::boot;

fn fixture(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/smartctl")
        .join(name)
        .canonicalize()
        .unwrap()
        .display()
        .to_string()
}

/// Writes the replaying `smartctl` into `dir/bin` and returns its call log.
fn replaying_smartctl(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("smartctl.log");
    let idle = fixture("sata-ssd-samsung-860evo-smartctl70-x.json");
    let running = fixture("sata-hdd-wdc-wd140edfz-smartctl70-a.json");
    let script = format!(
        r#"#!/bin/sh
echo "$*" >> '{log}'
case " $* " in
  *" -x "*) cat '{idle}' ;;
  *" -t "*|*" -X "*) ;;
  *" -l selftest "*)
    n=$(grep -c -- '-l selftest' '{log}')
    if [ "$n" -le 1 ]; then cat '{running}'; else cat '{idle}'; fi ;;
  *) echo "unexpected smartctl call: $*" >&2; exit 1 ;;
esac
"#,
        log = log.display()
    );
    let path = bin.join("smartctl");
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let old = std::env::var("PATH").unwrap_or_default();
    // This file holds one test, so no other thread reads PATH meanwhile.
    std::env::set_var("PATH", format!("{}:{old}", bin.display()));
    log
}

#[tokio::test(flavor = "multi_thread")]
async fn the_short_self_test_runs_and_is_judged_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let log = replaying_smartctl(dir.path());
    let disk = Loop::new(dir.path(), 64);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:11";
    coord.operator().add_host("e2e-selftest", mac, None).await;
    coord
        .operator()
        .start_run(
            "e2e-selftest",
            json!({"profile": "quick", "non_destructive": true}),
        )
        .await;
    let started = Instant::now();
    let end = tokio::time::timeout(
        Duration::from_secs(400),
        boot(options(&coord, dir.path(), mac, &disk.0)),
    )
    .await
    .expect("run ends")
    .expect("boot");
    eprintln!("run with self-test took {:?}", started.elapsed());
    assert_eq!(end.state, RunState::Passed);

    let calls = std::fs::read_to_string(&log).unwrap();
    let calls: Vec<&str> = calls.lines().collect();
    let dev = &disk.0;
    assert_eq!(
        calls,
        [
            format!("--json=c -x {dev}"),
            format!("--json=c -t short {dev}"),
            format!("--json=c -c -l selftest {dev}"),
            format!("--json=c -c -l selftest {dev}"),
        ],
        "read, start the short test, poll while it runs, poll once it is done"
    );

    let d = coord.get(&format!("/runs/{}", end.run_id)).await;
    let smart = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "SMART")
        .unwrap();
    let sub = &smart["sub_steps"][0];
    assert_eq!(sub["state"], "passed", "{sub}");
    let summary: serde_json::Value =
        serde_json::from_str(sub["summary_json"].as_str().unwrap()).unwrap();
    assert_eq!(summary["self_test"]["state"], "passed", "{summary}");

    let ms = coord
        .get(&format!(
            "/runs/{}/measurements?kind=smart_attr",
            end.run_id
        ))
        .await;
    let value = |key: String| {
        ms.as_array()
            .unwrap()
            .iter()
            .find(|m| m["key"] == key)
            .and_then(|m| m["value"].as_f64())
    };
    assert_eq!(
        value(format!("{}/self_test_passed", disk.name())),
        Some(1.0)
    );
    assert_eq!(
        value(format!("{}/smart_status_passed", disk.name())),
        Some(1.0),
        "the recorded attributes were read too"
    );
}
