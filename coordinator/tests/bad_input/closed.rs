//! Finished runs are closed and runs are bounded: every refusal answers its
//! status and error code and changes nothing (row counts, files on disk).

use std::path::Path;

use reqwest::StatusCode;
use serde_json::{json, Value};

use common::measurement::Kind;
use common::wire::StageOutcome;
use testkit::{sample, TestAgent, TestCoordinator};

/// Names of the files in the coordinator's artifact directory.
fn artifact_files(coord: &TestCoordinator) -> Vec<String> {
    let dir = coord.dir.path().join("artifacts");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Sends `call`, asserts the refusal (status, code) and that neither the
/// database nor the artifact directory changed.
async fn refused<F>(coord: &TestCoordinator, what: &str, status: StatusCode, code: &str, call: F)
where
    F: std::future::Future<Output = (StatusCode, Value)>,
{
    let (rows, files) = (coord.row_counts(), artifact_files(coord));
    let (st, body) = call.await;
    assert_eq!(st, status, "{what}: {body}");
    assert_eq!(body["error"]["code"], code, "{what}: {body}");
    assert_eq!(coord.row_counts(), rows, "{what} changed the database");
    assert_eq!(artifact_files(coord), files, "{what} left a file");
}

fn events_of(db: &Path, run: i64, kind: &str) -> i64 {
    testkit::open_db(db)
        .query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = ?2",
            (run, kind),
            |r| r.get(0),
        )
        .unwrap()
}

