//! One run written both ways — breach-only evaluation rows (the default)
//! and the seed's row per evaluation (`evaluations = "all"`) — answers the
//! same everywhere it is read: `run show`'s detail, report.json, the
//! dashboard's run page and `/metrics`. Both stores take the same calls at
//! the same instants, so every answer must be equal byte for byte; only the
//! `threshold_evaluations` rows differ, by exactly the passes.

use rusqlite::Connection;

use common::measurement::{Finite, Kind, Sample};
use common::profile::Profile;
use common::stage::Stage;
use common::time::Timestamp;
use common::wire::{MeasurementBatch, RunCreate, StageFinish, StageOutcome};
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::{ClaimAttempt, Evaluations, NewHost, Store};
use testkit::SPEC;

const MAC: &str = "52:54:00:00:0e:01";

fn at(t0: Timestamp, ms: i64, kind: Kind, key: &str, value: f64) -> Sample {
    Sample {
        ts: t0.plus_millis(ms),
        kind,
        key: key.into(),
        value: Finite::new(value).unwrap(),
        unit: String::new(),
        stage: Some(Stage::CpuStress.ordinal()),
    }
}

fn passed() -> StageFinish {
    StageFinish::of(StageOutcome::Passed)
}

/// Drives one run through `store`: four stages pass, CPUStress gets three
/// batches (one resent) with a few critical breaches among passes, its
/// report fails the stage, and a late sample arrives after it ended.
fn write_run(store: &SqliteStore, t0: Timestamp) -> i64 {
    let now = |s: i64| t0.plus_millis(s * 1000);
    store
        .create_host(
            &NewHost {
                name: "node-e".into(),
                mac: MAC.parse().unwrap(),
                wol: None,
                expected_spec_yaml: SPEC.into(),
                notes: String::new(),
            },
            now(0),
        )
        .unwrap();
    let run = coordinator::lifecycle::create_run(
        store,
        &RunCreate {
            host: "node-e".into(),
            profile: Profile::Quick,
            non_destructive: true,
            overrides: Default::default(),
            require_all_disks: false,
        },
        now(1),
    )
    .unwrap();
    let attempt = ClaimAttempt::new(vec![MAC.parse().unwrap()], "boot-e", "", "test");
    store.claim(&attempt, now(2)).unwrap();
    for o in 0..4 {
        store
            .start_stage(run.id, o, now(3 + o as i64), now(3 + o as i64))
            .unwrap();
        store
            .finish_stage(run.id, o, &passed(), None, now(4 + o as i64))
            .unwrap();
    }
    let cpu = Stage::CpuStress.ordinal();
    store.start_stage(run.id, cpu, now(10), now(10)).unwrap();
    let batch = |seq: u64, from: i64| MeasurementBatch {
        seq,
        samples: (0..200)
            .map(|i| {
                let ms = (from + i) * 100;
                // Core 3 runs hot now and then: a critical breach of < 90 °C.
                let hot = i % 37 == 3;
                let temp = if hot {
                    93.0 + (i % 5) as f64
                } else {
                    55.0 + (i % 20) as f64
                };
                let core = if hot { 3 } else { i % 8 };
                match i % 4 {
                    3 => at(
                        t0,
                        10_000 + ms,
                        Kind::Power,
                        "rapl/package-0",
                        180.0 + i as f64,
                    ),
                    2 => at(
                        t0,
                        10_000 + ms,
                        Kind::Fan,
                        "nct6775/fan1",
                        1400.0 + i as f64,
                    ),
                    _ => at(
                        t0,
                        10_000 + ms,
                        Kind::Temp,
                        &format!("coretemp/Core {core}"),
                        temp,
                    ),
                }
            })
            .collect(),
    };
    let (b1, b2, b3) = (batch(1, 0), batch(2, 200), batch(3, 400));
    let group = [(run.id, &b1), (run.id, &b2)];
    for answer in store.append_batches(&group, now(60)).unwrap() {
        answer.unwrap();
    }
    // A resend of batch 2 alongside batch 3: acknowledged, nothing added.
    let group = [(run.id, &b2), (run.id, &b3)];
    let answers = store.append_batches(&group, now(61)).unwrap();
    assert!(answers[0].as_ref().unwrap().0.duplicate);
    answers[1].as_ref().unwrap();
    // The agent says passed; the gate fails the stage on its breaches.
    store
        .finish_stage(run.id, cpu, &passed(), None, now(70))
        .unwrap();
    // Stored, not gated: its stage has ended.
    let late = MeasurementBatch {
        seq: 4,
        samples: vec![at(t0, 80_000, Kind::Temp, "coretemp/Core 3", 99.0)],
    };
    store.append_batch(run.id, &late, now(80)).unwrap();
    run.id
}

