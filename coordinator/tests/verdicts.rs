//! The gate's verdicts over real HTTP with a real SQLite file: a live
//! breach aborts the stage and holds the host; what the agent found on a
//! disk fails that disk's sub-step. (Full runs, batches and claims:
//! `protocol.rs`.)

use testkit as support;

use reqwest::StatusCode;
use serde_json::json;

use common::measurement::Kind;
use common::stage::StageState;
use common::wire::{StageFinish, StageOutcome, SubStepReport};
use support::{sample, TestCoordinator, SPEC};

const MAC: &str = "52:54:00:00:00:01";

#[tokio::test]
async fn critical_breach_halts_and_holds() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-hot", MAC, Some(SPEC)).await;
    let run = coord.start_run("node-hot", json!({})).await;
    let mut agent = coord.agent(MAC, "boot-1").await;
    for ordinal in 0..2 {
        support::pass_stage(&agent, ordinal).await;
    }
    // Firmware passes on the version the spec asks for.
    agent.start_stage(2).await;
    agent.post("/firmware", json!({"components": [{"component": "bios", "identifier": "system", "version": "2.10.2"}]})).await;
    let (st, v) = agent.finish_stage(2, StageOutcome::Passed, None).await;
    assert_eq!(
        (st, v["state"].as_str()),
        (StatusCode::OK, Some("passed")),
        "{v}"
    );
    support::pass_stage(&agent, 3).await;
    // CPUStress: the host override says coretemp below 90.
    let (st, _) = agent.start_stage(4).await;
    assert_eq!(st, StatusCode::OK);
    let (_, ack) = agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 3", 71.0, Some(4))])
        .await;
    assert_eq!(ack["directive"]["directive"], "continue");
    let (_, ack) = agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 3", 93.5, Some(4))])
        .await;
    assert_eq!(
        ack["directive"]["directive"], "abort_stage",
        "a live thermal breach stops the stage: {ack}"
    );
    assert!(ack["directive"]["reason"]
        .as_str()
        .unwrap()
        .contains("coretemp/Core 3"));
    // Samples after the stage ends are stored but not gated.
    let (st, verdict) = agent
        .finish_with(
            4,
            StageFinish {
                outcome: StageOutcome::Passed,
                absent: false,
                reason: None,
                at: None,
                summary: Some(json!({"bogo_ops_per_s": 1234.5})),
                sub_steps: vec![SubStepReport {
                    ordinal: 0,
                    name: "cpu pass".into(),
                    state: StageState::Passed,
                    device: None,
                    started_at: None,
                    completed_at: None,
                    summary: None,
                }],
            },
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(verdict["state"], "failed");
    let d = coord.run_detail(run).await;
    assert!(
        d["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "breach"
                && e["message"].as_str().unwrap().contains("coretemp/Core 3")),
        "the breach is an event: {}",
        d["events"]
    );
    assert!(
        verdict["reasons"][0]
            .as_str()
            .unwrap()
            .contains("coretemp/Core 3 = 93.5 breached lt 90"),
        "{verdict}"
    );
    assert_eq!(verdict["directive"]["directive"], "hold");
    let public_key = verdict["directive"]["public_key"].as_str().unwrap();
    assert!(public_key.starts_with("ssh-ed25519 "), "{public_key}");

    let (_, late) = agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 3", 99.0, Some(4))])
        .await;
    assert_eq!(late["directive"]["directive"], "hold");
    let d = coord.run_detail(run).await;
    assert_eq!(d["state"], "FailedHolding");
    assert_eq!(d["failed_stage"], "CPUStress");
    assert_eq!(d["result"], json!(null));
    assert_eq!(d["stages"][4]["sub_steps"][0]["name"], "cpu pass");
    let db = coord.db();
    let evaluated_late: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM threshold_evaluations WHERE observed = 99.0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        evaluated_late, 0,
        "a sample after its stage ended is stored, not gated"
    );
    let stored_late: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM measurements WHERE value = 99.0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored_late, 1);
    // The private hold key is on disk, 0600, recorded as artifact.
    let path: String = db
        .query_row(
            "SELECT path FROM artifacts WHERE run_id = ?1 AND kind = 'hold_key'",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let (st, key) = coord.op_get(&format!("/runs/{run}/hold-key")).await;
    assert_eq!(st, StatusCode::OK);
    assert!(key["private_key"]
        .as_str()
        .unwrap()
        .contains("OPENSSH PRIVATE KEY"));

    // Next stage cannot start on a held run; the agent reports its address.
    let (st, body) = agent.start_stage(5).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, _) = agent
        .post("/hold-ip", json!({"hold_ip": "127.0.0.1"}))
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = coord
        .op_post(
            &format!("/runs/{run}/release"),
            json!({"power": "poweroff"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["state"], "Failed");
    assert_eq!(body["result"], "fail");
    assert_eq!(body["hold_ip"], "127.0.0.1");
    let (_, d) = agent.post("/heartbeat", json!({})).await;
    assert_eq!(
        d["directive"],
        json!({"directive": "release", "power": "poweroff"})
    );
}

/// The agent reports what a disk's surface scan found, as facts; the gate
/// fails the stage and the sub-step of the disk the breach names, not the
/// other disk's, and keeps what the agent found beside its reason.
#[tokio::test]
async fn bad_blocks_the_agent_found_fail_that_disks_sub_step_in_the_gate() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-d", MAC, None).await;
    let run = coord
        .start_run("node-d", json!({"non_destructive": false}))
        .await;
    let mut agent = coord.agent(MAC, "boot-1").await;
    let surface = common::stage::Stage::DiskSurface.ordinal();
    for ordinal in 0..surface {
        support::pass_stage(&agent, ordinal).await;
    }
    let (st, body) = agent.start_stage(surface).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, ack) = agent
        .send(vec![
            sample(Kind::Disk, "vdb/bad_blocks", 2.0, Some(surface)),
            sample(Kind::Disk, "vdc/bad_blocks", 0.0, Some(surface)),
        ])
        .await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    let found = json!({"bad_blocks": 2, "bad_sector_ranges": [[4096, 4103]]});
    let disk = |ordinal: u32, dev: &str, summary: serde_json::Value| SubStepReport {
        ordinal,
        name: format!("{dev} badblocks"),
        state: StageState::Passed,
        device: Some(dev.into()),
        started_at: None,
        completed_at: None,
        summary: Some(summary),
    };
    let (st, verdict) = agent
        .finish_with(
            surface,
            StageFinish {
                outcome: StageOutcome::Passed,
                absent: false,
                reason: None,
                at: None,
                summary: None,
                sub_steps: vec![disk(0, "vdb", found), disk(1, "vdc", json!({}))],
            },
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{verdict}");
    assert_eq!(verdict["state"], "failed", "{verdict}");
    assert!(
        verdict["reasons"][0]
            .as_str()
            .is_some_and(|r| r.contains("vdb/bad_blocks = 2")),
        "{verdict}"
    );
    let d = coord.run_detail(run).await;
    assert_eq!(d["failed_stage"], "DiskSurface");
    let subs = d["stages"][surface as usize]["sub_steps"]
        .as_array()
        .unwrap();
    let summary = |i: usize| -> serde_json::Value {
        serde_json::from_str(subs[i]["summary_json"].as_str().unwrap()).unwrap()
    };
    assert_eq!(subs[0]["state"], "failed", "{subs:?}");
    assert_eq!(summary(0)["bad_sector_ranges"], json!([[4096, 4103]]));
    assert!(
        summary(0)["reason"]
            .as_str()
            .is_some_and(|r| r.contains("vdb/bad_blocks")),
        "{subs:?}"
    );
    assert_eq!(subs[1]["state"], "passed", "the clean disk: {subs:?}");
}

