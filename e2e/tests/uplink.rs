//! The agent's uplink against the real coordinator over HTTP: nothing lost,
//! nothing duplicated, through a coordinator crash and an agent restart.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::mac::Mac;
use common::measurement::{Finite, Kind, Sample};
use common::time::Timestamp;
use common::wire::{ClaimRequest, Directive};
use coordinator::Config;
use testkit::free_port;
use vet_agent::uplink::{Client, Uplink};

struct Coord {
    task: tokio::task::JoinHandle<anyhow_free::Result>,
    base: String,
    token: String,
}

mod anyhow_free {
    pub type Result = std::result::Result<(), String>;
}

async fn start(dir: &std::path::Path, port: u16) -> Coord {
    let listener = loop {
        match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
            Ok(l) => break l,
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    let config = Config::for_data_dir(dir);
    let task = tokio::spawn(async move {
        coordinator::serve(listener, config, std::future::pending())
            .await
            .map_err(|e| e.to_string())
    });
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while reqwest::get(format!("{base}/api/v1/health"))
        .await
        .map(|r| !r.status().is_success())
        .unwrap_or(true)
    {
        assert!(Instant::now() < deadline, "coordinator did not start");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let token = std::fs::read_to_string(dir.join("operator.token"))
        .unwrap()
        .trim()
        .to_string();
    Coord { task, base, token }
}

fn sample(i: u64, stage: Option<u32>) -> Sample {
    Sample {
        ts: Timestamp::from_datetime(chrono::Utc::now()),
        kind: Kind::Temp,
        key: format!("coretemp/s{i}"),
        value: Finite::new(40.0 + (i % 10) as f64).unwrap(),
        unit: "C".into(),
        stage,
    }
}

async fn queued_run(c: &Coord, mac: &str) {
    let http = reqwest::Client::new();
    let operator = testkit::Operator {
        http: &http,
        base: &c.base,
        token: &c.token,
    };
    operator.add_host("e2e", mac, None).await;
    operator.start_run("e2e", json!({})).await;
}

fn stored(dir: &std::path::Path) -> (i64, i64) {
    let db = rusqlite::Connection::open_with_flags(
        dir.join("vetting.db"),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .unwrap();
    let rows: i64 = db
        .query_row("SELECT COUNT(*) FROM measurements", [], |r| r.get(0))
        .unwrap();
    let distinct: i64 = db
        .query_row("SELECT COUNT(DISTINCT key) FROM measurements", [], |r| {
            r.get(0)
        })
        .unwrap();
    (rows, distinct)
}

#[tokio::test]
async fn a_coordinator_crash_mid_stream_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coord = start(dir.path(), port).await;
    let mac: Mac = "52:54:00:e2:e0:01".parse().unwrap();
    queued_run(&coord, &mac.to_string()).await;
    let client = Arc::new(Client::new(&coord.base, &Default::default()).unwrap());
    let claim = client
        .claim(&ClaimRequest::new(vec![mac], "b1", "test"))
        .await
        .unwrap();
    let spool = dir.path().join("agent.spool");
    let (uplink, tasks) = Uplink::start(client.clone(), &spool, claim.next_batch_seq).unwrap();

    // Stream 6000 samples; crash the coordinator (its task dropped mid-request) a third of the way in.
    let total = 6000u64;
    let mut coord = Some(coord);
    for i in 0..total {
        uplink.push(sample(i, None));
        if i % 200 == 0 {
            tokio::time::sleep(Duration::from_millis(15)).await;
        }
        if i == total / 3 {
            let c = coord.take().unwrap();
            c.task.abort();
            let _ = c.task.await;
        }
        if i == total / 2 {
            // Batches sealed during the outage wait, unacknowledged, in the spool.
            let deadline = Instant::now() + Duration::from_secs(20);
            while std::fs::metadata(&spool).map(|m| m.len()).unwrap_or(0) == 0 {
                assert!(
                    Instant::now() < deadline,
                    "nothing spooled during the outage"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            coord = Some(start(dir.path(), port).await);
        }
    }
    tokio::time::timeout(Duration::from_secs(60), uplink.flush())
        .await
        .expect("all batches acknowledged");
    assert_eq!(uplink.produced(), total);
    let (rows, distinct) = stored(dir.path());
    assert_eq!(rows, total as i64, "every sample stored");
    assert_eq!(distinct, rows, "none twice");
    // The agent reports its total: no mismatch.
    let ack: Value = client
        .post("/complete", &json!({"samples_produced": uplink.produced()}))
        .await
        .unwrap();
    assert_eq!(ack["samples_stored"], total);
    assert_eq!(
        std::fs::metadata(&spool).unwrap().len(),
        0,
        "spool empty once all is acknowledged"
    );
    tasks.abort();
}

#[tokio::test]
async fn batches_spooled_while_the_coordinator_is_away_survive_an_agent_restart() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let coord = start(dir.path(), port).await;
    let mac: Mac = "52:54:00:e2:e0:02".parse().unwrap();
    queued_run(&coord, &mac.to_string()).await;
    let client = Arc::new(Client::new(&coord.base, &Default::default()).unwrap());
    let claim = client
        .claim(&ClaimRequest::new(vec![mac], "b1", "test"))
        .await
        .unwrap();
    coord.task.abort();
    let _ = coord.task.await;

    let spool = dir.path().join("agent.spool");
    let (uplink, tasks) = Uplink::start(client.clone(), &spool, claim.next_batch_seq).unwrap();
    for i in 0..1200 {
        uplink.push(sample(i, None));
    }
    // Wait until everything is sealed into the spool, then "crash" the agent.
    let deadline = Instant::now() + Duration::from_secs(20);
    while uplink.sealed() < 1200 {
        assert!(Instant::now() < deadline, "samples not spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tasks.abort();
    drop(uplink);

    // The coordinator comes back; a new agent process, once the crashed
    // one's heartbeat is stale, claims again and replays the spool first.
    let coord = start(dir.path(), port).await;
    testkit::silence(&dir.path().join("vetting.db"), claim.run_id, 60);
    let client = Arc::new(Client::new(&coord.base, &Default::default()).unwrap());
    let claim = client
        .claim(&ClaimRequest::new(vec![mac], "b1", "test"))
        .await
        .unwrap();
    let (uplink, tasks) = Uplink::start(client.clone(), &spool, claim.next_batch_seq).unwrap();
    for i in 1200..1300 {
        uplink.push(sample(i, None));
    }
    tokio::time::timeout(Duration::from_secs(60), uplink.flush())
        .await
        .expect("flushed");
    assert_eq!(uplink.produced(), 1300);
    let (rows, distinct) = stored(dir.path());
    assert_eq!((rows, distinct), (1300, 1300));
    tasks.abort();
}

#[tokio::test]
async fn a_live_breach_reaches_the_agent_as_abort_stage() {
    let dir = tempfile::tempdir().unwrap();
    let coord = start(dir.path(), free_port()).await;
    let mac: Mac = "52:54:00:e2:e0:03".parse().unwrap();
    queued_run(&coord, &mac.to_string()).await;
    let client = Arc::new(Client::new(&coord.base, &Default::default()).unwrap());
    let claim = client
        .claim(&ClaimRequest::new(vec![mac], "b1", "test"))
        .await
        .unwrap();
    let _: Value = client.post("/stages/0/start", &json!({})).await.unwrap();
    let (uplink, tasks) = Uplink::start(
        client.clone(),
        &dir.path().join("spool"),
        claim.next_batch_seq,
    )
    .unwrap();
    let mut directives = uplink.directives();
    let mut hot = sample(1, Some(0));
    hot.value = Finite::new(101.0).unwrap();
    uplink.push(hot);
    let got = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            directives.changed().await.unwrap();
            if let Some(d) = directives.borrow_and_update().clone() {
                return d;
            }
        }
    })
    .await
    .expect("a directive arrives with the ack");
    assert!(
        matches!(got, Directive::AbortStage { ref reason } if reason.contains("coretemp/s1")),
        "{got:?}"
    );
    tasks.abort();
}
