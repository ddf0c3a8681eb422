//! The agent ⇄ coordinator protocol over real HTTP on 127.0.0.1 with a real
//! SQLite file: full runs, failed stages and batches.
//! (Tokens, operator actions and timeouts: `lifecycle.rs`; claims:
//! `claims.rs`; breaches and device verdicts: `verdicts.rs`.)

use testkit as support;

use reqwest::StatusCode;
use serde_json::json;

use common::measurement::Kind;
use common::stage::StageState;
use common::wire::StageOutcome;
use support::{inventory, sample, TestAgent, TestCoordinator, SPEC};

const MAC: &str = "52:54:00:00:00:01";

/// Drives every pending stage from `from` to the end with passing samples.
async fn drive_to_end(agent: &mut TestAgent) -> serde_json::Value {
    let pending: Vec<u32> = agent
        .claim
        .stages
        .iter()
        .filter(|s| s.state == StageState::Pending)
        .map(|s| s.ordinal)
        .collect();
    let mut last = json!(null);
    for ordinal in pending {
        let (st, body) = agent.start_stage(ordinal).await;
        assert_eq!(st, StatusCode::OK, "start {ordinal}: {body}");
        match ordinal {
            0 => {
                let (st, body) = agent
                    .upload(
                        "inventory",
                        Some(0),
                        serde_json::to_vec(&inventory()).unwrap(),
                    )
                    .await;
                assert_eq!(st, StatusCode::OK, "{body}");
            }
            2 => {
                let (st, body) = agent
                    .post("/firmware", json!({"components": [{"component": "bios", "identifier": "system", "version": "2.12.0"}]}))
                    .await;
                assert_eq!(st, StatusCode::OK, "{body}");
            }
            _ => {}
        }
        let samples = vec![
            sample(
                Kind::Temp,
                "coretemp/Core 0",
                55.0 + ordinal as f64,
                Some(ordinal),
            ),
            sample(Kind::Temp, "nvme/Composite", 40.0, Some(ordinal)),
            sample(Kind::Power, "rapl/package-0", 120.0, Some(ordinal)),
        ];
        let (st, ack) = agent.send(samples).await;
        assert_eq!(st, StatusCode::OK, "{ack}");
        assert_eq!(ack["directive"]["directive"], "continue");
        let (st, verdict) = agent
            .finish_stage(ordinal, StageOutcome::Passed, None)
            .await;
        assert_eq!(st, StatusCode::OK, "finish {ordinal}: {verdict}");
        assert_eq!(verdict["state"], "passed", "{verdict}");
        last = verdict;
    }
    last
}

