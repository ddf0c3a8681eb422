//! A run's life around the protocol, over real HTTP on 127.0.0.1 with a
//! real SQLite file: run and host tokens, Wake-on-LAN, operator
//! transitions, silent agents, restarts, artifacts, interlock refusals and
//! hold timeouts.

use testkit as support;

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use common::measurement::Kind;
use common::wire::StageOutcome;
use support::{pass_stage, read, refused_write, sample, wait_until, TestCoordinator};

const MAC: &str = "52:54:00:00:00:01";

#[tokio::test]
async fn a_run_token_writes_only_its_run() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-a", MAC, None).await;
    coord.add_host("node-b", "52:54:00:00:00:02", None).await;
    let run_a = coord.start_run("node-a", json!({})).await;
    let run_b = coord.start_run("node-b", json!({})).await;
    let a = coord.agent(MAC, "boot-a").await;
    let b = coord.agent("52:54:00:00:00:02", "boot-b").await;
    assert_eq!((a.run_id, b.run_id), (run_a, run_b));
    let before = coord.row_counts();
    let forged = support::TestAgent {
        run_id: run_b,
        token: a.token.clone(),
        base: a.base.clone(),
        http: a.http.clone(),
        seq: 1,
        produced: 0,
        claim: a.claim.clone(),
    };
    for (path, body) in [
        ("/stages/0/start", json!({})),
        (
            "/batches",
            json!({"seq": 1, "samples": [{"ts": "2026-11-23T09:15:43.123Z", "kind": "temp", "key": "k", "value": 1.0}]}),
        ),
        ("/heartbeat", json!({})),
        ("/complete", json!({"samples_produced": 0})),
    ] {
        let (st, err) = forged.post(path, body).await;
        assert_eq!(st, StatusCode::UNAUTHORIZED, "{path}: {err}");
        assert_eq!(err["error"]["code"], "unauthorized");
    }
    // The operator token is not a run token either, and a run token is not an operator token.
    let resp = coord
        .http
        .get(coord.url("/runs"))
        .bearer_auth(&a.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = coord
        .http
        .post(a.url("/heartbeat"))
        .bearer_auth(&coord.token)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(coord.row_counts(), before);
}

#[tokio::test]
async fn wake_on_lan_reaches_a_loopback_socket() {
    let coord = TestCoordinator::start().await;
    let rx = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = rx.local_addr().unwrap().port();
    let (st, host) = coord
        .op_post("/hosts", json!({"name": "node-w", "mac": "52:54:00:AB:CD:EF", "wol_broadcast": format!("127.0.0.1:{port}")}))
        .await;
    assert_eq!(st, StatusCode::OK, "{host}");
    assert_eq!(host["mac"], "52:54:00:ab:cd:ef");
    assert_eq!(host["wol_port"], port);
    let run = coord.start_run("node-w", json!({})).await;
    let mut buf = [0u8; 256];
    let (n, _) = tokio::time::timeout(Duration::from_secs(10), rx.recv_from(&mut buf))
        .await
        .expect("magic packet")
        .unwrap();
    assert_eq!(n, 102);
    assert!(buf[..6].iter().all(|b| *b == 0xFF));
    assert!(buf[6..102]
        .chunks(6)
        .all(|c| c == [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]));
    let d = coord.run_detail(run).await;
    let wol = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "wol_sent")
        .unwrap();
    assert!(wol["message"]
        .as_str()
        .unwrap()
        .contains(&format!("127.0.0.1:{port}")));

    // No address configured: nothing is sent, an event says so.
    coord
        .add_host("node-nowol", "52:54:00:00:00:05", None)
        .await;
    let run = coord.start_run("node-nowol", json!({})).await;
    let d = coord.run_detail(run).await;
    let wol = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "wol_sent")
        .unwrap();
    assert!(
        wol["message"].as_str().unwrap().contains("no packet sent"),
        "{wol}"
    );
}

