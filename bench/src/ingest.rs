//! `vet-bench ingest`: how fast measurements get into the store.
//!
//! (a) bare SQLite: the rows the coordinator writes for the same samples
//!     (measurements, evaluation rows, summaries, the batch ledger row) in
//!     batches of 500, same schema, indices and durability: the limit.
//! (b) the real `vet-coordinator` binary over HTTP on loopback, unpaced,
//!     N concurrent simulated agents, batches of 500, thresholds present.
//! (c) a fleet: 1000 simulated agents, each one batch of 200 samples per second.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures_util::{stream, StreamExt};
use serde_json::{json, Value};

use common::profile::Profile;
use common::stage::Stage;
use common::time::Timestamp;
use common::wire::{RunCreate, StageFinish, StageOutcome};
use coordinator::store::sqlite::SqliteStore;
use coordinator::store::{ClaimAttempt, Evaluations, NewHost, Store};

use crate::daemon::{client, post, start_daemon_bin, Daemon};

/// The simulated fleet claims from one address (this machine), which a
/// real fleet does not: the per-address claim limit is lifted for it.
const ONE_ADDRESS_FLEET: &[(&str, &str)] = &[
    ("VET_CLAIM_RATE", "1000000"),
    ("VET_CLAIM_BURST", "1000000"),
];

pub(crate) const SPEC: &str = "thresholds:\n  - {stage: CPUStress, kind: temp, key: \"coretemp/*\", op: lt, threshold: 90, unit: C, severity: critical}\n";

pub(crate) fn sample_json(i: usize, base_ms: i64) -> Value {
    let ts = Timestamp::from_unix_millis(base_ms + i as i64);
    json!({"ts": ts.to_string(), "kind": "temp", "key": format!("coretemp/Core {}", i % 32), "value": 40.0 + (i % 40) as f64, "unit": "C", "stage": 4})
}

/// A store with `runs` hosts, each with one claimed run whose CPUStress
/// stage runs; their run ids.
pub(crate) fn prepared_store(path: &Path, runs: usize) -> anyhow::Result<(SqliteStore, Vec<i64>)> {
    let now = Timestamp::from_datetime(chrono::Utc::now());
    let store = SqliteStore::open(path, now)?;
    let mut ids = Vec::with_capacity(runs);
    for i in 0..runs {
        let mac = format!("52:54:be:{:02x}:{:02x}:01", i >> 8 & 0xff, i & 0xff);
        let name = format!("bench-{i}");
        store.create_host(
            &NewHost {
                name: name.clone(),
                mac: mac.parse()?,
                wol: None,
                expected_spec_yaml: SPEC.into(),
                notes: String::new(),
            },
            now,
        )?;
        let run = coordinator::lifecycle::create_run(
            &store,
            &RunCreate {
                host: name,
                profile: Profile::Quick,
                non_destructive: true,
                overrides: Default::default(),
                require_all_disks: false,
            },
            now,
        )?;
        let attempt = ClaimAttempt::new(vec![mac.parse()?], "b", "", "bench");
        store.claim(&attempt, now)?;
        for o in 0..4 {
            store.start_stage(run.id, o, now, now)?;
            let finish = StageFinish::of(StageOutcome::Passed);
            store.finish_stage(run.id, o, &finish, None, now)?;
        }
        store.start_stage(run.id, Stage::CpuStress.ordinal(), now, now)?;
        ids.push(run.id);
    }
    Ok((store, ids))
}

