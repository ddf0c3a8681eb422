//! The janitor with an injected clock, on the files and SQLite database a
//! real coordinator wrote: old files go, rows stay with `pruned_at` and a
//! `prune` event; a file a young row still references and a held run's
//! hold key stay.

use testkit as support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use common::run_state::RunEvent;
use common::time::Timestamp;
use common::wire::StageOutcome;
use coordinator::janitor;
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::{NewArtifact, Store};
use support::TestCoordinator;

const DAY: i64 = 86_400_000;

#[tokio::test]
async fn old_artifact_files_are_pruned_but_rows_shared_files_and_live_hold_keys_stay() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-j", "52:54:00:00:00:31", None).await;
    let run = coord.start_run("node-j", json!({})).await;
    let agent = coord.agent("52:54:00:00:00:31", "boot-j").await;
    agent.start_stage(0).await;
    let (st, shared) = agent
        .upload("inventory", Some(0), b"shared bytes".to_vec())
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, log) = agent
        .upload("dmesg", Some(0), b"only this run".to_vec())
        .await;
    agent
        .finish_stage(0, StageOutcome::Failed, Some("cannot inventory"))
        .await;
    // The next contact makes the hold key.
    for _ in 0..10 {
        let (_, d) = agent.post("/heartbeat", json!({})).await;
        if d["directive"]["directive"] == "hold" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let dir = coord.stop().await;

    let now = Timestamp::from_datetime(chrono::Utc::now());
    let store = SqliteStore::open(&dir.path().join("vetting.db"), now).unwrap();
    let hold = store
        .latest_artifact(run, "hold_key")
        .unwrap()
        .expect("hold key issued");
    let shared_path = shared["path"].as_str().unwrap().to_string();
    let log_path = log["path"].as_str().unwrap().to_string();
    // Thirty-one days on, another run's young row references the shared file.
    let later = now.plus_millis(31 * DAY);
    store
        .record_artifact(
            &NewArtifact {
                run_id: run,
                stage_ordinal: None,
                kind: "inventory".into(),
                path: shared_path.clone(),
                sha256: shared["sha256"].as_str().unwrap().into(),
                blake3: shared["blake3"].as_str().unwrap().into(),
                size_bytes: 12,
            },
            later,
        )
        .unwrap();
    let before = store.row_counts().unwrap();

    let deleted = janitor::prune(&store, Duration::from_secs(30 * 86400), later).unwrap();
    assert_eq!(
        deleted,
        std::slice::from_ref(&log_path),
        "only the old, unshared, non-hold file"
    );
    assert!(!std::path::Path::new(&log_path).exists());
    assert!(
        std::path::Path::new(&shared_path).exists(),
        "a young row still needs it"
    );
    assert!(
        std::path::Path::new(&hold.path).exists(),
        "the held run keeps its key"
    );
    assert_eq!(
        store
            .row_counts()
            .unwrap()
            .0
            .iter()
            .find(|(t, _)| t == "artifacts"),
        before.0.iter().find(|(t, _)| t == "artifacts"),
        "rows are never deleted"
    );
    let events = store.events(run).unwrap();
    assert_eq!(events.iter().filter(|e| e.kind == "prune").count(), 1);
    // A second pass at the same time has nothing to do.
    assert!(
        janitor::prune(&store, Duration::from_secs(30 * 86400), later)
            .unwrap()
            .is_empty()
    );

    // Released, and another month later: everything old goes.
    store
        .operator_transition(run, RunEvent::Release, None, later)
        .unwrap();
    let much_later = later.plus_millis(31 * DAY);
    let mut deleted = janitor::prune(&store, Duration::from_secs(30 * 86400), much_later).unwrap();
    deleted.sort();
    let mut want = vec![shared_path.clone(), hold.path.clone()];
    want.sort();
    assert_eq!(deleted, want);
    let db = rusqlite::Connection::open(dir.path().join("vetting.db")).unwrap();
    let unpruned: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM artifacts WHERE pruned_at IS NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(unpruned, 0);
}

/// What a crash leaves in the artifact directory goes after an hour:
/// upload temp files and files no row names (a hold key whose row was never
/// written). Files rows name, and young leftovers, stay.
#[tokio::test]
async fn leftovers_older_than_an_hour_are_swept_and_named_files_stay() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-l", "52:54:00:00:00:32", None).await;
    coord.start_run("node-l", json!({})).await;
    let agent = coord.agent("52:54:00:00:00:32", "boot-l").await;
    agent.start_stage(0).await;
    let (st, kept) = agent
        .upload("dmesg", Some(0), b"a row names me".to_vec())
        .await;
    assert_eq!(st, StatusCode::OK);
    let dir = coord.stop().await;
    let artifacts = dir.path().join("artifacts");
    let tmp = artifacts.join(".upload-0123abcd.tmp");
    let orphan_key = artifacts.join("f".repeat(64));
    std::fs::write(&tmp, b"half an upload").unwrap();
    std::fs::write(&orphan_key, b"-----BEGIN OPENSSH PRIVATE KEY-----").unwrap();

    let now = Timestamp::from_datetime(chrono::Utc::now());
    let store = SqliteStore::open(&dir.path().join("vetting.db"), now).unwrap();
    let kept_path = kept["path"].as_str().unwrap().to_string();
    // Young: nothing goes.
    let swept = janitor::sweep_leftovers(&store, &artifacts, std::time::SystemTime::now()).unwrap();
    assert!(swept.is_empty(), "{swept:?}");
    // Two hours on: the temp file and the orphan go, the named file stays.
    let later = std::time::SystemTime::now() + Duration::from_secs(7200);
    let mut swept = janitor::sweep_leftovers(&store, &artifacts, later).unwrap();
    swept.sort();
    let mut want = vec![tmp.display().to_string(), orphan_key.display().to_string()];
    want.sort();
    assert_eq!(swept, want);
    assert!(std::path::Path::new(&kept_path).exists());
    assert!(!tmp.exists() && !orphan_key.exists());
}