#[tokio::test]
async fn operator_transitions_and_refusals() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-o", MAC, None).await;
    let queued = coord.start_run("node-o", json!({})).await;
    let (st, err) = coord
        .op_post(&format!("/runs/{queued}/abort"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("use `run cancel`"),
        "{err}"
    );
    let (st, run) = coord
        .op_post(&format!("/runs/{queued}/cancel"), json!({}))
        .await;
    assert_eq!(
        (st, run["state"].as_str()),
        (StatusCode::OK, Some("Cancelled"))
    );
    assert_eq!(run["result"], json!(null));
    let (st, _) = coord.claim(&[MAC], "b").await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "a cancelled run is not claimable"
    );

    let running = coord.start_run("node-o", json!({})).await;
    let agent = coord.agent(MAC, "b").await;
    agent.start_stage(0).await;
    let (st, err) = coord
        .op_post(&format!("/runs/{running}/release"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "{err}");
    let (st, run) = coord
        .op_post(&format!("/runs/{running}/abort"), json!({}))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        (
            run["state"].as_str(),
            run["result"].as_str(),
            run["failed_stage"].as_str()
        ),
        (Some("Aborted"), None, Some("Inventory"))
    );
    // The stage it ran ended with the run; `done` stops the agent's work.
    let (_, d) = agent.post("/heartbeat", json!({})).await;
    assert_eq!(
        d["directive"],
        json!({"directive": "done", "power": "none"}),
        "the agent stops the stage it runs"
    );
    let detail = coord.run_detail(running).await;
    assert_eq!(detail["stages"][0]["state"], "failed", "{detail}");
    let (st, v) = agent.finish_stage(0, StageOutcome::Passed, None).await;
    assert_eq!(
        (st, v["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_finished")),
        "{v}"
    );
    let (st, _) = coord
        .op_post(&format!("/runs/{running}/abort"), json!({}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT, "terminal states have no exit");
}

#[tokio::test]
async fn silent_agent_aborts_the_run_as_a_failure() {
    let coord = TestCoordinator::start_with(|c| c.heartbeat_timeout = Duration::from_secs(1)).await;
    coord.add_host("node-s", MAC, None).await;
    let run = coord.start_run("node-s", json!({})).await;
    let agent = coord.agent(MAC, "b").await;
    agent.start_stage(0).await;
    agent.finish_stage(0, StageOutcome::Passed, None).await;
    agent.start_stage(1).await;
    let d = wait_until(
        "run aborted by the silent-agent sweep",
        Duration::from_secs(20),
        || {
            let coord = &coord;
            async move {
                let d = coord.run_detail(run).await;
                (d["state"] == "Aborted").then_some(d)
            }
        },
    )
    .await;
    assert_eq!(d["result"], "fail", "a hang is a hardware fault");
    assert_eq!(d["failed_stage"], "SpecValidate");
    assert!(d["events"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["kind"] == "agent_silent" && e["level"] == "error"));
}

#[tokio::test]
async fn coordinator_restart_mid_run_loses_nothing() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-r", MAC, None).await;
    let run = coord.start_run("node-r", json!({})).await;
    let mut agent = coord.agent(MAC, "b").await;
    agent.start_stage(0).await;
    for i in 0..5 {
        let (st, _) = agent
            .send(
                (0..100)
                    .map(|j| sample(Kind::Temp, &format!("t/{j}"), 40.0 + i as f64, Some(0)))
                    .collect(),
            )
            .await;
        assert_eq!(st, StatusCode::OK);
    }
    let dir = coord.stop().await;
    let coord = TestCoordinator::start_in(dir, |_| {}).await;
    agent.base = coord.base.clone();
    // The agent resends its last batch (it never saw the ack) and goes on.
    agent.seq -= 1;
    let (st, ack) = agent
        .send(
            (0..100)
                .map(|j| sample(Kind::Temp, &format!("t/{j}"), 44.0, Some(0)))
                .collect(),
        )
        .await;
    assert_eq!(
        (st, ack["duplicate"].as_bool()),
        (StatusCode::OK, Some(true))
    );
    agent.produced -= 100;
    let (st, _) = agent
        .send(vec![sample(Kind::Temp, "t/x", 41.0, Some(0))])
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, v) = agent.finish_stage(0, StageOutcome::Passed, None).await;
    assert_eq!((st, v["state"].as_str()), (StatusCode::OK, Some("passed")));
    let (_, body) = agent
        .post("/complete", json!({"samples_produced": agent.produced}))
        .await;
    assert_eq!(body["samples_stored"], 501);
    assert_eq!(coord.run_detail(run).await["measurements"], 501);
}

