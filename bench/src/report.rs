//! `vet-bench report`: a 24 h, many-sensor soak written through the real
//! ingest, then report.json, report.html and the series poll timed.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{json, Value};

use common::time::Timestamp;

use crate::daemon::{get, post, start_daemon, Daemon};
use crate::ingest::agents;

/// Sensor `i` of `n` as a server reports it: temperatures, fans, power and
/// PSU voltages in the proportions of a 2-socket board.
pub(crate) fn sensor(i: usize, n: usize) -> (&'static str, String, &'static str, f64) {
    let temps = n * 48 / 100;
    let fans = n * 24 / 100;
    let powers = n * 8 / 100;
    if i < temps {
        ("temp", format!("coretemp/Core {i}"), "C", 55.0)
    } else if i < temps + fans {
        (
            "fan",
            format!("nct6775/fan{}", i - temps + 1),
            "rpm",
            9000.0,
        )
    } else if i < temps + fans + powers {
        (
            "power",
            format!("rapl/package-{}", i - temps - fans),
            "W",
            180.0,
        )
    } else {
        (
            "psu_volt",
            format!("nct6775/in{}", i - temps - fans - powers),
            "V",
            12.0,
        )
    }
}

/// A soak-like value: a slow daily swing, load steps, noise, and on the
/// first temperature a short excursion over the 90 °C threshold.
pub(crate) fn soak_value(sensor_i: usize, base: f64, step: usize, steps: usize) -> f64 {
    let phase = step as f64 / steps as f64 * std::f64::consts::TAU;
    let noise = ((step * 7919 + sensor_i * 104729) % 1000) as f64 / 1000.0 - 0.5;
    let load = if (step / (steps / 24).max(1)).is_multiple_of(3) {
        1.0
    } else {
        0.0
    };
    let v = base * (1.0 + 0.08 * phase.sin() + 0.05 * load + 0.01 * noise);
    if sensor_i == 0 && step.abs_diff(steps / 2) < 3 {
        95.0
    } else {
        v
    }
}

pub(crate) async fn report_bench(samples: usize, sensors: usize, hours: u64) -> anyhow::Result<()> {
    anyhow::ensure!(sensors >= 10, "--sensors must be at least 10");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(600))
        .build()?;
    let d = start_daemon(&http).await?;
    let (run, token) = agents(&http, &d, 1).await?.pop().context("no bench run")?;
    let api = format!("{}/api/v1", d.base);
    let steps = samples / sensors;
    let spacing_ms = (hours * 3_600_000) as f64 / steps as f64;
    let t0 = Timestamp::from_unix_millis(1_795_000_000_000);
    println!(
        "run {run}: {} samples = {sensors} sensors × {steps} over {hours} h (one per {:.0} ms per sensor)",
        steps * sensors,
        spacing_ms
    );
    let soak = Soak {
        api: &api,
        run,
        token: &token,
    };
    soak.ingest(&http, sensors, steps, spacing_ms, t0).await?;
    soak.time_reads(&http, &d.token).await?;
    let db = soak.held_to_stored(&http, &d).await?;
    soak.page_everything(&http, &d.token).await?;
    println!(
        "database: {:.2} GB",
        std::fs::metadata(&db)?.len() as f64 / 1e9
    );
    Ok(())
}

/// The soak's run: where its API is and the run token its samples go with.
struct Soak<'a> {
    api: &'a str,
    run: i64,
    token: &'a str,
}