/// (a): the rows the coordinator writes for the same batches — each
/// sample's measurement, the evaluation rows `evaluations` keeps (none in
/// breach-only mode: every sample here passes), the batch's summary upserts
/// (`series_stats`, `series_rollups`, `threshold_counts`) and its ledger
/// row — one transaction per batch, with the coordinator's durability
/// (`synchronous=FULL`, WAL).
pub(crate) fn bare_sqlite(
    samples: usize,
    shape: Shape,
    evaluations: Evaluations,
) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("vetting.db");
    let (store, runs) = prepared_store(&path, shape.runs)?;
    drop(store);
    let mut db = rusqlite::Connection::open(&path)?;
    db.pragma_update(None, "journal_mode", "WAL")?;
    db.pragma_update(None, "synchronous", "FULL")?;
    db.pragma_update(None, "foreign_keys", "ON")?;
    // Per run: its CPUStress stage and the rules a temp sample of it matches
    // (the same as the coordinator's).
    let mut per_run = Vec::with_capacity(runs.len());
    for &run_id in &runs {
        let stage_id: i64 = db.query_row(
            "SELECT id FROM stages WHERE run_id = ?1 AND ordinal = 4",
            [run_id],
            |r| r.get(0),
        )?;
        let rule_ids: Vec<i64> = db
            .prepare("SELECT id FROM thresholds WHERE run_id = ?1 AND kind = 'temp' AND stage_name IN ('*', 'CPUStress')")?
            .query_map([run_id], |r| r.get(0))?
            .collect::<Result<_, _>>()?;
        per_run.push((run_id, stage_id, rule_ids, 0i64));
    }
    let base = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let all: Vec<usize> = (0..samples).collect();
    let batches: Vec<&[usize]> = all.chunks(shape.batch).collect();
    let per_tx = shape.per_tx.max(1);
    for (t, group) in batches.chunks(per_tx).enumerate() {
        let tx = db.transaction()?;
        for (j, &chunk) in group.iter().enumerate() {
            let (run_id, stage_id, rule_ids, seq) = &mut per_run[(t * per_tx + j) % runs.len()];
            *seq += 1;
            let mut m = tx.prepare_cached("INSERT INTO measurements (run_id, stage_id, ts, kind, key, value, unit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")?;
            let mut e = tx.prepare_cached(
                "INSERT INTO threshold_evaluations (run_id, threshold_id, stage_name, kind, key, ts, observed, passed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut stats: HashMap<String, SeriesStat> = HashMap::new();
            let mut rollups: HashMap<(String, i64), (i64, f64, f64, f64)> = HashMap::new();
            for &i in chunk {
                let ms = base + i as i64;
                let ts = Timestamp::from_unix_millis(ms).to_string();
                let key = format!("coretemp/Core {}", i % 32);
                let value = 40.0 + (i % 40) as f64;
                m.execute((*run_id, *stage_id, &ts, "temp", &key, value, "C"))?;
                if evaluations == Evaluations::All {
                    for id in rule_ids.iter() {
                        e.execute((*run_id, id, "CPUStress", "temp", &key, &ts, value, true))?;
                    }
                }
                let s = stats
                    .entry(key.clone())
                    .or_insert((0, value, value, 0.0, ms, ms, value));
                *s = (
                    s.0 + 1,
                    s.1.min(value),
                    s.2.max(value),
                    s.3 + value,
                    s.4.min(ms),
                    ms,
                    value,
                );
                let r = rollups
                    .entry((key, ms / 10_000 * 10_000))
                    .or_insert((0, value, value, 0.0));
                *r = (r.0 + 1, r.1.min(value), r.2.max(value), r.3 + value);
            }
            let mut stat = tx.prepare_cached(
                "INSERT INTO series_stats (run_id, kind, key, unit, n, lo, hi, total, first_ms, last_ms, last_value)
                 VALUES (?1, 'temp', ?2, 'C', ?3, ?4, ?5, ?6, ?7, ?8, ?9)
                 ON CONFLICT (run_id, kind, key) DO UPDATE SET n = n + excluded.n,
                   lo = min(lo, excluded.lo), hi = max(hi, excluded.hi), total = total + excluded.total,
                   first_ms = min(first_ms, excluded.first_ms), last_value = excluded.last_value,
                   last_ms = max(last_ms, excluded.last_ms)",
            )?;
            for (key, s) in &stats {
                stat.execute((*run_id, key, s.0, s.1, s.2, s.3, s.4, s.5, s.6))?;
            }
            let mut roll = tx.prepare_cached(
                "INSERT INTO series_rollups (run_id, kind, key, bucket_ms, n, lo, hi, total)
                 VALUES (?1, 'temp', ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (run_id, kind, key, bucket_ms) DO UPDATE SET n = n + excluded.n,
                   lo = min(lo, excluded.lo), hi = max(hi, excluded.hi), total = total + excluded.total",
            )?;
            for ((key, bucket), r) in &rollups {
                roll.execute((*run_id, key, bucket, r.0, r.1, r.2, r.3))?;
            }
            let mut counts = tx.prepare_cached(
                "INSERT INTO threshold_counts (threshold_id, evaluated, breaches) VALUES (?1, ?2, 0)
                 ON CONFLICT (threshold_id) DO UPDATE SET evaluated = evaluated + excluded.evaluated",
            )?;
            for id in rule_ids.iter() {
                counts.execute((id, chunk.len() as i64))?;
            }
            tx.execute("INSERT INTO batches (run_id, seq, sample_count, received_at) VALUES (?1, ?2, ?3, ?4)", (*run_id, *seq, chunk.len() as i64, base.to_string()))?;
        }
        tx.commit()?;
    }
    Ok(samples as f64 / start.elapsed().as_secs_f64())
}

/// How bare SQLite's batches are laid out: (b)'s one run with batches of
/// 500, or the fleet's runs taking turns with batches of 200.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    pub(crate) runs: usize,
    pub(crate) batch: usize,
    /// Batches per transaction: 1 as (a) is defined; more shows what one
    /// commit per group could reach at best.
    pub(crate) per_tx: usize,
}