#[tokio::test]
async fn artifacts_stream_to_content_addressed_files() {
    let coord = TestCoordinator::start_with(|c| c.max_artifact_bytes = 1 << 20).await;
    coord.add_host("node-f", MAC, None).await;
    let run = coord.start_run("node-f", json!({})).await;
    let agent = coord.agent(MAC, "b").await;
    let bytes: Vec<u8> = (0..300_000u32)
        .flat_map(|i| i.to_le_bytes())
        .take(700_000)
        .collect();
    let (st, a) = agent.upload("fio", Some(6), bytes.clone()).await;
    assert_eq!(st, StatusCode::OK, "{a}");
    use sha2::Digest;
    assert_eq!(
        a["sha256"],
        hex::encode(sha2::Sha256::digest(&bytes)),
        "sha256sum-compatible digest"
    );
    assert_eq!(a["blake3"], blake3::hash(&bytes).to_hex().to_string());
    assert_eq!(a["size_bytes"], 700_000);
    let path = a["path"].as_str().unwrap();
    assert!(
        path.ends_with(a["blake3"].as_str().unwrap()),
        "named by content: {path}"
    );
    assert_eq!(std::fs::read(path).unwrap(), bytes);
    let stage_id: i64 = coord
        .db()
        .query_row(
            "SELECT stage_id FROM artifacts WHERE run_id = ?1",
            [run],
            |r| r.get(0),
        )
        .unwrap();
    assert!(stage_id > 0);

    let before = coord.row_counts();
    let (st, err) = agent.upload("fio", None, vec![0u8; (1 << 20) + 1]).await;
    assert_eq!(st, StatusCode::PAYLOAD_TOO_LARGE, "{err}");
    assert_eq!(coord.row_counts(), before);
    let leftovers: Vec<_> = std::fs::read_dir(coord.dir.path().join("artifacts"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a refused upload leaves nothing: {leftovers:?}"
    );
}

#[tokio::test]
async fn a_host_in_production_gets_only_non_destructive_runs() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-p", MAC, None).await;
    let (_, t) = coord.op_post("/hosts/node-p/token", json!({})).await;
    let (st, _) = host_heartbeat(&coord, t["token"].as_str().unwrap()).await;
    assert_eq!(st, StatusCode::OK);
    let before = coord.row_counts();
    let (st, err) = coord
        .op_post("/runs", json!({"host": "node-p", "non_destructive": false}))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--non-destructive"),
        "{err}"
    );
    assert_eq!(coord.row_counts(), before);
    let (st, _) = coord
        .op_post("/runs", json!({"host": "node-p", "non_destructive": true}))
        .await;
    assert_eq!(st, StatusCode::OK);
}

