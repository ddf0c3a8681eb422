//! The HTTP edge's own refusals: a wrong method, a malformed query, a
//! login guessing loop; and report.html served like the dashboard.

use reqwest::{Method, StatusCode};
use serde_json::Value;

use testkit::TestCoordinator;

#[tokio::test]
async fn a_wrong_method_is_405_in_the_error_shape() {
    let coord = TestCoordinator::start().await;
    for (method, path) in [
        (Method::DELETE, "/hosts"),
        (Method::GET, "/claim"),
        (Method::PUT, "/runs/1/batches"),
    ] {
        let before = coord.row_counts();
        let resp = coord
            .http
            .request(method.clone(), coord.url(path))
            .bearer_auth(&coord.token)
            .send()
            .await
            .unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "method_not_allowed", "{body}");
        assert_eq!(coord.row_counts(), before);
    }
}

#[tokio::test]
async fn a_malformed_query_is_400_in_the_error_shape() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-q", "52:54:00:00:20:01", None).await;
    coord.start_run("node-q", serde_json::json!({})).await;
    for path in ["/runs?limit=many", "/runs?before=-3x", "/runs?limit=0"] {
        let (st, body) = coord.op_get(path).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert_eq!(body["error"]["code"], "bad_request", "{path}: {body}");
    }
}

#[tokio::test]
async fn report_html_carries_the_dashboards_policy() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-r", "52:54:00:00:20:02", None).await;
    let run = coord.start_run("node-r", serde_json::json!({})).await;
    let resp = coord
        .http
        .get(coord.url(&format!("/runs/{run}/report.html")))
        .bearer_auth(&coord.token)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let h = resp.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.starts_with("default-src 'none'"), "{csp}");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
}

#[tokio::test]
async fn dashboard_logins_are_throttled_per_address() {
    let coord = TestCoordinator::start().await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &str| {
        http.post(format!("{}/ui/login", coord.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
    };
    // Five guesses pass to the check; the sixth is refused before it.
    for i in 0..5 {
        let resp = login(&format!("guess-{i}")).await.unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "guess {i}");
    }
    let resp = login(&coord.token).await.unwrap();
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "{wait}");
    assert!(
        resp.headers().get("set-cookie").is_none(),
        "no session while throttled"
    );
    let page = resp.text().await.unwrap();
    assert!(page.contains("Too many login attempts"), "{page}");
}

#[tokio::test]
async fn runs_and_events_come_a_page_at_a_time() {
    let coord = TestCoordinator::start().await;
    let mut ids = Vec::new();
    for i in 1..=3 {
        let mac = format!("52:54:00:00:20:1{i}");
        coord.add_host(&format!("node-p{i}"), &mac, None).await;
        ids.push(
            coord
                .start_run(&format!("node-p{i}"), serde_json::json!({}))
                .await,
        );
        coord.agent(&mac, "boot-p").await;
    }
    let id_list = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_i64().unwrap())
            .collect()
    };
    let (_, first) = coord.op_get("/runs?limit=2").await;
    assert_eq!(id_list(&first), [ids[2], ids[1]], "newest first");
    let (_, rest) = coord
        .op_get(&format!("/runs?limit=2&before={}", ids[1]))
        .await;
    assert_eq!(id_list(&rest), [ids[0]]);
    let (_, all) = coord.op_get(&format!("/runs/{}/events", ids[0])).await;
    let all = id_list(&all);
    assert!(all.len() >= 2, "{all:?}");
    let (_, one) = coord
        .op_get(&format!("/runs/{}/events?limit=1", ids[0]))
        .await;
    assert_eq!(id_list(&one), all[..1]);
    let (_, next) = coord
        .op_get(&format!("/runs/{}/events?after={}&limit=1", ids[0], all[0]))
        .await;
    assert_eq!(id_list(&next), all[1..2]);
    let (st, body) = coord
        .op_get(&format!("/runs/{}/events?limit=0", ids[0]))
        .await;
    assert_eq!(
        (st, body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("bad_request"))
    );
    let (st, _) = coord.op_get("/runs/999/events").await;
    assert_eq!(st, StatusCode::NOT_FOUND);
}