/// A series' summary in one batch: (n, lo, hi, total, first ms, last ms, last value).
type SeriesStat = (i64, f64, f64, f64, i64, i64, f64);

/// Which coordinator binary a scenario runs, and its settings.
pub(crate) struct Setup {
    pub(crate) binary: std::path::PathBuf,
    pub(crate) evaluations: Evaluations,
}

impl Setup {
    async fn start(&self, http: &reqwest::Client) -> anyhow::Result<Daemon> {
        let evaluations = match self.evaluations {
            Evaluations::Breaches => "breaches",
            Evaluations::All => "all",
        };
        let mut env = ONE_ADDRESS_FLEET.to_vec();
        env.push(("VET_EVALUATIONS", evaluations));
        start_daemon_bin(http, &self.binary, &env).await
    }
}

/// Registers `n` hosts, starts and claims their runs, and brings each to a
/// running CPUStress stage. Returns (run id, run token) per agent.
pub(crate) async fn agents(
    http: &reqwest::Client,
    d: &Daemon,
    n: usize,
) -> anyhow::Result<Vec<(i64, String)>> {
    let out = stream::iter(0..n)
        .map(|i| async move {
            let mac = format!(
                "52:54:{:02x}:{:02x}:{:02x}:01",
                i >> 16 & 0xff,
                i >> 8 & 0xff,
                i & 0xff
            );
            let name = format!("bench-{i}");
            let api = format!("{}/api/v1", d.base);
            post(
                http,
                format!("{api}/hosts"),
                &d.token,
                json!({"name": name, "mac": mac, "expected_spec_yaml": SPEC}),
            )
            .await?;
            post(
                http,
                format!("{api}/runs"),
                &d.token,
                json!({"host": name, "non_destructive": true}),
            )
            .await?;
            let claim = post(
                http,
                format!("{api}/claim"),
                "",
                json!({"macs": [mac], "boot_id": "b"}),
            )
            .await?;
            let run = claim["run_id"].as_i64().context("run_id")?;
            let token = claim["token"].as_str().context("token")?.to_string();
            for o in 0..4 {
                let stage = format!("{api}/runs/{run}/stages/{o}");
                post(http, format!("{stage}/start"), &token, json!({})).await?;
                if o == 0 {
                    // SpecValidate needs an inventory; this one has nothing to diff.
                    let url = format!("{api}/runs/{run}/artifacts?kind=inventory&stage=0");
                    let r = http.post(url).bearer_auth(&token).body("{}").send().await?;
                    anyhow::ensure!(r.status().is_success(), "inventory upload: {}", r.status());
                }
                let v = post(
                    http,
                    format!("{stage}/finish"),
                    &token,
                    json!({"outcome": "passed"}),
                )
                .await?;
                anyhow::ensure!(v["state"] == "passed", "stage {o} of run {run}: {v}");
            }
            post(
                http,
                format!("{api}/runs/{run}/stages/4/start"),
                &token,
                json!({}),
            )
            .await?;
            anyhow::Ok((run, token))
        })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    out.into_iter().collect()
}

