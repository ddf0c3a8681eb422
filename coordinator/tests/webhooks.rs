//! Webhook notifications against a receiver this test runs on 127.0.0.1:
//! holds and ends are POSTed, failed tries are retried with backoff under
//! one delivery id, and deliveries out of attempts are dead letters that
//! `vetctl webhook list` shows and `vetctl webhook retry` sends again.

use testkit as support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use serde_json::{json, Value};

use common::wire::StageOutcome;
use support::{pass_stage, wait_until, TestCoordinator, SPEC};

#[derive(Debug, Clone)]
struct Received {
    event: String,
    delivery: String,
    body: Value,
    status: u16,
}

/// A webhook receiver: answers 500 to the first `fail_first` requests.
#[derive(Clone)]
struct Receiver {
    got: Arc<Mutex<Vec<Received>>>,
    fail_first: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(addr: SocketAddr, fail_first: usize) -> Self {
        let r = Receiver {
            got: Arc::default(),
            fail_first: Arc::new(AtomicUsize::new(fail_first)),
        };
        let state = r.clone();
        let app = axum::Router::new().route(
            "/hook",
            post(move |headers: HeaderMap, body: String| {
                let state = state.clone();
                async move {
                    let failing = state
                        .fail_first
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if failing {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    };
                    let header = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_string()
                    };
                    state.got.lock().unwrap().push(Received {
                        event: header("x-vetting-event"),
                        delivery: header("x-vetting-delivery"),
                        body: serde_json::from_str(&body).unwrap_or(Value::Null),
                        status: status.as_u16(),
                    });
                    status
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        r
    }

    fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}

/// A loopback port nothing listens on (for now).
fn free_port() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], support::free_port()))
}

async fn deliveries(coord: &TestCoordinator, query: &str) -> Vec<Value> {
    let (status, body) = coord.op_get(&format!("/webhooks{query}")).await;
    assert_eq!(status, 200, "{body}");
    body.as_array().unwrap().clone()
}

/// Holds a run at CPUStress with an agent-reported failure.
async fn fail_at_cpu_stress(coord: &TestCoordinator, host: &str, mac: &str) -> i64 {
    coord.add_host(host, mac, Some(SPEC)).await;
    let run = coord.start_run(host, json!({})).await;
    let agent = coord.agent(mac, &format!("boot-{host}")).await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    let (_, v) = agent
        .finish_stage(
            4,
            StageOutcome::Failed,
            Some("stress-ng: 3 stressors failed"),
        )
        .await;
    assert_eq!(v["state"], "failed", "{v}");
    run
}

#[tokio::test]
async fn holds_and_ends_are_delivered_and_failed_tries_retried() {
    let addr = free_port();
    let receiver = Receiver::start(addr, 2).await;
    let coord = TestCoordinator::start_with(|c| {
        c.webhooks = vec![format!("http://{addr}/hook")];
        c.webhook_backoff = Duration::from_millis(200);
        c.webhook_max_attempts = 5;
    })
    .await;

    let run = fail_at_cpu_stress(&coord, "node-w", "52:54:00:00:0b:01").await;
    let held = wait_until("the hold notification", Duration::from_secs(30), || {
        let receiver = receiver.clone();
        async move {
            let got = receiver.received();
            got.iter().any(|r| r.status == 204).then_some(got)
        }
    })
    .await;
    // Two 500s, then the receiver took it: three tries of one delivery.
    assert_eq!(held.len(), 3, "{held:#?}");
    assert!(held
        .iter()
        .all(|r| r.delivery == held[0].delivery && r.event == "held"));
    assert_eq!(
        held.iter().map(|r| r.status).collect::<Vec<_>>(),
        vec![500, 500, 204]
    );
    let body = &held[2].body;
    assert_eq!(body["event"], "held");
    assert_eq!(body["run_id"], run);
    assert_eq!(body["host"], "node-w");
    assert_eq!(body["state"], "FailedHolding");
    assert_eq!(body["previous_state"], "Running");
    assert_eq!(body["failed_stage"], "CPUStress");
    assert!(
        body["failure_reason"]
            .as_str()
            .unwrap()
            .contains("3 stressors failed"),
        "{body}"
    );
    assert_eq!(
        body["report_html"],
        format!("/api/v1/runs/{run}/report.html")
    );

    let (status, _) = coord
        .op_post(&format!("/runs/{run}/release"), json!({"power": "none"}))
        .await;
    assert_eq!(status, 200);
    let ended = wait_until("the end notification", Duration::from_secs(30), || {
        let receiver = receiver.clone();
        async move {
            let got = receiver.received();
            (got.len() == 4).then_some(got)
        }
    })
    .await;
    let failed = &ended[3];
    assert_eq!(failed.event, "failed");
    assert_ne!(failed.delivery, held[0].delivery);
    assert_eq!(failed.body["state"], "Failed");
    assert_eq!(failed.body["previous_state"], "FailedHolding");

    // The receiver records a POST before its answer reaches the notifier,
    // which only then writes `delivered`: wait for the store to say so.
    let all = wait_until(
        "both deliveries marked delivered",
        Duration::from_secs(30),
        || {
            let coord = &coord;
            async move {
                let all = deliveries(coord, "").await;
                all.iter().all(|d| d["state"] == "delivered").then_some(all)
            }
        },
    )
    .await;
    assert_eq!(all.len(), 2, "{all:#?}");
    let attempts: Vec<i64> = all
        .iter()
        .map(|d| d["attempts"].as_i64().unwrap())
        .collect();
    assert_eq!(attempts, vec![1, 3], "newest first");
    // Nothing is sent twice. A later event is the marker: once its
    // delivery arrives the notifier has made passes after both deliveries
    // were marked delivered, and neither was sent again on the way.
    let later = fail_at_cpu_stress(&coord, "node-w2", "52:54:00:00:0b:02").await;
    let got = wait_until("the later run's hold", Duration::from_secs(30), || {
        let receiver = receiver.clone();
        async move {
            let got = receiver.received();
            got.iter()
                .any(|r| r.body["run_id"] == later && r.status == 204)
                .then_some(got)
        }
    })
    .await;
    let earlier: Vec<_> = got.iter().filter(|r| r.body["run_id"] == run).collect();
    assert_eq!(earlier.len(), 4, "{got:#?}");
    coord.stop().await;
}