/// Runs every stage to a pass except those in `skips`, each skipped with
/// its reason and whether there was nothing to test; returns the verdict
/// `GET /runs/{id}/report` gives and the pass_incomplete events' messages.
async fn run_with_skips(
    name: &str,
    mac: &str,
    skips: &[(u32, &str, bool)],
) -> (String, Vec<String>) {
    let coord = TestCoordinator::start().await;
    coord.add_host(name, mac, None).await;
    let run = coord
        .start_run(name, json!({"non_destructive": false}))
        .await;
    let agent = coord.agent(mac, "boot-s").await;
    for ordinal in 0..12 {
        match skips.iter().find(|(o, _, _)| *o == ordinal) {
            Some((_, reason, absent)) => {
                agent.start_stage(ordinal).await;
                let (st, v) = agent
                    .finish_with(
                        ordinal,
                        StageFinish {
                            outcome: StageOutcome::Skipped,
                            absent: *absent,
                            reason: Some(reason.to_string()),
                            at: None,
                            summary: None,
                            sub_steps: Vec::new(),
                        },
                    )
                    .await;
                assert_eq!(
                    (st, v["state"].as_str()),
                    (StatusCode::OK, Some("skipped")),
                    "{v}"
                );
            }
            None => support::pass_stage(&agent, ordinal).await,
        }
    }
    let (_, report) = coord.op_get(&format!("/runs/{run}/report")).await;
    let detail = coord.run_detail(run).await;
    let incomplete = detail["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "pass_incomplete")
        .map(|e| e["message"].as_str().unwrap().to_string())
        .collect();
    (report["verdict"].as_str().unwrap().to_string(), incomplete)
}

#[tokio::test]
async fn a_skip_passes_the_run_only_where_there_was_nothing_to_test() {
    // No GPU on the bus: nothing to test, a clean pass. (The runs are
    // destructive; a non-destructive run's plan skips two stages, which
    // `pass_stage` cannot pass.)
    let (verdict, why) =
        run_with_skips("node-nogpu", "52:54:00:00:40:01", &[(10, "no GPU", true)]).await;
    assert_eq!((verdict.as_str(), why.len()), ("pass", 0), "{why:?}");

    // Every disk unreadable for SMART, and no iperf3 server: there was
    // something to test, so the pass is incomplete and says why; the
    // absent GPU is not named.
    let (verdict, why) = run_with_skips(
        "node-blind",
        "52:54:00:00:40:02",
        &[
            (3, "every sub-step skipped", false),
            (9, "the coordinator assigned no iperf3 server", false),
            (10, "no GPU", true),
        ],
    )
    .await;
    assert_eq!(verdict, "pass-incomplete");
    assert_eq!(why.len(), 1, "{why:?}");
    assert!(
        why[0].contains("SMART skipped: every sub-step skipped")
            && why[0].contains("Network skipped: the coordinator assigned no iperf3 server")
            && !why[0].contains("GPU"),
        "{}",
        why[0]
    );

    // The last stage's own skip counts too.
    let (verdict, why) = run_with_skips(
        "node-noburn",
        "52:54:00:00:40:03",
        &[(11, "stress-ng is not installed", false)],
    )
    .await;
    assert_eq!(verdict, "pass-incomplete");
    assert!(
        why[0].contains("Burn skipped: stress-ng is not installed"),
        "{why:?}"
    );
}