impl Soak<'_> {
    /// Writes the soak's samples through `POST /batches`, heartbeating
    /// beside them as a real agent does.
    async fn ingest(
        &self,
        http: &reqwest::Client,
        sensors: usize,
        steps: usize,
        spacing_ms: f64,
        t0: Timestamp,
    ) -> anyhow::Result<()> {
        let Soak { api, run, token } = *self;
        let per_batch = 5000usize;
        let started = Instant::now();
        let mut seq = 1u64;
        let mut last_beat = Instant::now();
        let mut batch = Vec::with_capacity(per_batch);
        let total = steps * sensors;
        for n in 0..total {
            let (step, i) = (n / sensors, n % sensors);
            let (kind, key, unit, base) = sensor(i, sensors);
            let ts = t0.plus_millis((step as f64 * spacing_ms) as i64 + i as i64);
            batch.push(
                json!({"ts": ts.to_string(), "kind": kind, "key": key, "unit": unit,
                          "value": soak_value(i, base, step, steps), "stage": 4}),
            );
            if batch.len() == per_batch || n + 1 == total {
                let body = json!({"seq": seq, "samples": std::mem::take(&mut batch)});
                post(http, format!("{api}/runs/{run}/batches"), token, body).await?;
                seq += 1;
                // A real agent heartbeats beside its batches; without it the
                // silent-agent sweep aborts the run.
                if last_beat.elapsed() > Duration::from_secs(15) {
                    post(
                        http,
                        format!("{api}/runs/{run}/heartbeat"),
                        token,
                        json!({}),
                    )
                    .await?;
                    last_beat = Instant::now();
                }
                if seq.is_multiple_of(200) {
                    let done = n + 1;
                    eprintln!(
                        "  ingested {done} ({:.0}/s)",
                        done as f64 / started.elapsed().as_secs_f64()
                    );
                }
            }
        }
        let ingest = started.elapsed();
        println!(
            "ingest: {total} samples in {:.1} s ({:.0} samples/s through POST /batches)",
            ingest.as_secs_f64(),
            total as f64 / ingest.as_secs_f64()
        );

        Ok(())
    }

    /// report.json, report.html, and `vetctl run watch`'s poll for the
    /// latest sensor values (the series summaries), each timed three times.
    async fn time_reads(&self, http: &reqwest::Client, operator: &str) -> anyhow::Result<()> {
        let Soak { api, run, .. } = *self;
        let timings = |what: &'static str| {
            let http = http.clone();
            let url = format!("{api}/runs/{run}/{what}");
            let token = operator.to_string();
            async move {
                let mut times = Vec::new();
                let mut size = 0;
                for _ in 0..3 {
                    let t = Instant::now();
                    let r = http.get(&url).bearer_auth(&token).send().await?;
                    anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
                    size = r.bytes().await?.len();
                    times.push(t.elapsed());
                }
                times.sort();
                anyhow::Ok((times[1], times[0], times[2], size))
            }
        };
        // report.json, report.html, and `vetctl run watch`'s poll for the
        // latest sensor values (the series summaries).
        for what in ["report", "report.html", "series"] {
            let (med, lo, hi, size) = timings(what).await?;
            println!(
                "GET /runs/{run}/{what}: median {:.1} ms (min {:.1}, max {:.1}) over 3, {:.1} kB",
                med.as_secs_f64() * 1e3,
                lo.as_secs_f64() * 1e3,
                hi.as_secs_f64() * 1e3,
                size as f64 / 1000.0
            );
        }
        Ok(())
    }

    /// Fails the stage on the excursion's breach and times how long the
    /// report writer takes to store both files; returns the database path.
    async fn held_to_stored(&self, http: &reqwest::Client, d: &Daemon) -> anyhow::Result<PathBuf> {
        let Soak { api, run, token } = *self;
        // The stage ends with the excursion as a critical breach: the run is
        // held, and the report writer renders and stores both files.
        let before = get(http, d, &format!("/runs/{run}")).await?;
        anyhow::ensure!(
            before["state"] == "Running",
            "the run should still be running: {}",
            before["state"]
        );
        let t = Instant::now();
        let v = post(
            http,
            format!("{api}/runs/{run}/stages/4/finish"),
            token,
            json!({"outcome": "passed"}),
        )
        .await?;
        anyhow::ensure!(
            v["state"] == "failed",
            "the breach should fail CPUStress: {v}"
        );
        let report_path = loop {
            let r = get(http, d, &format!("/runs/{run}")).await?;
            if let (Some(p), "FailedHolding") =
                (r["report_path"].as_str(), r["state"].as_str().unwrap_or(""))
            {
                break p.to_string();
            }
            anyhow::ensure!(
                t.elapsed() < Duration::from_secs(300),
                "no stored report after 300 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let json_len = std::fs::metadata(&report_path)?.len();
        let db = d._dir.path().join("vetting.db");
        let html_len: Option<i64> = rusqlite::Connection::open(&db)?
        .query_row(
            "SELECT size_bytes FROM artifacts WHERE run_id = ?1 AND kind = 'report_html' ORDER BY id DESC LIMIT 1",
            [run],
            |r| r.get(0),
        )
        .ok();
        println!(
        "held → stored report.json ({:.1} kB){}: {:.2} s after the stage finished (the writer looks every 1 s)",
        json_len as f64 / 1000.0,
        html_len
            .map(|l| format!(" and report.html ({:.1} kB)", l as f64 / 1000.0))
            .unwrap_or_default(),
        t.elapsed().as_secs_f64()
    );
        Ok(db)
    }

    /// What a watcher paid before the series route: paging every stored
    /// sample to learn the latest values.
    async fn page_everything(&self, http: &reqwest::Client, operator: &str) -> anyhow::Result<()> {
        let Soak { api, run, .. } = *self;
        // What a watcher paid before the series route: paging every stored
        // sample to learn the latest values. Done now the run is held, so the
        // silent-agent sweep cannot end it meanwhile.
        let t = Instant::now();
        let (mut after, mut pages, mut rows, mut bytes) = (0i64, 0usize, 0usize, 0usize);
        loop {
            let url = format!("{api}/runs/{run}/measurements?after={after}&limit=10000");
            let r = http.get(&url).bearer_auth(operator).send().await?;
            anyhow::ensure!(r.status().is_success(), "{url}: {}", r.status());
            let body = r.bytes().await?;
            bytes += body.len();
            let page: Vec<Value> = serde_json::from_slice(&body)?;
            pages += 1;
            rows += page.len();
            match page.last().and_then(|m| m["id"].as_i64()) {
                Some(id) if page.len() == 10_000 => after = id,
                _ => break,
            }
        }
        println!(
        "paging GET /runs/{run}/measurements through every sample (watch's first poll before the series route): {:.1} s, {pages} requests, {rows} rows, {:.1} MB",
        t.elapsed().as_secs_f64(),
        bytes as f64 / 1e6
    );

        Ok(())
    }
}
