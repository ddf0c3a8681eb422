//! `/metrics` over real HTTP: the operator token unless configured public,
//! runs by state, held hosts, samples ingested, the batch latency histogram
//! and last-seen ages, all moving as a scripted agent works.

use testkit as support;

use serde_json::json;

use common::measurement::Kind;
use common::wire::StageOutcome;
use support::{pass_stage, sample, TestCoordinator, SPEC};

async fn scrape(coord: &TestCoordinator, token: bool) -> (u16, String) {
    let mut req = coord.http.get(format!("{}/metrics", coord.base));
    if token {
        req = req.bearer_auth(&coord.token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The value of the sample line starting with `series ` (exact labels).
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no {series} in:\n{text}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_follow_the_runs_and_need_the_token() {
    let coord = TestCoordinator::start().await;
    let (status, _) = scrape(&coord, false).await;
    assert_eq!(status, 401, "the operator token is needed by default");

    coord
        .add_host("node-m", "52:54:00:00:09:01", Some(SPEC))
        .await;
    let run = coord.start_run("node-m", json!({})).await;
    let (status, text) = scrape(&coord, true).await;
    assert_eq!(status, 200);
    assert_eq!(value(&text, "vetting_runs{state=\"Queued\"}"), 1.0);
    assert_eq!(value(&text, "vetting_samples_ingested_total"), 0.0);

    let mut agent = coord.agent("52:54:00:00:09:01", "boot-m").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    agent
        .send(vec![
            sample(Kind::Temp, "coretemp/Core 0", 55.0, Some(4)),
            sample(Kind::Temp, "coretemp/Core 1", 56.0, Some(4)),
        ])
        .await;
    let (_, text) = scrape(&coord, true).await;
    assert_eq!(value(&text, "vetting_runs{state=\"Running\"}"), 1.0);
    assert_eq!(value(&text, "vetting_samples_ingested_total"), 2.0);
    assert_eq!(value(&text, "vetting_batch_latency_seconds_count"), 1.0);
    assert_eq!(
        value(&text, "vetting_batch_latency_seconds_bucket{le=\"+Inf\"}"),
        1.0
    );
    let age = value(
        &text,
        &format!("vetting_agent_last_heartbeat_age_seconds{{run=\"{run}\",host=\"node-m\"}}"),
    );
    assert!((0.0..60.0).contains(&age), "{age}");

    // A breach holds the host.
    agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 3", 93.5, Some(4))])
        .await;
    agent.finish_stage(4, StageOutcome::Passed, None).await;
    let (_, text) = scrape(&coord, true).await;
    assert_eq!(value(&text, "vetting_runs{state=\"FailedHolding\"}"), 1.0);
    assert_eq!(value(&text, "vetting_runs{state=\"Running\"}"), 0.0);
    assert_eq!(value(&text, "vetting_held_hosts"), 1.0);
    assert_eq!(value(&text, "vetting_samples_ingested_total"), 3.0);
}

#[tokio::test]
async fn metrics_can_be_public_and_show_host_mode_last_seen() {
    let coord = TestCoordinator::start_with(|c| c.metrics_public = true).await;
    coord.add_host("node-p", "52:54:00:00:09:02", None).await;
    let (st, body) = coord.op_post("/hosts/node-p/token", json!({})).await;
    assert!(st.is_success(), "{body}");
    let token = body["token"].as_str().unwrap().to_string();
    let resp = coord
        .http
        .post(coord.url("/host/heartbeat"))
        .bearer_auth(&token)
        .json(&json!({"boot_id": "b-p", "macs": ["52:54:00:00:09:02"], "agent_version": "test"}))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let (status, text) = scrape(&coord, false).await;
    assert_eq!(status, 200, "public by config");
    let age = value(&text, "vetting_host_last_seen_age_seconds{host=\"node-p\"}");
    assert!((0.0..60.0).contains(&age), "{age}");
    assert!(text.contains("# TYPE vetting_batch_latency_seconds histogram"));
}