#[tokio::test]
async fn healthy_run_passes_every_stage() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-a", MAC, Some(SPEC)).await;
    let run = coord.start_run("node-a", json!({})).await;
    let mut agent = coord.agent(MAC, "boot-1").await;
    assert_eq!(agent.run_id, run);
    assert_eq!(agent.claim.resume_from, 0);
    assert_eq!(agent.claim.stages.len(), 12);
    let skipped: Vec<&str> = agent
        .claim
        .stages
        .iter()
        .filter(|s| s.state == StageState::Skipped)
        .map(|s| s.name.as_str())
        .collect();
    assert_eq!(
        skipped,
        ["DiskSurface", "WipeProbe"],
        "non-destructive run skips the destructive stages"
    );
    assert!(agent
        .claim
        .thresholds
        .iter()
        .any(|r| r.key.as_str() == "coretemp/*" && r.threshold == 90.0));

    let last = drive_to_end(&mut agent).await;
    assert_eq!(
        last["directive"],
        json!({"directive": "done", "power": "none"})
    );
    let (st, body) = agent
        .post("/complete", json!({"samples_produced": agent.produced}))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["samples_stored"], agent.produced);

    let d = coord.run_detail(run).await;
    assert_eq!(d["state"], "Passed");
    assert_eq!(d["result"], "pass");
    assert!(d["completed_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(d["measurements"], 30);
    assert!(
        d["spec_diffs"].as_array().unwrap().is_empty(),
        "{}",
        d["spec_diffs"]
    );
    let states: Vec<&str> = d["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .collect();
    assert_eq!(states.iter().filter(|s| **s == "passed").count(), 10);
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"claim") && kinds.contains(&"wol_sent"),
        "{kinds:?}"
    );
    assert!(!kinds.contains(&"sample_count_mismatch"));
    let transitions: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "transition")
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(transitions.len(), 3, "{transitions:?}");
    assert!(
        transitions[1].starts_with("Queued → Running")
            && transitions[2].starts_with("Running → Passed"),
        "{transitions:?}"
    );

    // Every in-stage sample was evaluated (the temp rules matched) and
    // counted; none breached, so none has an evaluation row.
    let db = coord.db();
    let (evaluated, breached): (i64, i64) = db
        .query_row(
            "SELECT SUM(c.evaluated), SUM(c.breaches) FROM threshold_counts c
             JOIN thresholds t ON t.id = c.threshold_id WHERE t.run_id = ?1",
            [run],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert!(evaluated >= 40, "{evaluated}");
    assert_eq!(breached, 0);
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM threshold_evaluations", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(rows, 0, "passes are counted, not written");
    let fw: String = db
        .query_row(
            "SELECT version FROM firmware_snapshots WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(fw, "2.12.0");
    // Timestamps are written in the one format.
    let ts: String = db
        .query_row("SELECT ts FROM measurements LIMIT 1", [], |r| r.get(0))
        .unwrap();
    assert!(
        ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[19] == b'.',
        "{ts}"
    );
}

#[tokio::test]
async fn agent_failure_and_spec_diff_fail_stages() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-b", MAC, Some(SPEC)).await;
    let run = coord.start_run("node-b", json!({})).await;
    let agent = coord.agent(MAC, "boot-1").await;
    agent.start_stage(0).await;
    let mut inv = inventory();
    inv.cpu.logical_cores = 24;
    inv.memory.total_bytes = 192 << 30;
    agent
        .upload("inventory", Some(0), serde_json::to_vec(&inv).unwrap())
        .await;
    agent.finish_stage(0, StageOutcome::Passed, None).await;
    // The operator ignores the memory diff before SpecValidate runs.
    let (st, _) = coord
        .op_post(
            &format!("/runs/{run}/ignore-diff"),
            json!({"field": "memory.total_gib"}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    agent.start_stage(1).await;
    let (_, v) = agent.finish_stage(1, StageOutcome::Passed, None).await;
    assert_eq!(v["state"], "failed", "{v}");
    let reasons = v["reasons"].as_array().unwrap();
    assert_eq!(reasons.len(), 1, "only the CPU diff counts: {reasons:?}");
    assert!(reasons[0].as_str().unwrap().contains("cpu.logical_cores"));
    let d = coord.run_detail(run).await;
    let diffs = d["spec_diffs"].as_array().unwrap();
    assert_eq!(diffs.len(), 2);
    let mem = diffs
        .iter()
        .find(|d| d["field"] == "memory.total_gib")
        .unwrap();
    assert_eq!(mem["ignored"], true);
    assert_eq!(d["failed_stage"], "SpecValidate");

    // An agent-reported failure fails the stage on a second run.
    let coord2 = TestCoordinator::start().await;
    coord2.add_host("node-c", MAC, None).await;
    coord2.start_run("node-c", json!({})).await;
    let agent = coord2.agent(MAC, "boot-9").await;
    agent.start_stage(0).await;
    let (_, v) = agent
        .finish_stage(0, StageOutcome::Failed, Some("cannot read /proc/cpuinfo"))
        .await;
    assert_eq!(v["state"], "failed");
    assert_eq!(v["reasons"][0], "agent: cannot read /proc/cpuinfo");
    // A resent finish report gets the same answer, not an error.
    let (st, again) = agent.finish_stage(0, StageOutcome::Passed, None).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(again["state"], "failed");
}

#[tokio::test]
async fn batches_are_idempotent_and_gaps_refused() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-d", MAC, None).await;
    let run = coord
        .start_run("node-d", json!({"non_destructive": false}))
        .await;
    let agent = coord.agent(MAC, "boot-1").await;
    assert_eq!(agent.seq, 1);
    let batch = json!({"seq": 1, "samples": [
        {"ts": "2026-11-23T09:15:43.123Z", "kind": "temp", "key": "coretemp/Core 0", "value": 61.5, "unit": "C"},
        {"ts": "2026-11-23T09:15:43.123Z", "kind": "temp", "key": "coretemp/Core 1", "value": 63.0}
    ]});
    let (st, ack1) = agent.post("/batches", batch.clone()).await;
    assert_eq!(st, StatusCode::OK, "{ack1}");
    assert_eq!(
        (ack1["stored"].as_u64(), ack1["duplicate"].as_bool()),
        (Some(2), Some(false))
    );
    let (st, ack2) = agent.post("/batches", batch).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (
            ack2["seq"].as_u64(),
            ack2["stored"].as_u64(),
            ack2["duplicate"].as_bool()
        ),
        (Some(1), Some(2), Some(true))
    );
    let (_, ms) = coord.op_get(&format!("/runs/{run}/measurements")).await;
    assert_eq!(
        ms.as_array().unwrap().len(),
        2,
        "a resent batch must not add rows: {ms}"
    );
    // Pages: `limit` rows at a time, continuing after the last id seen.
    let (_, first) = coord
        .op_get(&format!("/runs/{run}/measurements?limit=1"))
        .await;
    assert_eq!(first.as_array().unwrap().len(), 1);
    assert_eq!(first[0]["key"], "coretemp/Core 0");
    let (_, next) = coord
        .op_get(&format!(
            "/runs/{run}/measurements?limit=1&after={}",
            first[0]["id"]
        ))
        .await;
    assert_eq!(next.as_array().unwrap().len(), 1);
    assert_eq!(next[0]["key"], "coretemp/Core 1");
    let (st, _) = coord
        .op_get(&format!("/runs/{run}/measurements?limit=0"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(ms[0]["ts"], "2026-11-23T09:15:43.123Z");
    assert_eq!(
        ms[1]["unit"], "C",
        "an empty unit is stored as the kind's unit"
    );

    let (st, err) = agent
        .post("/batches", json!({"seq": 3, "samples": []}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert_eq!(err["error"]["code"], "batch_gap");
    assert_eq!(err["error"]["expected_seq"], 2);
    let (st, _) = agent
        .post("/batches", json!({"seq": 2, "samples": []}))
        .await;
    assert_eq!(st, StatusCode::OK);
    // A reclaim by the same boot (once its heartbeat is stale) tells the
    // agent where the sequence stands.
    coord.silence(run, 60);
    let again = coord.agent(MAC, "boot-1").await;
    assert_eq!(again.seq, 3);
    // The agent's total disagrees with what was stored: an error event.
    let (st, body) = again
        .post("/complete", json!({"samples_produced": 5}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(body["samples_stored"], 2);
    let d = coord.run_detail(run).await;
    let mismatch = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "sample_count_mismatch")
        .expect("mismatch event");
    assert_eq!(mismatch["level"], "error");
    assert_eq!(
        mismatch["message"],
        "agent produced 5 samples (0 refused); coordinator stored 2"
    );
}
