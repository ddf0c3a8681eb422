//! `vet-bench claims`: does a flood of claims for unknown MACs slow the
//! measurement batches of running agents? Paced agents send batches
//! throughout; the batch latency while nothing else happens is compared
//! with the batch latency while the flood runs, once with the per-address
//! claim limit lifted (every claim reaches the store) and once with the
//! default limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{stream, StreamExt};
use serde_json::json;

use crate::daemon::{client, post, start_daemon_with};
use crate::ingest::{agents, percentiles, sample_json};

/// Batch latencies (ms) measured in one window.
pub(crate) struct Window {
    pub(crate) batches: usize,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
}

pub(crate) struct FloodResult {
    pub(crate) quiet: Window,
    pub(crate) flood: Window,
    pub(crate) flood_secs: f64,
    /// Answers to the flood's claims by status code.
    pub(crate) answers: Vec<(u16, usize)>,
}

/// `n` agents each send a 20-sample batch every 100 ms; after `quiet`
/// seconds, `claims` claims of random unknown MACs are sent `concurrency`
/// at a time. `limit_lifted` raises the claim limit so every claim reaches
/// the store.
pub(crate) async fn flood(
    n: usize,
    claims: usize,
    concurrency: usize,
    quiet: Duration,
    limit_lifted: bool,
) -> anyhow::Result<FloodResult> {
    let http = client(n + concurrency)?;
    let env: &[(&str, &str)] = if limit_lifted {
        &[
            ("VET_CLAIM_RATE", "1000000"),
            ("VET_CLAIM_BURST", "1000000"),
        ]
    } else {
        &[]
    };
    let d = Arc::new(start_daemon_with(&http, env).await?);
    let runs = agents(&http, &d, n).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let base = chrono::Utc::now().timestamp_millis();
    let t0 = Instant::now();
    let senders: Vec<_> = runs
        .into_iter()
        .enumerate()
        .map(|(i, (run, token))| {
            let (http, stop) = (http.clone(), stop.clone());
            let url = format!("{}/api/v1/runs/{run}/batches", d.base);
            tokio::spawn(async move {
                let phase = Duration::from_micros(i as u64 * 100_000 / n as u64);
                let start = tokio::time::Instant::now() + phase;
                let mut tick = tokio::time::interval_at(start, Duration::from_millis(100));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut lat: Vec<(Duration, Duration)> = Vec::new();
                for seq in 1.. {
                    tick.tick().await;
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let body = json!({"seq": seq, "samples": (0..20).map(|j| sample_json(seq * 20 + j, base)).collect::<Vec<_>>()});
                    let sent = t0.elapsed();
                    let t = Instant::now();
                    post(&http, url.clone(), &token, body).await?;
                    lat.push((sent, t.elapsed()));
                }
                anyhow::Ok(lat)
            })
        })
        .collect();
    tokio::time::sleep(quiet).await;
    let flood_from = t0.elapsed();
    let url = format!("{}/api/v1/claim", d.base);
    let answers: Vec<u16> = stream::iter(0..claims)
        .map(|i| {
            let (http, url) = (http.clone(), url.clone());
            async move {
                let mac = format!(
                    "02:cc:{:02x}:{:02x}:{:02x}:{:02x}",
                    i >> 24 & 0xff,
                    i >> 16 & 0xff,
                    i >> 8 & 0xff,
                    i & 0xff
                );
                let r = http
                    .post(url)
                    .json(&json!({"macs": [mac], "boot_id": "flood"}))
                    .send()
                    .await;
                r.map(|r| r.status().as_u16()).unwrap_or(0)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let flood_to = t0.elapsed();
    // Every sender stops at its next tick.
    stop.store(true, Ordering::Relaxed);
    let mut all = Vec::new();
    for s in senders {
        all.extend(s.await??);
    }
    let window = |from: Duration, to: Duration| {
        let lat: Vec<Duration> = all
            .iter()
            .filter(|(sent, _)| *sent >= from && *sent < to)
            .map(|(_, l)| *l)
            .collect();
        let batches = lat.len();
        let (p50, p99, _) = percentiles(lat);
        Window {
            batches,
            p50_ms: p50,
            p99_ms: p99,
        }
    };
    let mut answers_by: std::collections::BTreeMap<u16, usize> = Default::default();
    for a in answers {
        *answers_by.entry(a).or_default() += 1;
    }
    Ok(FloodResult {
        quiet: window(Duration::from_millis(500), flood_from),
        flood: window(flood_from, flood_to),
        flood_secs: (flood_to - flood_from).as_secs_f64(),
        answers: answers_by.into_iter().collect(),
    })
}
