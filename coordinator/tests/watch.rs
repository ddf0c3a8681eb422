//! `vetctl run watch` against the real coordinator while a scripted agent
//! drives the run: plain lines when stdout is not a terminal, breaches as
//! they happen, and the exit code by the final state.

use testkit as support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use common::measurement::Kind;
use common::wire::StageOutcome;
use support::{pass_stage, sample, TestCoordinator, SPEC};

fn watch(coord: &TestCoordinator, run: i64) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vetctl"))
        .args(["run", "watch", &run.to_string(), "--interval", "0.2"])
        .env("VET_COORDINATOR", &coord.base)
        .env("VET_TOKEN", &coord.token)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits for the watcher to exit; returns its code and output.
fn finish(mut child: Child) -> (i32, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("vetctl run watch did not exit");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_follows_a_run_to_passed_and_exits_0() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-w", "52:54:00:00:08:01", None).await;
    let run = coord
        .start_run("node-w", json!({"non_destructive": false}))
        .await;
    let watcher = watch(&coord, run);
    let mut agent = coord.agent("52:54:00:00:08:01", "boot-w").await;
    for ordinal in 0..12 {
        if ordinal == 4 {
            agent.start_stage(4).await;
            agent
                .send(vec![sample(Kind::Temp, "coretemp/Core 0", 61.5, Some(4))])
                .await;
            // Long enough for the watcher to see the stage running.
            tokio::time::sleep(Duration::from_millis(600)).await;
            agent.finish_stage(4, StageOutcome::Passed, None).await;
        } else if ordinal == 10 {
            // A node without a GPU skips the GPU stage and says why.
            agent.start_stage(10).await;
            let (_, v) = agent
                .finish_stage(10, StageOutcome::Skipped, Some("no GPU"))
                .await;
            assert_eq!(v["state"], "skipped", "{v}");
        } else {
            pass_stage(&agent, ordinal).await;
        }
    }
    let (code, out) = tokio::task::block_in_place(|| finish(watcher));
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.contains("skipped: skipped"),
        "the state is not repeated as the reason:\n{out}"
    );
    // The report lists it once, with the agent's reason said once.
    let (_, report) = coord.op_get(&format!("/runs/{run}/report")).await;
    let gpu = report["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "GPU")
        .unwrap();
    assert_eq!(gpu["reasons"], json!(["skipped: no GPU"]), "{gpu}");
    assert_eq!(
        report["not_tested"],
        json!([{"stage": "GPU", "item": null, "reason": "no GPU"}])
    );
    for line in [
        "stage GPU skipped: no GPU",
        "stage Inventory passed",
        "stage CPUStress running",
        "stage CPUStress passed",
        "stage Burn passed",
        "coretemp/Core 0 61.5",
        &format!("run {run}: Passed"),
    ] {
        assert!(out.contains(line), "{line:?} missing from:\n{out}");
    }
    assert_eq!(
        out.matches("stage CPUStress passed").count(),
        1,
        "each change once:\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_shows_the_breach_and_exits_1_when_the_run_is_held() {
    let coord = TestCoordinator::start().await;
    coord
        .add_host("node-wb", "52:54:00:00:08:02", Some(SPEC))
        .await;
    let run = coord.start_run("node-wb", json!({})).await;
    let watcher = watch(&coord, run);
    let mut agent = coord.agent("52:54:00:00:08:02", "boot-wb").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 3", 93.5, Some(4))])
        .await;
    agent.finish_stage(4, StageOutcome::Passed, None).await;
    let (code, out) = tokio::task::block_in_place(|| finish(watcher));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("breach") && out.contains("coretemp/Core 3"),
        "{out}"
    );
    assert!(out.contains("stage CPUStress failed"), "{out}");
    assert!(
        out.contains(&format!("run {run}: FailedHolding at CPUStress")),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_exits_2_on_a_cancelled_run_and_1_line_on_an_unknown_one() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-wc", "52:54:00:00:08:03", None).await;
    let run = coord.start_run("node-wc", json!({})).await;
    let watcher = watch(&coord, run);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (st, body) = coord
        .op_post(&format!("/runs/{run}/cancel"), json!({}))
        .await;
    assert!(st.is_success(), "{body}");
    let (code, out) = tokio::task::block_in_place(|| finish(watcher));
    assert_eq!(code, 2, "{out}");
    assert!(out.contains(&format!("run {run}: Cancelled")), "{out}");

    let (code, out) = tokio::task::block_in_place(|| finish(watch(&coord, 4242)));
    assert_eq!(code, 1, "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one line: {out}");
    assert!(out.contains("4242"), "{out}");
}
