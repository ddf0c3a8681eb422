//! The per-series summaries and threshold counts the batch insert keeps
//! agree with the rows they summarize — across batches out of time order
//! and a resent batch — and with what migration 0011 computes from the
//! rows of an existing database; a long run is plotted from rollups that
//! keep its peak.

use testkit as support;

use std::collections::BTreeMap;

use rusqlite::Connection;

use common::measurement::Kind;
use common::time::Timestamp;
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::Store;
use support::{pass_stage, sample, TestCoordinator, SPEC};

type Stats = BTreeMap<(String, String), (i64, f64, f64, f64, i64, i64, f64)>;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

/// series_stats as stored.
fn stored(db: &Connection) -> Stats {
    db.prepare("SELECT kind, key, n, lo, hi, total, first_ms, last_ms, last_value FROM series_stats ORDER BY kind, key")
        .unwrap()
        .query_map([], |r| {
            Ok((
                (r.get(0)?, r.get(1)?),
                (r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?),
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// The same, computed from the measurements rows.
fn from_rows(db: &Connection) -> Stats {
    let mut out = Stats::new();
    let mut rows = db
        .prepare("SELECT kind, key, ts, value FROM measurements ORDER BY id")
        .unwrap();
    let rows = rows
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, f64>(3)?,
            ))
        })
        .unwrap();
    for row in rows {
        let (kind, key, ts, v) = row.unwrap();
        let ms = ts.parse::<Timestamp>().unwrap().unix_millis();
        let e = out.entry((kind, key)).or_insert((0, v, v, 0.0, ms, ms, v));
        e.0 += 1;
        e.1 = e.1.min(v);
        e.2 = e.2.max(v);
        e.3 += v;
        e.4 = e.4.min(ms);
        if ms >= e.5 {
            e.5 = ms;
            e.6 = v;
        }
    }
    out
}

fn assert_same(a: &Stats, b: &Stats) {
    assert_eq!(a.len(), b.len(), "{a:#?}\n{b:#?}");
    for ((k, x), (_, y)) in a.iter().zip(b) {
        assert!(
            x.0 == y.0
                && x.1 == y.1
                && x.2 == y.2
                && close(x.3, y.3)
                && x.4 == y.4
                && x.5 == y.5
                && x.6 == y.6,
            "{k:?}: {x:?} vs {y:?}"
        );
    }
}

fn table(db: &Connection, sql: &str) -> Vec<(String, i64, i64)> {
    db.prepare(sql)
        .unwrap()
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

#[tokio::test]
async fn summaries_match_their_rows_and_the_migration_backfill() {
    // Every evaluation gets a row, so the counts can be checked against them.
    let coord =
        TestCoordinator::start_with(|c| c.evaluations = coordinator::store::Evaluations::All).await;
    coord
        .add_host("node-s", "52:54:00:00:0d:01", Some(SPEC))
        .await;
    let run = coord.start_run("node-s", serde_json::json!({})).await;
    let mut agent = coord.agent("52:54:00:00:0d:01", "boot-s").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    let t0 = Timestamp::from_unix_millis(1_795_000_000_000);
    let at = |kind, key: &str, v: f64, ms: i64| {
        let mut s = sample(kind, key, v, Some(4));
        s.ts = t0.plus_millis(ms);
        s
    };
    // Batch 2 is earlier in time than batch 1; a key sees the same time twice.
    let b1: Vec<_> = (0..40)
        .map(|i| {
            at(
                Kind::Temp,
                "coretemp/Core 0",
                60.0 + i as f64,
                30_000 + i * 700,
            )
        })
        .chain((0..10).map(|i| {
            at(
                Kind::Fan,
                "nct6775/fan1",
                1500.0 - i as f64,
                30_000 + i * 3000,
            )
        }))
        .collect();
    let b2: Vec<_> = (0..30)
        .map(|i| at(Kind::Temp, "coretemp/Core 0", 20.0 + i as f64, i * 500))
        .chain([
            at(Kind::Temp, "coretemp/Core 1", 91.5, 5_000),
            at(Kind::Temp, "coretemp/Core 1", 50.0, 5_000),
        ])
        .chain([at(Kind::Stress, "cpu/bogo_ops_per_s", 12345.6, 9_000)])
        .collect();
    assert_eq!(agent.send(b1).await.0, 200);
    let seq2 = agent.seq;
    assert_eq!(agent.send(b2.clone()).await.0, 200);
    // The same batch again: acknowledged, nothing added anywhere.
    agent.seq = seq2;
    let (status, ack) = agent.send(b2).await;
    assert_eq!(status, 200);
    assert_eq!(ack["duplicate"], true, "{ack}");

    let db = coord.db();
    let kept = stored(&db);
    assert_eq!(kept.len(), 4);
    assert_same(&kept, &from_rows(&db));
    let core1 = &kept[&("temp".to_string(), "coretemp/Core 1".to_string())];
    assert_eq!(
        core1.6, 50.0,
        "same time: the later insert is the last value"
    );
    let counts = "SELECT CAST(threshold_id AS TEXT), evaluated, breaches FROM threshold_counts ORDER BY threshold_id";
    let kept_counts = table(&db, counts);
    let from_evals = table(
        &db,
        "SELECT CAST(threshold_id AS TEXT), COUNT(*), SUM(passed = 0) FROM threshold_evaluations GROUP BY threshold_id ORDER BY threshold_id",
    );
    assert_eq!(kept_counts, from_evals);
    assert!(
        kept_counts.iter().any(|c| c.2 > 0),
        "the 91.5 °C sample breached: {kept_counts:?}"
    );
    let rollups = "SELECT kind || ' ' || key || ' ' || bucket_ms, n, CAST(lo * 1000 AS INTEGER) FROM series_rollups ORDER BY 1";
    let kept_rollups = table(&db, rollups);
    assert!(
        kept_rollups.iter().all(|r| !r.0.starts_with("stress")),
        "only plotted kinds roll up"
    );
    assert_eq!(
        kept_rollups.iter().map(|r| r.1).sum::<i64>(),
        82,
        "every temp and fan sample once"
    );

    // What run show reports comes from the summaries too.
    let detail = coord.run_detail(run).await;
    assert_eq!(detail["measurements"], 83);
    let judged: i64 = detail["thresholds"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["evaluated"].as_i64().unwrap())
        .sum();
    assert_eq!(judged, kept_counts.iter().map(|c| c.1).sum::<i64>());

    // GET /runs/{id}/series (what `vetctl run watch` reads) answers the
    // summaries: the same figures as the rows give, latest value included.
    let (status, series) = coord.op_get(&format!("/runs/{run}/series")).await;
    assert_eq!(status, 200, "{series}");
    let served: Stats = series
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            let ms = |f: &str| {
                s[f].as_str()
                    .unwrap()
                    .parse::<Timestamp>()
                    .unwrap()
                    .unix_millis()
            };
            let count = s["count"].as_i64().unwrap();
            (
                (
                    s["kind"].as_str().unwrap().to_string(),
                    s["key"].as_str().unwrap().to_string(),
                ),
                (
                    count,
                    s["min"].as_f64().unwrap(),
                    s["max"].as_f64().unwrap(),
                    s["mean"].as_f64().unwrap() * count as f64,
                    ms("first_ts"),
                    ms("last_ts"),
                    s["last"].as_f64().unwrap(),
                ),
            )
        })
        .collect();
    assert_same(&served, &from_rows(&db));
    let unknown = coord.op_get("/runs/999999/series").await;
    assert_eq!(unknown.0, 404, "{}", unknown.1);
    let anonymous = reqwest::get(coord.url(&format!("/runs/{run}/series")))
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    drop(db);

    // Migration 0011 on a database that has rows but no summaries.
    let dir = coord.stop().await;
    let db = Connection::open(dir.path().join("vetting.db")).unwrap();
    db.execute_batch(
        "DELETE FROM series_stats; DELETE FROM series_rollups; DELETE FROM threshold_counts;",
    )
    .unwrap();
    let migration = include_str!("../src/store/migrations/0011_series_summaries.sql");
    for stmt in migration.split(';').map(str::trim) {
        let sql: String = stmt
            .lines()
            .filter(|l| !l.trim_start().starts_with("--"))
            .collect::<Vec<_>>()
            .join("\n");
        if sql.trim_start().starts_with("INSERT") {
            db.execute_batch(&sql).unwrap();
        }
    }
    assert_same(&stored(&db), &kept);
    assert_eq!(table(&db, counts), kept_counts);
    assert_eq!(table(&db, rollups), kept_rollups);
}

