//! `/api/v1/openapi.json` over real HTTP: public, lists every route of the
//! protocol contract, every operation it lists is served by a handler (not
//! the fallback), and real answers validate against the documented schemas.

use testkit as support;

use reqwest::Method;
use serde_json::{json, Value};

use common::measurement::Kind;
use support::{pass_stage, sample, TestAgent, TestCoordinator, SPEC};

/// DESIGN.md's route table (paths are fixed by the contract), the agent
/// routes under `/runs/{id}/…`, and what the issues added.
const CONTRACT: &[(&str, &str)] = &[
    ("get", "/api/v1/health"),
    ("get", "/api/v1/openapi.json"),
    ("post", "/api/v1/claim"),
    ("post", "/api/v1/runs/{id}/stages/{ordinal}/start"),
    ("post", "/api/v1/runs/{id}/stages/{ordinal}/finish"),
    ("post", "/api/v1/runs/{id}/batches"),
    ("post", "/api/v1/runs/{id}/artifacts"),
    ("post", "/api/v1/runs/{id}/heartbeat"),
    ("get", "/api/v1/runs/{id}/directive"),
    ("get", "/api/v1/hosts"),
    ("post", "/api/v1/hosts"),
    ("get", "/api/v1/hosts/{name}"),
    ("get", "/api/v1/runs"),
    ("post", "/api/v1/runs"),
    ("get", "/api/v1/runs/{id}"),
    ("post", "/api/v1/runs/{id}/cancel"),
    ("post", "/api/v1/runs/{id}/abort"),
    ("post", "/api/v1/runs/{id}/release"),
    ("get", "/api/v1/runs/{id}/hold-key"),
    ("get", "/api/v1/runs/{id}/report"),
    ("get", "/api/v1/runs/{id}/report.html"),
    ("get", "/metrics"),
];

async fn document(coord: &TestCoordinator) -> Value {
    // No token: the document is public.
    let resp = coord
        .http
        .get(coord.url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    resp.json().await.unwrap()
}

fn operations(doc: &Value) -> Vec<(String, String, Value)> {
    let mut out = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            out.push((method.clone(), path.clone(), op.clone()));
        }
    }
    out
}

/// A request the router answers through its fallback: no handler ran.
fn is_fallback(status: u16, body: &Value) -> bool {
    let msg = body["error"]["message"].as_str().unwrap_or("");
    (status == 404 && msg == "no such route")
        || (status == 405 && body["error"]["code"] == "method_not_allowed")
}

async fn call(coord: &TestCoordinator, method: &str, path: &str) -> (u16, Value) {
    let path = path
        .replace("{id}", "987654")
        .replace("{ordinal}", "3")
        .replace("{name}", "no-such-host");
    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
    let mut req = coord
        .http
        .request(method.clone(), format!("{}{path}", coord.base));
    if method != Method::GET {
        req = req.json(&json!({}));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_document_lists_every_route_and_every_listed_route_is_served() {
    let coord = TestCoordinator::start().await;
    let doc = document(&coord).await;
    assert_eq!(doc["openapi"], "3.1.0");
    assert_eq!(doc["info"]["version"], env!("CARGO_PKG_VERSION"));
    let ops = operations(&doc);

    for (method, path) in CONTRACT {
        assert!(
            ops.iter().any(|(m, p, _)| m == method && p == path),
            "{method} {path} is missing from openapi.json"
        );
    }

    // The probe can tell a handler from the fallback.
    let (status, body) = call(&coord, "get", "/api/v1/no-such-route").await;
    assert!(is_fallback(status, &body), "{status} {body}");
    let (status, body) = call(&coord, "patch", "/api/v1/claim").await;
    assert!(is_fallback(status, &body), "{status} {body}");

    let mut ids = std::collections::HashSet::new();
    for (method, path, op) in &ops {
        let id = op["operationId"].as_str().unwrap();
        assert!(ids.insert(id.to_string()), "operationId {id} twice");
        let access = op["x-vetting-access"].as_str().unwrap();
        assert!(!op["summary"].as_str().unwrap().is_empty());
        assert!(op["responses"]["200"].is_object(), "{method} {path}");
        let (status, body) = call(&coord, method, path).await;
        assert!(
            !is_fallback(status, &body),
            "{method} {path} is documented but no handler answers it"
        );
        // Without a token, only public routes succeed.
        match access {
            "public" => assert_ne!(status, 401, "{method} {path}"),
            _ => assert!(
                [400, 401].contains(&status),
                "{method} {path} ({access}) answered {status} {body} without a token"
            ),
        }
        for name in path.split('/').filter_map(|s| s.strip_prefix('{')) {
            let name = name.trim_end_matches('}');
            assert!(
                op["parameters"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["name"] == name && p["in"] == "path")),
                "{method} {path} does not document path parameter {name}"
            );
        }
    }
    coord.stop().await;
}

/// The schema `op`'s 200 answer documents, with the document's components
/// so its `$ref`s resolve.
fn response_validator(doc: &Value, method: &str, path: &str) -> jsonschema::Validator {
    let schema =
        &doc["paths"][path][method]["responses"]["200"]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} documents no JSON answer"
    );
    let mut root = schema.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["components"] = doc["components"].clone();
    jsonschema::validator_for(&root).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