#[tokio::test]
async fn a_finished_run_takes_no_more_writes() {
    let coord = TestCoordinator::start().await;
    let mac = "52:54:00:00:10:01";
    coord.add_host("node-f", mac, None).await;
    let run = coord.start_run("node-f", json!({})).await;
    let mut agent = coord.agent(mac, "boot-1").await;
    testkit::pass_stage(&agent, 0).await;
    agent.start_stage(1).await;
    let (st, ack) = agent
        .send(vec![sample(Kind::Temp, "cpu/0", 40.0, Some(1))])
        .await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    let (st, v) = coord
        .op_post(&format!("/runs/{run}/abort"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    // The stage it was running ended with it.
    let detail = coord.run_detail(run).await;
    assert_eq!(detail["stages"][1]["state"], "failed", "{detail}");

    let conflict = StatusCode::CONFLICT;
    let fin = "run_finished";
    let batch2 = json!({"seq": 2, "samples": [sample(Kind::Temp, "cpu/0", 41.0, Some(1))]});
    refused(
        &coord,
        "a new batch",
        conflict,
        fin,
        agent.post("/batches", batch2),
    )
    .await;
    let event = json!({"kind": "kernel_error", "level": "warn", "message": "late"});
    refused(
        &coord,
        "an event",
        conflict,
        fin,
        agent.post("/events", event),
    )
    .await;
    refused(&coord, "a stage start", conflict, fin, agent.start_stage(2)).await;
    refused(
        &coord,
        "a stage report",
        conflict,
        fin,
        agent.finish_stage(1, StageOutcome::Passed, None),
    )
    .await;
    refused(
        &coord,
        "an artifact",
        conflict,
        fin,
        agent.upload("smartctl_json", Some(1), b"{\"late\": true}".to_vec()),
    )
    .await;
    let fw = json!({"components": [{"component": "bios", "identifier": "0", "version": "1.0"}]});
    refused(
        &coord,
        "firmware",
        conflict,
        fin,
        agent.post("/firmware", fw),
    )
    .await;
    let hold = json!({"hold_ip": "127.0.0.1"});
    refused(
        &coord,
        "a hold report",
        conflict,
        fin,
        agent.post("/hold-ip", hold),
    )
    .await;

    // A resend of what was stored is acknowledged again and stores nothing.
    let rows = coord.row_counts();
    let (st, ack) = agent
        .post(
            "/batches",
            json!({"seq": 1, "samples": [sample(Kind::Temp, "cpu/0", 40.0, Some(1))]}),
        )
        .await;
    assert_eq!(
        (st, ack["duplicate"].as_bool()),
        (StatusCode::OK, Some(true)),
        "{ack}"
    );
    assert_eq!(coord.row_counts(), rows);

    // The closing count is taken once (the agent counts after the verdict);
    // a repeat is refused and adds no second mismatch event.
    let count = json!({"samples_produced": 5, "samples_refused": 1});
    let (st, v) = agent.post("/complete", count.clone()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(events_of(&coord.db_path(), run, "sample_count_mismatch"), 1);
    refused(
        &coord,
        "a second /complete",
        conflict,
        fin,
        agent.post("/complete", count),
    )
    .await;
    assert_eq!(events_of(&coord.db_path(), run, "sample_count_mismatch"), 1);
}

#[tokio::test]
async fn refused_samples_are_not_a_loss() {
    let coord = TestCoordinator::start().await;
    let mac = "52:54:00:00:10:02";
    coord.add_host("node-g", mac, None).await;
    let run = coord.start_run("node-g", json!({})).await;
    let mut agent = coord.agent(mac, "boot-1").await;
    agent.start_stage(0).await;
    agent
        .send(vec![sample(Kind::Temp, "cpu/0", 40.0, Some(0))])
        .await;
    // One sample stored, two refused after the end: the count matches.
    let (st, v) = agent
        .post(
            "/complete",
            json!({"samples_produced": 3, "samples_refused": 2}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    assert_eq!(v["samples_stored"], 1, "{v}");
    assert_eq!(events_of(&coord.db_path(), run, "sample_count_mismatch"), 0);
    // A resend while the run is open is answered again, counted once.
    let (st, _) = agent
        .post(
            "/complete",
            json!({"samples_produced": 9, "samples_refused": 0}),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(events_of(&coord.db_path(), run, "sample_count_mismatch"), 0);
}

async fn running(coord: &TestCoordinator, name: &str, mac: &str) -> TestAgent {
    coord.add_host(name, mac, None).await;
    coord.start_run(name, json!({})).await;
    let agent = coord.agent(mac, "boot-1").await;
    agent.start_stage(0).await;
    agent
}

#[tokio::test]
async fn a_run_holds_at_most_ten_thousand_series() {
    let coord = TestCoordinator::start().await;
    let mut agent = running(&coord, "node-s", "52:54:00:00:10:03").await;
    for b in 0..20 {
        let samples = (0..500)
            .map(|i| sample(Kind::Temp, &format!("s{b}/{i}"), 1.0, Some(0)))
            .collect();
        let (st, v) = agent.send(samples).await;
        assert_eq!(st, StatusCode::OK, "batch {b}: {v}");
    }
    // Known series still take samples; one new series is one too many.
    let (st, v) = agent
        .send(vec![sample(Kind::Temp, "s0/0", 2.0, Some(0))])
        .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let over = json!({"seq": agent.seq, "samples": [
        sample(Kind::Temp, "s0/1", 2.0, Some(0)),
        sample(Kind::Temp, "one-too-many", 2.0, Some(0)),
    ]});
    refused(
        &coord,
        "the 10,001st series",
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_series",
        agent.post("/batches", over),
    )
    .await;
    // The same kind of sample under another kind is another series.
    let other_kind =
        json!({"seq": agent.seq, "samples": [sample(Kind::Fan, "s0/0", 2.0, Some(0))]});
    refused(
        &coord,
        "a known key of another kind",
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_series",
        agent.post("/batches", other_kind),
    )
    .await;
}

#[tokio::test]
async fn keys_outside_the_alphabet_are_refused() {
    let coord = TestCoordinator::start().await;
    let agent = running(&coord, "node-k", "52:54:00:00:10:04").await;
    let long = "k".repeat(129);
    for (what, key) in [
        ("a glob star", "cpu/*"),
        ("a quote", "a\"b"),
        ("a backslash", "a\\b"),
        ("a bracket", "[0]"),
        ("a question mark", "x?"),
        ("a control character", "a\u{1b}[31m"),
        ("a non-ASCII letter", "temp/größe"),
        ("an empty key", ""),
        ("a 129-byte key", long.as_str()),
    ] {
        let mut s = serde_json::to_value(sample(Kind::Temp, "ok", 1.0, Some(0))).unwrap();
        s["key"] = json!(key);
        let batch = json!({"seq": 1, "samples": [s]});
        refused(
            &coord,
            what,
            StatusCode::BAD_REQUEST,
            "bad_request",
            agent.post("/batches", batch),
        )
        .await;
    }
    let fine = json!({"seq": 1, "samples": [sample(Kind::Temp, "coretemp/Core 0", 1.0, Some(0))]});
    let (st, v) = agent.post("/batches", fine).await;
    assert_eq!(st, StatusCode::OK, "{v}");
}

#[tokio::test]
async fn a_run_holds_at_most_a_thousand_artifacts() {
    let coord = TestCoordinator::start().await;
    let agent = running(&coord, "node-a", "52:54:00:00:10:05").await;
    // 999 rows as if uploaded (their files do not matter here), then the
    // thousandth over HTTP.
    {
        let db = rusqlite::Connection::open(coord.db_path()).unwrap();
        db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
        let mut insert = db
            .prepare("INSERT INTO artifacts (run_id, kind, path, sha256, size_bytes, blake3, created_at) VALUES (?1, 'log', ?2, '', 0, '', '2026-12-07T00:00:00.000Z')")
            .unwrap();
        for i in 0..999 {
            insert
                .execute((agent.run_id, format!("/nonexistent/{i}")))
                .unwrap();
        }
    }
    let (st, v) = agent.upload("log", None, b"the thousandth".to_vec()).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    refused(
        &coord,
        "the 1,001st artifact",
        StatusCode::UNPROCESSABLE_ENTITY,
        "too_many_artifacts",
        agent.upload("log", None, b"one too many".to_vec()),
    )
    .await;
}
