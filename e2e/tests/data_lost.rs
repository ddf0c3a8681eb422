//! The coordinator loses what it had acknowledged, as an operator can make
//! it: an online backup of the database during a quick run, `kill -9` a
//! few batches later, the backup put in place, a restart. The agent says
//! so once (`data_lost`), renumbers, re-synchronises its stages with what
//! the coordinator now has, and the run ends: not `pass`, and not a
//! hardware verdict for the coordinator's loss.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use support::{free_port, options, wait_run, Coord, Loop};
use vet_agent::run::boot;

fn last_batch(db: &Path, run: i64) -> i64 {
    let conn =
        rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
            .unwrap();
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    conn.query_row(
        "SELECT COALESCE(MAX(seq), 0) FROM batches WHERE run_id = ?1",
        [run],
        |r| r.get(0),
    )
    .unwrap()
}

fn events_of<'a>(d: &'a Value, kind: &str) -> Vec<&'a Value> {
    d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_coordinator_restored_from_a_backup_loses_data_but_not_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Loop::new(dir.path(), 64);
    let port = free_port();
    let iperf = vec![free_port()];
    let coord = Coord::spawn_binary(dir.path(), port, &iperf).await;
    let mac = "52:54:00:e2:e1:05";
    coord.operator().add_host("e2e-lost", mac, None).await;
    let run = coord
        .operator()
        .start_run("e2e-lost", json!({"non_destructive": true}))
        .await;
    let agent = tokio::spawn(boot(options(&coord, dir.path(), mac, &disk.0)));

    // The backup: taken online while CPUStress runs.
    wait_run(&coord, run, Duration::from_secs(120), "CPUStress", |d| {
        d["stages"][4]["state"] == "running"
    })
    .await;
    let db = dir.path().join("vetting.db");
    let backup = dir.path().join("backup.db");
    {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        conn.execute("VACUUM INTO ?1", [backup.to_str().unwrap()])
            .unwrap();
    }
    let backed_up = last_batch(&backup, run);
    // Later: the next stage has started and more batches were acknowledged.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let d = coord.get(&format!("/runs/{run}")).await;
        if d["stages"][5]["state"] != "pending" && last_batch(&db, run) >= backed_up + 2 {
            break;
        }
        assert!(Instant::now() < deadline, "the run never moved on: {d:#}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let acked = last_batch(&db, run);
    coord.crash().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    std::fs::copy(&backup, &db).unwrap();
    let coord = Coord::spawn_binary(dir.path(), port, &iperf).await;

    // The run ends within the heartbeat timeout plus its remaining stages.
    let end = tokio::time::timeout(Duration::from_secs(400), agent)
        .await
        .expect("the run ends")
        .unwrap()
        .expect("the agent carried on");
    let d = coord.get(&format!("/runs/{run}")).await;
    let lost = events_of(&d, "data_lost");
    assert_eq!(lost.len(), 1, "said once: {:#}", d["events"]);
    assert_eq!(lost[0]["level"], "error");
    let message = lost[0]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("batches {} to", backed_up + 1)),
        "the lost range from {}: {message}",
        backed_up + 1
    );
    assert!(acked > backed_up);
    assert!(
        events_of(&d, "agent_silent").is_empty(),
        "the coordinator's loss was blamed on the node: {:#}",
        d["events"]
    );
    assert_ne!(d["state"], "Aborted", "{d:#}");
    let report = coord.get(&format!("/runs/{run}/report")).await;
    assert_ne!(report["verdict"], "pass", "{report:#}");
    assert_eq!(
        (end.state.as_str(), report["verdict"].as_str()),
        ("Passed", Some("pass-incomplete")),
        "no stage really failed, so the run passes incompletely: {:#}",
        d["events"]
    );
}