fn vetctl(coord: &TestCoordinator, args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vetctl"))
        .args(args)
        .env("VET_COORDINATOR", &coord.base)
        .env("VET_TOKEN", &coord.token)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

// Multi-threaded: vetctl runs as a blocking subprocess while the
// coordinator serves it from this runtime.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_retried_with_vetctl() {
    let addr = free_port();
    // The receiver's credentials ride in the URL: never shown or kept in errors.
    let coord = TestCoordinator::start_with(|c| {
        c.webhooks = vec![format!(
            "http://hookuser:pa55word@{addr}/hook?token=t0ps3cret"
        )];
        c.webhook_backoff = Duration::from_millis(100);
        c.webhook_max_attempts = 2;
    })
    .await;
    // The cursor is set before the first request is answered: the cancel
    // below is notified however late the notifier's first pass comes.
    let cursor: String = coord
        .db()
        .query_row(
            "SELECT value FROM settings WHERE key = 'webhook_event_cursor'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(cursor, "0", "a new database has no events");
    coord
        .add_host("node-d", "52:54:00:00:0b:02", Some(SPEC))
        .await;
    let run = coord.start_run("node-d", json!({})).await;
    let (status, _) = coord
        .op_post(&format!("/runs/{run}/cancel"), json!({}))
        .await;
    assert_eq!(status, 200);

    let dead = wait_until("a dead letter", Duration::from_secs(30), || {
        let coord = &coord;
        async move {
            let dead = deliveries(coord, "?state=dead").await;
            (!dead.is_empty()).then_some(dead)
        }
    })
    .await;
    assert_eq!(dead.len(), 1);
    let id = dead[0]["id"].as_i64().unwrap();
    assert_eq!(dead[0]["event"], "cancelled");
    assert_eq!(dead[0]["attempts"], 2);
    let error = dead[0]["last_error"].as_str().unwrap();
    assert!(!error.is_empty());
    assert_eq!(dead[0]["url"], format!("http://***@{addr}/hook?***"));
    let stored: String = coord
        .db()
        .query_row(
            "SELECT last_error FROM webhook_deliveries WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    for secret in ["pa55word", "t0ps3cret", "hookuser"] {
        assert!(
            !stored.contains(secret) && !error.contains(secret),
            "{stored}"
        );
    }

    let (ok, table, err) = vetctl(&coord, &["webhook", "list"]);
    assert!(ok, "{err}");
    let line = table
        .lines()
        .find(|l| l.starts_with(&id.to_string()))
        .unwrap_or_else(|| panic!("no delivery {id} in:\n{table}"));
    assert!(
        line.contains("cancelled") && line.contains("dead") && line.contains(&addr.to_string()),
        "{line}"
    );
    let (ok, json_out, _) = vetctl(&coord, &["--json", "webhook", "list"]);
    assert!(ok);
    let listed: Vec<Value> = serde_json::from_str(&json_out).unwrap();
    assert_eq!(listed, dead);
    let (ok, delivered, _) = vetctl(&coord, &["webhook", "list", "--state", "delivered"]);
    assert!(ok);
    assert_eq!(delivered.trim(), "no deliveries");

    // The receiver comes up; the operator sends the dead letter again.
    let receiver = Receiver::start(addr, 0).await;
    let (ok, out, err) = vetctl(&coord, &["webhook", "retry", &id.to_string()]);
    assert!(ok, "{err}");
    assert!(out.contains("pending"), "{out}");
    let got = wait_until("the retried delivery", Duration::from_secs(30), || {
        let receiver = receiver.clone();
        async move {
            let got = receiver.received();
            (!got.is_empty()).then_some(got)
        }
    })
    .await;
    assert_eq!(got[0].delivery, id.to_string());
    assert_eq!(got[0].body["event"], "cancelled");
    assert_eq!(got[0].body["state"], "Cancelled");
    assert_eq!(got[0].body["previous_state"], "Queued");
    let now_delivered = wait_until("delivered state", Duration::from_secs(10), || {
        let coord = &coord;
        async move {
            let d = deliveries(coord, "?state=delivered").await;
            (!d.is_empty()).then_some(d)
        }
    })
    .await;
    assert_eq!(now_delivered[0]["id"], id);
    assert_eq!(now_delivered[0]["attempts"], 1);
    assert!(now_delivered[0]["last_error"].is_null());

    // Only a dead letter can be retried; bad input changes nothing.
    let (ok, _, err) = vetctl(&coord, &["webhook", "retry", &id.to_string()]);
    assert!(!ok);
    assert!(err.contains("only a dead letter is retried"), "{err}");
    let (ok, _, err) = vetctl(&coord, &["webhook", "retry", "99999"]);
    assert!(!ok);
    assert!(err.contains("no webhook delivery 99999"), "{err}");
    let (status, body) = coord.op_get("/webhooks?state=bogus").await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(deliveries(&coord, "?state=delivered").await, now_delivered);
    coord.stop().await;
}
