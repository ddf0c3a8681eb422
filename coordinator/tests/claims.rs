//! Claims over real HTTP with a real SQLite file: the first claim wins, a
//! live run is nobody else's, a claim names at most 64 MACs, and claims
//! are limited per source address after their shape is checked.

use testkit as support;

use reqwest::StatusCode;
use serde_json::json;

use common::stage::StageState;
use common::wire::StageOutcome;
use support::{TestAgent, TestCoordinator};

const MAC: &str = "52:54:00:00:00:01";

#[tokio::test]
async fn the_first_claim_wins_and_a_live_run_is_nobody_elses() {
    let coord = TestCoordinator::start().await;
    let (st, body) = coord.claim(&[MAC], "boot-1").await;
    assert_eq!(st, StatusCode::NOT_FOUND, "nothing queued: {body}");
    coord.add_host("node-e", MAC, None).await;
    let run = coord.start_run("node-e", json!({})).await;
    let (st, first) = coord.claim(&["52:54:00:99:99:99", MAC], "x").await;
    assert_eq!(
        st,
        StatusCode::OK,
        "claims with all the machine's MACs; one of them is registered: {first}"
    );
    assert_eq!(first["run_id"], run);
    let a = TestAgent::from_claim(&coord, serde_json::from_value(first).unwrap());
    // While its agent heartbeats, the run is nobody else's: not another
    // boot's, not one that sends the same boot id (anyone can).
    for boot in ["x", "evil"] {
        let (st, body) = coord.claim(&[MAC], boot).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (StatusCode::CONFLICT, Some("claim_conflict")),
            "{boot}: {body}"
        );
    }
    let (st, _) = a.start_stage(0).await;
    assert_eq!(st, StatusCode::OK, "the first agent's token still works");
    let d = coord.run_detail(run).await;
    let refused: Vec<&serde_json::Value> = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "claim_refused")
        .collect();
    assert_eq!(refused.len(), 2, "{:#}", d["events"]);
    assert!(
        refused[0]["message"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1"),
        "the refusal names the caller: {}",
        refused[0]
    );
    a.finish_stage(0, StageOutcome::Passed, None).await;
    a.start_stage(1).await;
    // The machine reboots and the old agent falls silent: after three
    // heartbeat intervals a new boot resumes at the first stage not passed.
    coord.silence(run, 16);
    let c = coord.agent(MAC, "y").await;
    assert_eq!(c.run_id, run);
    assert_eq!(c.claim.resume_from, 1);
    assert_eq!(
        c.claim.stages[1].state,
        StageState::Pending,
        "the interrupted stage runs again"
    );
    let (st, _) = a.start_stage(1).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "the old token is gone");
    let d = coord.run_detail(run).await;
    assert_eq!(d["state"], "Running");
    let resume = d["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "resume")
        .unwrap();
    assert!(
        resume["message"]
            .as_str()
            .unwrap()
            .contains("resuming at stage SpecValidate"),
        "{resume}"
    );
    // The same boot, silent as long, takes its run back with a new token.
    coord.silence(run, 16);
    let again = coord.agent(MAC, "y").await;
    assert_ne!(again.token, c.token, "token re-issued");
}

#[tokio::test]
async fn a_claim_names_at_most_64_macs_and_the_limit_is_named() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-m", MAC, None).await;
    let run = coord.start_run("node-m", json!({})).await;
    let before = coord.row_counts();
    let mut macs: Vec<String> = (0..64).map(|i| format!("52:54:00:77:00:{i:02x}")).collect();
    macs.push(MAC.into());
    let refs: Vec<&str> = macs.iter().map(String::as_str).collect();
    let (st, body) = coord.claim(&refs, "b").await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("too_many_macs")),
        "{body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("at most 64"),
        "{body}"
    );
    assert_eq!(
        coord.row_counts(),
        before,
        "a refused claim changes nothing"
    );
    // 64 are fine, and the registered one among them is found.
    let (st, body) = coord.claim(&refs[1..], "b").await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["run_id"], run);
}