pub(crate) struct Rate {
    pub(crate) rate: f64,
    pub(crate) offered: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
}

pub(crate) fn percentiles(mut lat: Vec<Duration>) -> (f64, f64, f64) {
    lat.sort();
    let at = |q: f64| {
        lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
            .map(|d| d.as_secs_f64() * 1e3)
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.99), at(1.0))
}

pub(crate) async fn http_unpaced(setup: &Setup, n: usize, samples: usize) -> anyhow::Result<Rate> {
    let http = client(n)?;
    let d = setup.start(&http).await?;
    let runs = agents(&http, &d, n).await?;
    let per_agent = samples / n / 500;
    let base = chrono::Utc::now().timestamp_millis();
    let start = Instant::now();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|(run, token)| {
            let http = http.clone();
            let url = format!("{}/api/v1/runs/{run}/batches", d.base);
            tokio::spawn(async move {
                let mut lat = Vec::with_capacity(per_agent);
                for seq in 1..=per_agent {
                    let body = json!({"seq": seq, "samples": (0..500).map(|i| sample_json(seq * 500 + i, base)).collect::<Vec<_>>()});
                    let t = Instant::now();
                    post(&http, url.clone(), &token, body).await?;
                    lat.push(t.elapsed());
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let sent = (per_agent * 500 * n) as f64;
    let (p50, p99, max) = percentiles(lat);
    Ok(Rate {
        rate: sent / elapsed,
        offered: f64::NAN,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}

pub(crate) async fn fleet(setup: &Setup, n: usize, secs: u64) -> anyhow::Result<Rate> {
    let http = client(n)?;
    let d = Arc::new(setup.start(&http).await?);
    let runs = agents(&http, &d, n).await?;
    let base = chrono::Utc::now().timestamp_millis();
    let start = tokio::time::Instant::now() + Duration::from_millis(500);
    let tasks: Vec<_> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (run, token))| {
            let http = http.clone();
            let url = format!("{}/api/v1/runs/{run}/batches", d.base);
            tokio::spawn(async move {
                // Spread the agents over the second, as real ones are.
                let phase = Duration::from_micros((i as u64 * 1_000_000 / n as u64) % 1_000_000);
                let mut tick = tokio::time::interval_at(start + phase, Duration::from_secs(1));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
                let mut lat = Vec::new();
                let mut acked = 0usize;
                for seq in 1..=secs as usize {
                    tick.tick().await;
                    let body = json!({"seq": seq, "samples": (0..200).map(|j| sample_json(seq * 200 + j, base)).collect::<Vec<_>>()});
                    let t = Instant::now();
                    post(&http, url.clone(), &token, body).await?;
                    lat.push(t.elapsed());
                    acked += 200;
                }
                anyhow::Ok((lat, acked))
            })
        })
        .collect();
    let mut lat = Vec::new();
    let mut acked = 0usize;
    for t in tasks {
        let (l, a) = t.await??;
        lat.extend(l);
        acked += a;
    }
    let elapsed = (tokio::time::Instant::now() - start).as_secs_f64();
    let (p50, p99, max) = percentiles(lat);
    Ok(Rate {
        rate: acked as f64 / elapsed,
        offered: (n * 200) as f64,
        p50_ms: p50,
        p99_ms: p99,
        max_ms: max,
    })
}
