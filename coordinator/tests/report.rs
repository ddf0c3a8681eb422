//! report.json over real HTTP with a real SQLite file: written when a run is
//! held and again when it ends, valid against `docs/report.schema.json`,
//! the same bytes from the same database, and the verdicts.

use testkit as support;

use serde_json::{json, Value};

use common::measurement::Kind;
use common::wire::StageOutcome;
use support::report::{assert_valid, fail_hot, fetch, fetch_html, stored_report, validator};
use support::{pass_stage, refused_write, sample, TestCoordinator, SPEC};

#[tokio::test]
async fn a_held_run_gets_a_report_and_a_new_one_when_it_ends() {
    let coord = TestCoordinator::start().await;
    coord
        .add_host("node-rep", "52:54:00:00:07:01", Some(SPEC))
        .await;
    let run = coord.start_run("node-rep", json!({})).await;
    let mut agent = coord.agent("52:54:00:00:07:01", "boot-rep").await;
    fail_hot(&mut agent).await;

    let (held_path, held_bytes) = stored_report(&coord, run, "FailedHolding").await;
    let report: Value = serde_json::from_slice(&held_bytes).unwrap();
    assert_valid(&report);
    assert_eq!(report["verdict"], "fail");
    assert_eq!(report["failure"]["stage"], "CPUStress");
    assert_eq!(report["host"]["name"], "node-rep");
    assert_eq!(report["stages"].as_array().unwrap().len(), 12);
    assert!(report["breaches"]["total"].as_i64().unwrap() >= 1);
    let breach = &report["breaches"]["shown"][0];
    assert_eq!(
        (breach["key"].as_str(), breach["observed"].as_f64()),
        (Some("coretemp/Core 3"), Some(93.5)),
        "{breach}"
    );
    let temp = report["series"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["key"] == "coretemp/Core 3")
        .expect("the temperature series");
    assert_eq!(
        (
            temp["count"].as_i64(),
            temp["min"].as_f64(),
            temp["max"].as_f64()
        ),
        (Some(3), Some(60.0), Some(93.5))
    );
    assert!((temp["mean"].as_f64().unwrap() - 74.833).abs() < 0.01);
    assert!(
        report["thresholds"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["key"] == "coretemp/*"
                && t["source"] == "host_override"
                && t["breaches"].as_i64() >= Some(1)),
        "{}",
        report["thresholds"]
    );

    // On demand: the same bytes, from the same database.
    assert_eq!(fetch(&coord, run).await, held_bytes);
    assert_eq!(fetch(&coord, run).await, held_bytes);

    // Released: the run is Failed and the report is written again.
    let (st, _) = coord
        .op_post(&format!("/runs/{run}/release"), json!({}))
        .await;
    assert!(st.is_success());
    let (end_path, end_bytes) = stored_report(&coord, run, "Failed").await;
    assert_ne!(end_path, held_path);
    let report: Value = serde_json::from_slice(&end_bytes).unwrap();
    assert_valid(&report);
    assert_eq!(report["verdict"], "fail");
    let kinds: Vec<(String, String)> = coord
        .db()
        .prepare(
            "SELECT kind, path FROM artifacts WHERE run_id = ?1 AND kind = 'report' ORDER BY id",
        )
        .unwrap()
        .query_map([run], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(
        kinds,
        [
            ("report".to_string(), held_path.clone()),
            ("report".to_string(), end_path.clone())
        ],
        "one artifact row per rendered state"
    );

    // A restarted coordinator renders the same bytes from the same file.
    let dir = coord.stop().await;
    let coord = TestCoordinator::start_in(dir, |_| {}).await;
    assert_eq!(fetch(&coord, run).await, end_bytes);
}

#[tokio::test]
async fn a_pass_with_an_interlock_refusal_is_pass_incomplete_and_says_what_was_left_out() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-inc", "52:54:00:00:07:02", None).await;
    let run = coord
        .start_run("node-inc", json!({"non_destructive": false}))
        .await;
    let agent = coord.agent("52:54:00:00:07:02", "boot-inc").await;
    for ordinal in 0..6 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(6).await;
    agent.finish_with(6, refused_write()).await;
    for ordinal in 7..12 {
        pass_stage(&agent, ordinal).await;
    }
    let (_, bytes) = stored_report(&coord, run, "Passed").await;
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    assert_valid(&report);
    assert_eq!(report["verdict"], "pass-incomplete");
    assert!(report["failure"].is_null());
    let left_out = report["not_tested"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["stage"] == "DiskPerf")
        .expect("the refused write is listed");
    assert_eq!(left_out["item"], "loop3 fio write");
    assert!(
        left_out["reason"]
            .as_str()
            .unwrap()
            .contains("mounted at /mnt"),
        "{left_out}"
    );
}

