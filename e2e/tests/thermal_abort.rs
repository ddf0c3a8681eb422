//! Live thermal abort, end to end: the sidecar reads a hwmon tree the test
//! writes; raising `temp1_input` past the critical default while CPUStress
//! runs makes the coordinator answer a batch with `abort_stage`, the agent
//! kills stress-ng's whole process group, and the run is held at CPUStress.
//! The latency is printed (recorded in docs/BENCHMARKS.md); the test only
//! asserts the correctness bound of 10 s.

mod support;

use std::time::{Duration, Instant};

use serde_json::json;

use support::{options, wait_run, Coord, Loop};
use vet_agent::run::boot;

/// (pid, pgid) of processes whose parent is `parent` and whose name is `comm`.
fn children_named(parent: u32, comm: &str) -> Vec<(i32, i32)> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
            let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (ppid, pgid): (u32, i32) = (f.get(1)?.parse().ok()?, f.get(2)?.parse().ok()?);
            (name == comm && ppid == parent).then_some((pid, pgid))
        })
        .collect()
}

/// Whether any live (non-zombie) process is in process group `pgid`.
fn group_alive(pgid: i32) -> bool {
    std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
        std::fs::read_to_string(e.path().join("stat")).is_ok_and(|stat| {
            let Some((_, rest)) = stat.rsplit_once(") ") else {
                return false;
            };
            let f: Vec<&str> = rest.split_whitespace().collect();
            f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid)
        })
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hot_sensor_during_cpu_stress_kills_stress_ng_and_holds_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let coord = Coord::start(dir.path()).await;
    let mac = "52:54:00:e2:e1:41";
    coord.operator().add_host("e2e-thermal", mac, None).await;
    let run = coord
        .operator()
        .start_run("e2e-thermal", json!({"non_destructive": true}))
        .await;
    let run_id = run;
    let opts = options(&coord, dir.path(), mac, &disk.0);
    let temp = opts.sensors_root.join("class/hwmon/hwmon0/temp1_input");
    let agent = tokio::spawn(boot(opts));

    // Wait for CPUStress's stress-ng (a child of this process: the agent runs in it).
    let me = std::process::id();
    let deadline = Instant::now() + Duration::from_secs(180);
    let pgid = loop {
        if let Some((_, pgid)) = children_named(me, "stress-ng").first() {
            let d = coord.get(&format!("/runs/{run_id}")).await;
            if d["stages"][4]["state"] == "running" {
                break *pgid;
            }
        }
        assert!(Instant::now() < deadline, "CPUStress never ran stress-ng");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(group_alive(pgid), "stress-ng is running");

    // 99 °C: above the critical default (temp lt 95).
    std::fs::write(&temp, "99000\n").unwrap();
    let hot = Instant::now();
    while group_alive(pgid) {
        assert!(
            hot.elapsed() < Duration::from_secs(10),
            "stress-ng still alive 10 s after the breach"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let latency = hot.elapsed();
    eprintln!("thermal abort latency (sensor write -> stress-ng group gone): {latency:?}");

    let d = wait_run(&coord, run_id, Duration::from_secs(60), "held", |d| {
        d["state"] == "FailedHolding"
    })
    .await;
    assert_eq!(d["failed_stage"], "CPUStress");
    let reasons = d["stages"][4]["summary_json"].as_str().unwrap().to_string();
    assert!(reasons.contains("coretemp/Package id 0"), "{reasons}");
    coord
        .post(&format!("/runs/{run_id}/release"), json!({}))
        .await;
    let end = tokio::time::timeout(Duration::from_secs(60), agent)
        .await
        .expect("agent ends after release")
        .unwrap()
        .unwrap();
    assert_eq!(end.state, common::run_state::RunState::Failed);
}