#[tokio::test]
async fn claims_are_limited_per_address_after_their_shape_is_checked() {
    let coord = TestCoordinator::start_with(|c| {
        c.claim_rate = 0.05;
        c.claim_burst = 3;
    })
    .await;
    for i in 0..3 {
        let (st, body) = coord.claim(&["52:54:00:66:00:01"], "b").await;
        assert_eq!(
            st,
            StatusCode::NOT_FOUND,
            "claim {i} is within the burst: {body}"
        );
    }
    let resp = coord
        .http
        .post(coord.url("/claim"))
        .json(&json!({"macs": ["52:54:00:66:00:01"], "boot_id": "b"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("a Retry-After in seconds");
    assert!(
        (1..=20).contains(&retry),
        "one claim per 20 s: retry after {retry}"
    );
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    // A malformed claim is still told what is wrong with it.
    let (st, body) = coord.claim(&[], "b").await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    // Other routes are not limited.
    let (st, _) = coord.op_get("/hosts").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn a_host_with_a_claim_secret_is_claimed_only_with_it() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-s", MAC, None).await;
    let secret = "s3cret-for-node-s-0001";
    let before = coord.row_counts();
    for bad in ["short", "has a space in it, long enough"] {
        let (st, body) = coord
            .op_post("/hosts/node-s/claim-secret", json!({"claim_secret": bad}))
            .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_eq!(
        coord.row_counts(),
        before,
        "a refused secret changes nothing"
    );
    let (st, host) = coord
        .op_post(
            "/hosts/node-s/claim-secret",
            json!({"claim_secret": secret}),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{host}");
    assert_eq!(host["claim_secret"], true);
    let (_, shown) = coord.op_get("/hosts/node-s").await;
    assert!(
        !shown.to_string().contains(secret),
        "never answered: {shown}"
    );
    let run = coord.start_run("node-s", json!({})).await;
    let claim = |secret: Option<&str>, protocol: u32| {
        let mut body = json!({"macs": [MAC], "boot_id": "b", "protocol_version": protocol, "agent_version": "0.9.9"});
        if let Some(s) = secret {
            body["claim_secret"] = json!(s);
        }
        coord.http.post(coord.url("/claim")).json(&body).send()
    };
    for given in [None, Some("not-the-secret-of-node-s")] {
        let (st, body) = support::read(claim(given, 2).await.unwrap()).await;
        assert_eq!(
            (st, body["error"]["code"].as_str()),
            (StatusCode::FORBIDDEN, Some("claim_secret_mismatch")),
            "{given:?}: {body}"
        );
    }
    // An agent speaking a protocol this coordinator does not serve is told so.
    let (st, body) = support::read(claim(Some(secret), 99).await.unwrap()).await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("agent_incompatible")),
        "{body}"
    );
    let (st, body) = support::read(claim(Some(secret), 2).await.unwrap()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["run_id"], run);
    let d = coord.run_detail(run).await;
    let events = d["events"].as_array().unwrap();
    let refused = events
        .iter()
        .filter(|e| e["kind"] == "claim_refused")
        .count();
    assert_eq!(refused, 3, "{events:#?}");
    assert!(
        events.iter().any(|e| e["kind"] == "claim"
            && e["message"]
                .as_str()
                .unwrap()
                .contains("agent 0.9.9, protocol 2")),
        "{events:#?}"
    );
    assert!(!d.to_string().contains(secret), "never in events");
}

/// A host-mode agent claims only the non-destructive run its heartbeat
/// named: anything else is `409 claim_mismatch`, a `host_mode_refused`
/// event, and the run stays queued for a boot agent.
#[tokio::test]
async fn host_mode_claims_only_the_named_non_destructive_run() {
    let coord = TestCoordinator::start().await;
    let mac = "52:54:00:00:50:01";
    coord.add_host("node-h", mac, None).await;
    let destructive = coord
        .start_run("node-h", json!({"non_destructive": false}))
        .await;
    let claim = |run: i64| {
        let body = json!({"macs": [mac], "boot_id": "host-b", "host_mode_run": run});
        coord.http.post(coord.url("/claim")).json(&body).send()
    };
    for (asked, why) in [
        (destructive, "is destructive"),
        (destructive + 1, "would get run"),
    ] {
        let (st, body) = support::read(claim(asked).await.unwrap()).await;
        assert_eq!(st, StatusCode::CONFLICT, "{body}");
        assert_eq!(body["error"]["code"], "claim_mismatch", "{body}");
        let detail = coord.run_detail(destructive).await;
        assert_eq!(detail["state"], "Queued");
        let refused = detail["events"]
            .as_array()
            .unwrap()
            .iter()
            .rfind(|e| e["kind"] == "host_mode_refused")
            .cloned()
            .unwrap_or_default();
        assert!(
            refused["message"].as_str().is_some_and(|m| m.contains(why)),
            "{refused}"
        );
    }
    // The same claim for a non-destructive run it names is taken.
    coord
        .op_post(&format!("/runs/{destructive}/cancel"), json!({}))
        .await;
    let gentle = coord
        .start_run("node-h", json!({"non_destructive": true}))
        .await;
    let (st, body) = support::read(claim(gentle).await.unwrap()).await;
    assert_eq!(
        (st, body["run_id"].as_i64()),
        (StatusCode::OK, Some(gentle)),
        "{body}"
    );
}