fn count(db: &Connection, sql: &str) -> i64 {
    db.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_run_reads_the_same_with_breach_rows_only_or_every_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let t0 = Timestamp::from_unix_millis(1_796_000_000_000);
    let open = |name: &str, e: Evaluations| {
        SqliteStore::open(&dir.path().join(name), t0)
            .unwrap()
            .with_evaluations(e)
    };
    let breaches = open("breaches.db", Evaluations::Breaches);
    let all = open("all.db", Evaluations::All);
    let run = write_run(&breaches, t0);
    assert_eq!(write_run(&all, t0), run);

    let detail = |s: &SqliteStore| serde_json::to_value(s.run_detail(run).unwrap()).unwrap();
    let (d, d_all) = (detail(&breaches), detail(&all));
    assert_eq!(d["state"], "FailedHolding", "{d:#}");
    assert_eq!(d["failed_stage"], "CPUStress");
    assert_eq!(d, d_all, "run show");

    let report = |s: &SqliteStore| {
        let inputs = s.report_inputs(run, true).unwrap();
        let report = coordinator::report::build(&inputs);
        let page = coordinator::report::html::render_page(&report, &inputs.plots, "", "");
        (serde_json::to_value(&report).unwrap(), page)
    };
    let ((json, page), (json_all, page_all)) = (report(&breaches), report(&all));
    assert_eq!(json, json_all, "report.json");
    assert!(page == page_all, "the dashboard's run page differs");
    let text = json.to_string();
    assert!(
        text.contains("coretemp/Core 3"),
        "breaches reported: {text}"
    );

    let metrics = |s: &SqliteStore| {
        let snap = s.metrics_snapshot().unwrap();
        coordinator::metrics::render(&Default::default(), &snap, t0.plus_millis(90_000))
    };
    assert_eq!(metrics(&breaches), metrics(&all), "/metrics");

    // Underneath, the rows differ by exactly the passes.
    let db = Connection::open(dir.path().join("breaches.db")).unwrap();
    let db_all = Connection::open(dir.path().join("all.db")).unwrap();
    let judged = "SELECT SUM(evaluated) FROM threshold_counts";
    let breached = "SELECT SUM(breaches) FROM threshold_counts";
    let rows = "SELECT COUNT(*) FROM threshold_evaluations";
    assert_eq!(count(&db, judged), count(&db_all, judged));
    assert_eq!(count(&db, breached), count(&db_all, breached));
    assert!(count(&db, breached) > 0);
    assert_eq!(
        count(&db, rows),
        count(&db, breached),
        "a row per breach only"
    );
    assert_eq!(
        count(&db_all, rows),
        count(&db_all, judged),
        "a row per evaluation"
    );
    assert!(count(&db_all, rows) > 2 * count(&db, rows));
    let breach_rows = |c: &Connection| {
        c.prepare("SELECT threshold_id, key, ts, observed FROM threshold_evaluations WHERE passed = 0 ORDER BY id")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, f64>(3)?))
            })
            .unwrap()
            .map(Result::unwrap)
            .collect::<Vec<_>>()
    };
    assert_eq!(breach_rows(&db), breach_rows(&db_all));
}