#[tokio::test]
async fn a_clean_pass_is_pass_and_a_queued_run_has_no_verdict() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-ok", "52:54:00:00:07:03", None).await;
    let run = coord
        .start_run("node-ok", json!({"non_destructive": false}))
        .await;
    let report: Value = serde_json::from_slice(&fetch(&coord, run).await).unwrap();
    assert_valid(&report);
    assert_eq!(report["verdict"], "none");
    assert!(
        coord.run_detail(run).await["report_path"].is_null(),
        "nothing is stored for a queued run"
    );

    let agent = coord.agent("52:54:00:00:07:03", "boot-ok").await;
    for ordinal in 0..12 {
        pass_stage(&agent, ordinal).await;
    }
    let (_, bytes) = stored_report(&coord, run, "Passed").await;
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    assert_valid(&report);
    assert_eq!(report["verdict"], "pass");
    assert_eq!(report["not_tested"], json!([]), "every stage ran in full");
}

/// Throughput over time: fio's and iperf3's interval series are plotted over
/// the passes that measured them, one plot per metric, with the pass
/// result's threshold drawn as its band, a break between passes, rates in
/// Gbit/s; the tables keep the pass results only, and only those are judged.
#[tokio::test]
async fn throughput_is_plotted_over_the_passes_that_measured_it() {
    let coord = TestCoordinator::start().await;
    let spec = format!(
        "{SPEC}  - {{stage: DiskPerf, kind: fio, key: \"*/read_bw_mbps\", op: within_pct, threshold: 15, nominal: 3200, unit: MB/s, severity: warning}}
  - {{stage: Network, kind: iperf, key: \"*/bps\", op: gt, threshold: 9000000000, unit: bit/s, severity: warning}}
"
    );
    coord
        .add_host("node-tput", "52:54:00:00:07:08", Some(&spec))
        .await;
    let run = coord
        .start_run("node-tput", json!({"non_destructive": false}))
        .await;
    let mut agent = coord.agent("52:54:00:00:07:08", "boot-tput").await;
    let t0 = chrono::Utc::now().timestamp_millis();
    let at = |kind: Kind, key: &str, v: f64, stage: u32, ms: i64| {
        let mut s = sample(kind, key, v, Some(stage));
        s.ts = common::time::Timestamp::from_unix_millis(t0 + ms);
        s
    };
    let (read, write) = (
        "nvme0n1/read_interval_bw_mbps",
        "nvme0n1/write_interval_bw_mbps",
    );
    for ordinal in 0..12 {
        let samples: Vec<_> = match ordinal {
            // DiskPerf: 10 s read and write passes, then their results.
            6 => (1..=10)
                .flat_map(|i| {
                    [
                        at(Kind::Fio, read, 3000.0 + 30.0 * i as f64, 6, i * 1000),
                        at(Kind::Fio, write, 400.0 - i as f64, 6, i * 1000),
                    ]
                })
                .chain([
                    at(Kind::Fio, "nvme0n1/read_bw_mbps", 3165.0, 6, 10_000),
                    at(Kind::Fio, "nvme0n1/write_bw_mbps", 394.5, 6, 10_000),
                ])
                .collect(),
            // Network: five one-second intervals at 9.2–9.6 Gbit/s.
            9 => (1..=5)
                .map(|i| {
                    let v = 9.1e9 + 1e8 * i as f64;
                    at(Kind::Iperf, "eth0/interval_bps", v, 9, 20_000 + i * 1000)
                })
                .chain([at(Kind::Iperf, "eth0/bps", 9.4e9, 9, 25_000)])
                .collect(),
            // Burn: 60 s of random reads, a minute after DiskPerf, and
            // that load's own result (not DiskPerf's benchmark).
            11 => (1..=60)
                .map(|i| {
                    at(
                        Kind::Fio,
                        read,
                        2900.0 + (i % 7) as f64,
                        11,
                        70_000 + i * 1000,
                    )
                })
                .chain([at(Kind::Fio, "nvme0n1/read_bw_mbps", 2903.0, 11, 131_000)])
                .collect(),
            _ => {
                pass_stage(&agent, ordinal).await;
                continue;
            }
        };
        agent.start_stage(ordinal).await;
        let (st, body) = agent.send(samples).await;
        assert_eq!(st.as_u16(), 200, "{body}");
        agent
            .finish_stage(ordinal, StageOutcome::Passed, None)
            .await;
    }
    let (_, bytes) = stored_report(&coord, run, "Passed").await;
    let report: Value = serde_json::from_slice(&bytes).unwrap();
    assert_valid(&report);
    // Tables: pass results only, one row per stage that measured them, so
    // Burn's load never stands in for DiskPerf's benchmark.
    let metrics = |t: &str| -> Vec<String> {
        report[t]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                format!(
                    "{} {}/{} {}",
                    r["stage"].as_str().unwrap(),
                    r["device"].as_str().unwrap(),
                    r["metric"].as_str().unwrap(),
                    r["value"]
                )
            })
            .collect()
    };
    assert_eq!(
        metrics("fio"),
        [
            "DiskPerf nvme0n1/read_bw_mbps 3165.0",
            "DiskPerf nvme0n1/write_bw_mbps 394.5",
            "Burn nvme0n1/read_bw_mbps 2903.0"
        ]
    );
    assert_eq!(metrics("iperf"), ["Network eth0/bps 9400000000.0"]);
    // Thresholds judged the pass results, never an interval (the profile's
    // own `*/lost_pct` had nothing to judge: a TCP test has no loss).
    let judged: Vec<(String, i64)> = report["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["kind"] == "fio" || t["kind"] == "iperf")
        .map(|t| {
            (
                t["key"].as_str().unwrap().to_string(),
                t["evaluated"].as_i64().unwrap(),
            )
        })
        .collect();
    let want = [("*/lost_pct", 0), ("*/read_bw_mbps", 1), ("*/bps", 1)];
    assert_eq!(judged, want.map(|(k, n)| (k.to_string(), n)));

    let html = fetch_html(&coord, run).await;
    let svg = |id: &str| -> &str {
        let start = html
            .find(&format!("<svg id=\"{id}\""))
            .unwrap_or_else(|| panic!("no {id} in the page"));
        let len = html[start..].find("</svg>").unwrap();
        &html[start..start + len]
    };
    assert!(html.contains("<h2 id=\"plots-fio\">Disk throughput over time (fio)</h2>"));
    for row in [
        "<td>DiskPerf</td><td>nvme0n1</td><td>read_bw_mbps</td><td class=\"n\">3165 MB/s</td>",
        "<td>Burn</td><td>nvme0n1</td><td>read_bw_mbps</td><td class=\"n\">2903 MB/s</td>",
    ] {
        assert!(html.contains(row), "no {row} in the fio table");
    }
    assert!(html.contains("Network throughput over time (iperf3)"));
    // One plot per metric: read (DiskPerf and Burn), then write.
    let read_plot = svg("plot-fio-0");
    assert!(
        read_plot.contains(&format!("<title>{read}</title>")),
        "{read_plot}"
    );
    let line = read_plot
        .split("<path d=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap();
    assert_eq!(
        line.matches('M').count(),
        2,
        "broken between DiskPerf and Burn: {line}"
    );
    assert_eq!(line.matches('L').count(), 70 - 2, "{line}");
    // The pass threshold drawn as its band: 3200 ± 15 % (2720 and 3680).
    assert_eq!(
        read_plot
            .matches("*/read_bw_mbps within_pct 15% of 3200 (warning)")
            .count(),
        2,
        "{read_plot}"
    );
    let write_plot = svg("plot-fio-1");
    assert!(write_plot.contains(&format!("<title>{write}</title>")));
    assert!(
        !write_plot.contains("within_pct"),
        "the read rule is not the write's"
    );
    let net = svg("plot-iperf-0");
    assert!(net.contains(">Gbit/s</text>"), "{net}");
    assert!(net.contains("*/bps gt 9000000000 (warning)"), "{net}");
    assert!(net.contains("<title>eth0/interval_bps</title>"));
}

#[tokio::test]
async fn a_report_of_an_unknown_run_is_404_and_needs_the_operator_token() {
    let coord = TestCoordinator::start().await;
    let (st, body) = coord.op_get("/runs/999/report").await;
    assert_eq!(st.as_u16(), 404, "{body}");
    let st = coord
        .http
        .get(coord.url("/runs/999/report"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(st.as_u16(), 401);
}

#[test]
fn the_schema_rejects_a_report_that_breaks_the_contract() {
    let v = validator();
    let report = json!({"schema_version": 1, "verdict": "maybe"});
    let errors: Vec<String> = v.iter_errors(&report).map(|e| e.to_string()).collect();
    assert!(
        errors.iter().any(|e| e.contains("maybe")) && errors.iter().any(|e| e.contains("run")),
        "{errors:#?}"
    );
}