async fn host_heartbeat(coord: &TestCoordinator, token: &str) -> (StatusCode, serde_json::Value) {
    read(
        coord
            .http
            .post(coord.url("/host/heartbeat"))
            .bearer_auth(token)
            .json(&json!({"boot_id": "b-host", "macs": [MAC], "agent_version": "test"}))
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn host_mode_heartbeats_need_the_hosts_own_current_token() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-h", MAC, None).await;
    coord
        .add_host("node-other", "52:54:00:00:00:99", None)
        .await;
    let (st, host) = coord.op_get("/hosts/node-h").await;
    assert_eq!(st, StatusCode::OK);
    assert!(host["last_seen_at"].is_null(), "never seen yet");

    let (st, t1) = coord.op_post("/hosts/node-h/token", json!({})).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(t1["host"], "node-h");
    let t1 = t1["token"].as_str().unwrap().to_string();
    let stored: String = coord
        .db()
        .query_row(
            "SELECT host_token_hash FROM hosts WHERE name = 'node-h'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(stored.len(), 64, "a SHA-256 hex digest");
    assert_ne!(stored, t1, "never stored in clear");

    let (st, ack) = host_heartbeat(&coord, &t1).await;
    assert_eq!(st, StatusCode::OK, "{ack}");
    assert_eq!(ack["host"], "node-h");
    assert!(ack["interval_s"].as_u64().unwrap() >= 1);
    let (_, host) = coord.op_get("/hosts/node-h").await;
    assert!(host["last_seen_at"].is_string(), "{host}");
    let (_, other) = coord.op_get("/hosts/node-other").await;
    assert!(
        other["last_seen_at"].is_null(),
        "only the token's host is marked"
    );

    // A new token replaces the old one.
    let (_, t2) = coord.op_post("/hosts/node-h/token", json!({})).await;
    let (st, err) = host_heartbeat(&coord, &t1).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{err}");
    let (st, _) = host_heartbeat(&coord, t2["token"].as_str().unwrap()).await;
    assert_eq!(st, StatusCode::OK);

    // Neither the operator token nor a run token is a host token, and a host
    // token is not an operator token.
    let (st, _) = host_heartbeat(&coord, &coord.token).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let before = coord.row_counts();
    let (st, _) = read(
        coord
            .http
            .get(coord.url("/hosts"))
            .bearer_auth(t2["token"].as_str().unwrap())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    let (st, _) = coord.op_post("/hosts/no-such/token", json!({})).await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    assert_eq!(coord.row_counts(), before, "refusals change nothing");
}

/// Starts and passes `ordinal` the way a healthy agent does.
#[tokio::test]
async fn interlock_refusals_are_events_and_fail_only_with_require_all_disks() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-r", MAC, None).await;
    let run = coord
        .start_run(
            "node-r",
            json!({"non_destructive": false, "require_all_disks": true}),
        )
        .await;
    let agent = coord.agent(MAC, "boot-r").await;
    for ordinal in 0..6 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(6).await;
    let (st, v) = agent.finish_with(6, refused_write()).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(v["state"], "failed", "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .contains("--require-all-disks"),
        "{v}"
    );
    let d = coord.run_detail(run).await;
    assert_eq!(d["state"], "FailedHolding");
    assert_eq!(d["failed_stage"], "DiskPerf");
    let refusal = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "interlock_refused")
        .expect("an interlock_refused event");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains("mounted at /mnt"),
        "{refusal}"
    );

    // Without --require-all-disks the same refusal passes, not fully tested.
    let mac2 = "52:54:00:00:00:22";
    coord.add_host("node-s", mac2, None).await;
    let run = coord
        .start_run("node-s", json!({"non_destructive": false}))
        .await;
    let agent = coord.agent(mac2, "boot-s").await;
    for ordinal in 0..6 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(6).await;
    let (_, v) = agent.finish_with(6, refused_write()).await;
    assert_eq!(v["state"], "passed", "{v}");
    assert!(
        v["reasons"][0]
            .as_str()
            .unwrap()
            .starts_with("not fully tested"),
        "{v}"
    );
    for ordinal in 7..12 {
        pass_stage(&agent, ordinal).await;
    }
    let d = coord.run_detail(run).await;
    assert_eq!(d["state"], "Passed");
    let kinds: Vec<&str> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"interlock_refused") && kinds.contains(&"pass_incomplete"),
        "{kinds:?}"
    );
}

#[tokio::test]
async fn a_hold_times_out_into_failed_with_power_off() {
    // Long enough for the agent below to fetch its hold first.
    let coord = TestCoordinator::start_with(|c| c.hold_timeout = Duration::from_secs(3)).await;
    coord.add_host("node-t", MAC, None).await;
    let run = coord.start_run("node-t", json!({})).await;
    let agent = coord.agent(MAC, "boot-t").await;
    agent.start_stage(0).await;
    let (_, v) = agent
        .finish_stage(0, StageOutcome::Failed, Some("cannot inventory"))
        .await;
    assert_eq!(v["state"], "failed");
    // The next contact gets the hold; its clock started at the failure.
    let (_, d) = agent.post("/heartbeat", json!({})).await;
    let d = if d["directive"]["directive"] == "wait" {
        tokio::time::sleep(Duration::from_millis(300)).await;
        agent.post("/heartbeat", json!({})).await.1
    } else {
        d
    };
    assert_eq!(d["directive"]["directive"], "hold", "{d}");
    let detail = wait_until("hold timeout", Duration::from_secs(20), || {
        let coord = &coord;
        async move {
            let d = coord.run_detail(run).await;
            (d["state"] == "Failed").then_some(d)
        }
    })
    .await;
    assert_eq!(detail["result"], "fail");
    assert!(
        detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "hold_timeout"),
        "{}",
        detail["events"]
    );
    let (_, d) = agent.post("/heartbeat", json!({})).await;
    assert_eq!(
        d["directive"],
        json!({"directive": "release", "power": "poweroff"})
    );
}