#[tokio::test]
async fn a_long_run_is_plotted_from_rollups_that_keep_its_peak() {
    let coord = TestCoordinator::start().await;
    coord.add_host("node-l", "52:54:00:00:0d:02", None).await;
    let run = coord.start_run("node-l", serde_json::json!({})).await;
    let mut agent = coord.agent("52:54:00:00:0d:02", "boot-l").await;
    for ordinal in 0..4 {
        pass_stage(&agent, ordinal).await;
    }
    agent.start_stage(4).await;
    let t0 = Timestamp::from_unix_millis(1_795_000_000_000);
    // 2 sensors × 110,000 samples at 1 Hz (> RAW_POINTS_MAX), one 99.9 °C spike.
    let n = 110_000i64;
    for chunk in 0..(n / 5000) {
        let samples = (chunk * 5000..(chunk + 1) * 5000)
            .flat_map(|i| {
                let v = if i == 77_777 {
                    99.9
                } else {
                    50.0 + (i % 600) as f64 / 100.0
                };
                ["coretemp/Core 0", "coretemp/Core 1"].map(|key| {
                    let mut s = sample(
                        Kind::Temp,
                        key,
                        if key.ends_with('1') { 45.0 } else { v },
                        Some(4),
                    );
                    s.ts = t0.plus_millis(i * 1000);
                    s
                })
            })
            .collect();
        assert_eq!(agent.send(samples).await.0, 200);
    }
    let store = SqliteStore::open(&coord.db_path(), Timestamp::from_unix_millis(0)).unwrap();
    let inputs = store.report_inputs(run, true).unwrap();
    let core0 = inputs
        .plots
        .iter()
        .find(|p| p.key == "coretemp/Core 0")
        .unwrap();
    // series_rollups buckets are 10 s wide.
    let buckets = (n * 1000 / 10_000) as usize;
    assert!(
        core0.points.len() <= 2 * buckets + 2,
        "{} points",
        core0.points.len()
    );
    assert!(
        core0.points.len() < n as usize / 4,
        "rollups, not raw points"
    );
    let peak = core0.points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    assert_eq!(peak, 99.9, "the spike survives the rollup");
    let flat = inputs
        .plots
        .iter()
        .find(|p| p.key == "coretemp/Core 1")
        .unwrap();
    assert_eq!(flat.points.len(), buckets, "a flat bucket is one point");
    let stats = inputs
        .stats
        .iter()
        .find(|s| s.key == "coretemp/Core 0")
        .unwrap();
    assert_eq!((stats.count, stats.max), (n, 99.9));
    // The page plots it.
    let html = coordinator::report::writer::render_html(&store, run).unwrap();
    assert!(String::from_utf8(html).unwrap().contains("coretemp/Core 0"));
    coord.stop().await;
}
