//! Reading reports in tests: report.json against its schema, both files
//! fetched over HTTP or from the artifacts the writer stored, and a run
//! driven to a held failure.

use std::time::Duration;

use serde_json::Value;

use crate::{pass_stage, sample, wait_until, TestAgent, TestCoordinator};
use common::measurement::Kind;
use common::stage::StageState;
use common::wire::{StageFinish, StageOutcome, SubStepReport};

pub fn validator() -> jsonschema::Validator {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/report.schema.json");
    let schema: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    jsonschema::validator_for(&schema).expect("docs/report.schema.json is a valid schema")
}

/// Asserts `report` matches the schema, listing every violation.
pub fn assert_valid(report: &Value) {
    let v = validator();
    let errors: Vec<String> = v
        .iter_errors(report)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect();
    assert!(
        errors.is_empty(),
        "report.json violates the schema: {errors:#?}"
    );
}

pub async fn fetch(coord: &TestCoordinator, run: i64) -> Vec<u8> {
    let resp = coord
        .http
        .get(coord.url(&format!("/runs/{run}/report")))
        .bearer_auth(&coord.token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.bytes().await.unwrap().to_vec()
}

pub async fn fetch_html(coord: &TestCoordinator, run: i64) -> String {
    let resp = coord
        .http
        .get(coord.url(&format!("/runs/{run}/report.html")))
        .bearer_auth(&coord.token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    resp.text().await.unwrap()
}

/// Waits until the stored report shows `state`; returns its path and bytes.
pub async fn stored_report(coord: &TestCoordinator, run: i64, state: &str) -> (String, Vec<u8>) {
    wait_until(
        "the stored report",
        Duration::from_secs(20),
        || async move {
            let d = coord.run_detail(run).await;
            let path = d["report_path"].as_str()?.to_string();
            let bytes = std::fs::read(&path).ok()?;
            let report: Value = serde_json::from_slice(&bytes).ok()?;
            (report["run"]["state"] == state).then_some((path, bytes))
        },
    )
    .await
}

/// Passes stages 0..4 and fails CPUStress on a live thermal breach.
pub async fn fail_hot(agent: &mut TestAgent) {
    for ordinal in 0..4 {
        pass_stage(agent, ordinal).await;
    }
    agent.start_stage(4).await;
    let samples = [60.0, 71.0, 93.5]
        .iter()
        .map(|v| sample(Kind::Temp, "coretemp/Core 3", *v, Some(4)))
        .chain([sample(Kind::Fan, "nct6775/fan1", 1800.0, Some(4))])
        .collect();
    agent.send(samples).await;
    let (_, v) = agent
        .finish_with(
            4,
            StageFinish {
                outcome: StageOutcome::Passed,
                absent: false,
                reason: None,
                at: None,
                summary: None,
                sub_steps: vec![SubStepReport {
                    ordinal: 0,
                    name: "cpu pass".into(),
                    state: StageState::Passed,
                    device: None,
                    started_at: None,
                    completed_at: None,
                    summary: None,
                }],
            },
        )
        .await;
    assert_eq!(v["state"], "failed", "{v}");
}