fn assert_matches(doc: &Value, method: &str, path: &str, body: &Value) {
    let v = response_validator(doc, method, path);
    let errors: Vec<String> = v
        .iter_errors(body)
        .map(|e| format!("{e} at {}", e.instance_path))
        .collect();
    assert!(errors.is_empty(), "{method} {path}: {errors:#?}\n{body:#}");
}

#[tokio::test]
async fn real_answers_match_the_documented_schemas() {
    let coord = TestCoordinator::start().await;
    let doc = document(&coord).await;

    let (_, health) = call(&coord, "get", "/api/v1/health").await;
    assert_matches(&doc, "get", "/api/v1/health", &health);

    let host = coord
        .add_host("node-o", "52:54:00:00:0a:01", Some(SPEC))
        .await;
    assert_matches(&doc, "post", "/api/v1/hosts", &host);
    let (_, hosts) = coord.op_get("/hosts").await;
    assert_matches(&doc, "get", "/api/v1/hosts", &hosts);

    let run = coord.start_run("node-o", json!({})).await;
    let (_, claim) = coord.claim(&["52:54:00:00:0a:01"], "boot-o").await;
    assert_matches(&doc, "post", "/api/v1/claim", &claim);
    let mut agent = TestAgent::from_claim(&coord, serde_json::from_value(claim).unwrap());
    pass_stage(&agent, 0).await;
    let (_, directive) = agent.start_stage(1).await;
    assert_matches(
        &doc,
        "post",
        "/api/v1/runs/{id}/stages/{ordinal}/start",
        &directive,
    );
    let (_, ack) = agent
        .send(vec![sample(Kind::Temp, "coretemp/Core 0", 48.5, Some(1))])
        .await;
    assert_matches(&doc, "post", "/api/v1/runs/{id}/batches", &ack);

    let (_, runs) = coord.op_get("/runs").await;
    assert_matches(&doc, "get", "/api/v1/runs", &runs);
    let detail = coord.run_detail(run).await;
    assert_matches(&doc, "get", "/api/v1/runs/{id}", &detail);
    let (_, rows) = coord.op_get(&format!("/runs/{run}/measurements")).await;
    assert_eq!(rows.as_array().unwrap().len(), 1);
    assert_matches(&doc, "get", "/api/v1/runs/{id}/measurements", &rows);
    let (_, series) = coord.op_get(&format!("/runs/{run}/series")).await;
    assert_eq!(series[0]["last"], 48.5, "{series}");
    assert_matches(&doc, "get", "/api/v1/runs/{id}/series", &series);

    // Errors have the documented shape too.
    let (status, err) = coord.op_get("/runs/987654").await;
    assert_eq!(status, 404);
    let error = &doc["paths"]["/api/v1/runs/{id}"]["get"]["responses"]["4XX"]["content"]
        ["application/json"]["schema"];
    let mut root = error.clone();
    root["components"] = doc["components"].clone();
    let v = jsonschema::validator_for(&root).unwrap();
    assert!(v.is_valid(&err), "{err}");
    assert!(
        !v.is_valid(&json!({"message": "flat"})),
        "the schema must reject a wrong shape"
    );
    coord.stop().await;
}
