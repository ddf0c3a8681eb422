//! Bad input gets a 4xx JSON error and changes nothing: every case compares
//! the row count of every table before and after.

mod closed;
mod edge;

use testkit as support;

use reqwest::{Method, StatusCode};
use serde_json::json;

use common::wire::StageOutcome;
use support::TestCoordinator;

const MAC: &str = "52:54:00:00:00:01";

enum Auth {
    Operator,
    Run,
    Host,
    NoToken,
    Bogus,
}

struct Case {
    name: &'static str,
    method: Method,
    path: String,
    auth: Auth,
    content_type: &'static str,
    body: Vec<u8>,
    status: StatusCode,
}

fn case(
    name: &'static str,
    method: Method,
    path: impl Into<String>,
    auth: Auth,
    body: &str,
    status: StatusCode,
) -> Case {
    Case {
        name,
        method,
        path: path.into(),
        auth,
        content_type: "application/json",
        body: body.as_bytes().to_vec(),
        status,
    }
}

#[tokio::test]
async fn bad_inputs_are_refused_and_change_nothing() {
    let coord = TestCoordinator::start_with(|c| c.max_body_bytes = 64 * 1024).await;
    coord.add_host("node-a", MAC, None).await;
    coord.add_host("node-q", "52:54:00:00:00:09", None).await;
    let run = coord.start_run("node-a", json!({})).await;
    let queued = coord.start_run("node-q", json!({})).await;
    let agent = coord.agent(MAC, "boot-1").await;
    agent.start_stage(0).await;
    agent.finish_stage(0, StageOutcome::Passed, None).await;
    agent.start_stage(1).await;
    let r = format!("/runs/{run}");
    let (_, t) = coord.op_post("/hosts/node-q/token", json!({})).await;
    let host_token = t["token"].as_str().unwrap().to_string();
    let huge = format!(
        r#"{{"seq": 1, "samples": [{}]}}"#,
        vec![r#"{"ts":"2026-11-23T09:15:43.123Z","kind":"temp","key":"k","value":1}"#; 2000]
            .join(",")
    );
    use Auth::*;
    use StatusCode as S;
    let ts = "2026-11-23T09:15:43.123Z";
    let hb_ok = format!(r#"{{"boot_id": "b", "macs": ["{MAC}"], "agent_version": "t"}}"#);
    let cases = vec![
        case(
            "agent event of a kind agents do not report",
            Method::POST,
            format!("{r}/events"),
            Run,
            r#"{"kind": "transition", "level": "info", "message": "x"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "agent event with an unknown level",
            Method::POST,
            format!("{r}/events"),
            Run,
            r#"{"kind": "kernel_error", "level": "panic", "message": "x"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "agent event without a message",
            Method::POST,
            format!("{r}/events"),
            Run,
            r#"{"kind": "kernel_error", "level": "warn", "message": ""}"#,
            S::BAD_REQUEST,
        ),
        case(
            "agent event with another run's token",
            Method::POST,
            format!("/runs/{queued}/events"),
            Run,
            r#"{"kind": "kernel_error", "level": "warn", "message": "x"}"#,
            S::UNAUTHORIZED,
        ),
        case(
            "host heartbeat without a token",
            Method::POST,
            "/host/heartbeat",
            NoToken,
            &hb_ok,
            S::UNAUTHORIZED,
        ),
        case(
            "host heartbeat with a bogus token",
            Method::POST,
            "/host/heartbeat",
            Bogus,
            &hb_ok,
            S::UNAUTHORIZED,
        ),
        case(
            "host heartbeat with a run token",
            Method::POST,
            "/host/heartbeat",
            Run,
            &hb_ok,
            S::UNAUTHORIZED,
        ),
        case(
            "host heartbeat, malformed JSON",
            Method::POST,
            "/host/heartbeat",
            Host,
            "{\"boot_id\": ",
            S::BAD_REQUEST,
        ),
        case(
            "host heartbeat, empty boot id",
            Method::POST,
            "/host/heartbeat",
            Host,
            r#"{"boot_id": "", "macs": [], "agent_version": "t"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "host heartbeat, MACs not a list",
            Method::POST,
            "/host/heartbeat",
            Host,
            r#"{"boot_id": "b", "macs": "52:54:00:00:00:01", "agent_version": "t"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "host token for an unknown host",
            Method::POST,
            "/hosts/nope/token",
            Operator,
            "{}",
            S::NOT_FOUND,
        ),
        case(
            "host token without the operator token",
            Method::POST,
            "/hosts/node-a/token",
            Host,
            "{}",
            S::UNAUTHORIZED,
        ),
        case(
            "malformed JSON claim",
            Method::POST,
            "/claim",
            NoToken,
            "{\"macs\": [",
            S::BAD_REQUEST,
        ),
        case(
            "empty MAC list",
            Method::POST,
            "/claim",
            NoToken,
            r#"{"macs": [], "boot_id": "b"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "malformed MAC",
            Method::POST,
            "/claim",
            NoToken,
            r#"{"macs": ["52:54:00:zz:00:01"], "boot_id": "b"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "MACs not a list",
            Method::POST,
            "/claim",
            NoToken,
            r#"{"macs": "52:54:00:00:00:01", "boot_id": "b"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "65 MACs in one claim (too_many_macs)",
            Method::POST,
            "/claim",
            NoToken,
            &json!({"macs": (0..65).map(|i| format!("52:54:00:77:00:{i:02x}")).collect::<Vec<_>>(), "boot_id": "b"}).to_string(),
            S::BAD_REQUEST,
        ),
        case(
            "empty boot id",
            Method::POST,
            "/claim",
            NoToken,
            r#"{"macs": ["52:54:00:00:00:01"], "boot_id": " "}"#,
            S::BAD_REQUEST,
        ),
        case(
            "batch value is a string",
            Method::POST,
            format!("{r}/batches"),
            Run,
            &format!(
                r#"{{"seq": 1, "samples": [{{"ts": "{ts}", "kind": "temp", "key": "k", "value": "hot"}}]}}"#
            ),
            S::BAD_REQUEST,
        ),
        case(
            "batch value overflows to infinity",
            Method::POST,
            format!("{r}/batches"),
            Run,
            &format!(
                r#"{{"seq": 1, "samples": [{{"ts": "{ts}", "kind": "temp", "key": "k", "value": 1e999}}]}}"#
            ),
            S::BAD_REQUEST,
        ),
        case(
            "batch value NaN literal",
            Method::POST,
            format!("{r}/batches"),
            Run,
            &format!(
                r#"{{"seq": 1, "samples": [{{"ts": "{ts}", "kind": "temp", "key": "k", "value": NaN}}]}}"#
            ),
            S::BAD_REQUEST,
        ),
        case(
            "unknown measurement kind",
            Method::POST,
            format!("{r}/batches"),
            Run,
            &format!(
                r#"{{"seq": 1, "samples": [{{"ts": "{ts}", "kind": "heat", "key": "k", "value": 1}}]}}"#
            ),
            S::BAD_REQUEST,
        ),
        case(
            "timestamp not RFC 3339",
            Method::POST,
            format!("{r}/batches"),
            Run,
            r#"{"seq": 1, "samples": [{"ts": "yesterday", "kind": "temp", "key": "k", "value": 1}]}"#,
            S::BAD_REQUEST,
        ),
        case(
            "sample for a stage that does not exist",
            Method::POST,
            format!("{r}/batches"),
            Run,
            &format!(
                r#"{{"seq": 1, "samples": [{{"ts": "{ts}", "kind": "temp", "key": "k", "value": 1, "stage": 0}}, {{"ts": "{ts}", "kind": "temp", "key": "k", "value": 1, "stage": 40}}]}}"#
            ),
            S::BAD_REQUEST,
        ),
        case(
            "batch number zero",
            Method::POST,
            format!("{r}/batches"),
            Run,
            r#"{"seq": 0, "samples": []}"#,
            S::BAD_REQUEST,
        ),
        case(
            "batch gap",
            Method::POST,
            format!("{r}/batches"),
            Run,
            r#"{"seq": 7, "samples": []}"#,
            S::CONFLICT,
        ),
        Case {
            name: "oversized batch",
            method: Method::POST,
            path: format!("{r}/batches"),
            auth: Run,
            content_type: "application/json",
            body: huge.into_bytes(),
            status: S::PAYLOAD_TOO_LARGE,
        },
        Case {
            name: "batch without JSON content type",
            method: Method::POST,
            path: format!("{r}/batches"),
            auth: Run,
            content_type: "text/plain",
            body: br#"{"seq": 1, "samples": []}"#.to_vec(),
            status: S::BAD_REQUEST,
        },
        case(
            "batch without a token",
            Method::POST,
            format!("{r}/batches"),
            NoToken,
            r#"{"seq": 1, "samples": []}"#,
            S::UNAUTHORIZED,
        ),
        case(
            "batch with a wrong token",
            Method::POST,
            format!("{r}/batches"),
            Bogus,
            r#"{"seq": 1, "samples": []}"#,
            S::UNAUTHORIZED,
        ),
        case(
            "batch for an unknown run",
            Method::POST,
            "/runs/9999/batches",
            Run,
            r#"{"seq": 1, "samples": []}"#,
            S::NOT_FOUND,
        ),
        case(
            "run id not a number",
            Method::POST,
            "/runs/abc/batches",
            Run,
            r#"{"seq": 1, "samples": []}"#,
            S::BAD_REQUEST,
        ),
        case(
            "finish a stage that is not running",
            Method::POST,
            format!("{r}/stages/5/finish"),
            Run,
            r#"{"outcome": "passed"}"#,
            S::CONFLICT,
        ),
        case(
            "start a stage out of order",
            Method::POST,
            format!("{r}/stages/6/start"),
            Run,
            "{}",
            S::CONFLICT,
        ),
        case(
            "stage ordinal out of range",
            Method::POST,
            format!("{r}/stages/12/start"),
            Run,
            "{}",
            S::BAD_REQUEST,
        ),
        case(
            "finish with an unknown outcome",
            Method::POST,
            format!("{r}/stages/1/finish"),
            Run,
            r#"{"outcome": "great"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "hold ip on a running run",
            Method::POST,
            format!("{r}/hold-ip"),
            Run,
            r#"{"hold_ip": "127.0.0.1"}"#,
            S::CONFLICT,
        ),
        case(
            "hold ip not an address",
            Method::POST,
            format!("{r}/hold-ip"),
            Run,
            r#"{"hold_ip": "held"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "artifact without kind",
            Method::POST,
            format!("{r}/artifacts"),
            Run,
            "{}",
            S::BAD_REQUEST,
        ),
        case(
            "artifact posing as the hold key",
            Method::POST,
            format!("{r}/artifacts?kind=hold_key"),
            Run,
            "key",
            S::BAD_REQUEST,
        ),
        case(
            "operator route without a token",
            Method::GET,
            "/runs",
            NoToken,
            "",
            S::UNAUTHORIZED,
        ),
        case(
            "operator route with a wrong token",
            Method::POST,
            "/hosts",
            Bogus,
            r#"{"name": "x", "mac": "52:54:00:00:00:07"}"#,
            S::UNAUTHORIZED,
        ),
        case(
            "duplicate host name",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "node-a", "mac": "52:54:00:00:00:07"}"#,
            S::CONFLICT,
        ),
        case(
            "duplicate host MAC",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "node-z", "mac": "52:54:00:00:00:01"}"#,
            S::CONFLICT,
        ),
        case(
            "host name with a slash",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "a/b", "mac": "52:54:00:00:00:07"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "WoL address not an IP",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "n", "mac": "52:54:00:00:00:07", "wol_broadcast": "lan"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "spec with an unknown key",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "n", "mac": "52:54:00:00:00:07", "expected_spec_yaml": "cpu: {cores: 4}"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "spec threshold with a wrong unit",
            Method::POST,
            "/hosts",
            Operator,
            r#"{"name": "n", "mac": "52:54:00:00:00:07", "expected_spec_yaml": "thresholds: [{stage: CPUStress, kind: temp, key: '*', op: lt, threshold: 90, unit: F, severity: critical}]"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "edit unknown host",
            Method::PATCH,
            "/hosts/ghost",
            Operator,
            r#"{"expected_spec_yaml": ""}"#,
            S::NOT_FOUND,
        ),
        case(
            "run for an unknown host",
            Method::POST,
            "/runs",
            Operator,
            r#"{"host": "ghost"}"#,
            S::NOT_FOUND,
        ),
        case(
            "run with an unknown profile",
            Method::POST,
            "/runs",
            Operator,
            r#"{"host": "node-a", "profile": "fast"}"#,
            S::BAD_REQUEST,
        ),
        case(
            "wipe with non-destructive",
            Method::POST,
            "/runs",
            Operator,
            r#"{"host": "node-a", "non_destructive": true, "overrides": {"wipe": true}}"#,
            S::BAD_REQUEST,
        ),
        case(
            "release a running run",
            Method::POST,
            format!("{r}/release"),
            Operator,
            "{}",
            S::CONFLICT,
        ),
        case(
            "cancel a claimed run",
            Method::POST,
            format!("{r}/cancel"),
            Operator,
            "",
            S::CONFLICT,
        ),
        case(
            "abort a queued run",
            Method::POST,
            format!("/runs/{queued}/abort"),
            Operator,
            "",
            S::CONFLICT,
        ),
        case(
            "hold key of a running run",
            Method::GET,
            format!("{r}/hold-key"),
            Operator,
            "",
            S::CONFLICT,
        ),
        case(
            "unknown route",
            Method::GET,
            "/nope",
            Operator,
            "",
            S::NOT_FOUND,
        ),
    ];
    assert!(cases.len() >= 15);
    for c in cases {
        let before = coord.row_counts();
        let mut req = coord.http.request(c.method.clone(), coord.url(&c.path));
        req = match c.auth {
            Operator => req.bearer_auth(&coord.token),
            Run => req.bearer_auth(&agent.token),
            Host => req.bearer_auth(&host_token),
            Bogus => req.bearer_auth("0123456789abcdef"),
            NoToken => req,
        };
        if !c.body.is_empty() {
            req = req
                .header("content-type", c.content_type)
                .body(c.body.clone());
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, c.status, "{}: {text}", c.name);
        let body: serde_json::Value =
            serde_json::from_str(&text).unwrap_or_else(|_| panic!("{}: not JSON: {text}", c.name));
        assert!(
            body["error"]["code"].is_string() && body["error"]["message"].is_string(),
            "{}: {body}",
            c.name
        );
        assert_eq!(
            coord.row_counts(),
            before,
            "{} changed the database",
            c.name
        );
    }
    // Nothing was half-written: the run still takes its first batch as 1.
    let (st, ack) = agent
        .post("/batches", json!({"seq": 1, "samples": []}))
        .await;
    assert_eq!(st, StatusCode::OK, "{ack}");
}
