//! `vet-bench ingest`: runs (a), (b) and (c) in one go and prints the
//! table; with `--json` the table goes to stderr and stdout carries one
//! JSON object (DESIGN's shape) alone.
//! With `--before BIN`, (b) and (c) also run against another coordinator
//! build (an older commit's) in the same run, for before/after figures.

use std::path::PathBuf;

use serde_json::json;

use coordinator::store::Evaluations;

use crate::daemon::coordinator_binary;
use crate::ingest::{bare_sqlite, fleet, http_unpaced, Rate, Setup, Shape};

pub(crate) struct Opts {
    pub(crate) samples: usize,
    pub(crate) fleet_secs: u64,
    pub(crate) fleet_agents: usize,
    pub(crate) store: String,
    pub(crate) evaluations: Evaluations,
    pub(crate) json: bool,
    pub(crate) before: Option<PathBuf>,
}

/// A line of the table: on stdout, or on stderr when stdout carries the
/// JSON object alone.
fn say(json: bool, line: String) {
    if json {
        eprintln!("{line}");
    } else {
        println!("{line}");
    }
}

/// Writes back what earlier scenarios left dirty in the page cache, so
/// their writeback does not slow the next one down.
fn settle() {
    let _ = std::process::Command::new("sync").status();
}

/// Puts `part` at the top of `out` for this build, under "before" for the other.
fn merge(out: &mut serde_json::Value, label: &str, part: serde_json::Value) {
    let target = if label == "now" {
        &mut *out
    } else {
        &mut out["before"]
    };
    if target.is_null() {
        *target = json!({});
    }
    for (k, v) in part.as_object().into_iter().flatten() {
        target[k] = v.clone();
    }
}

fn fleet_json(r: &Rate, agents: usize) -> serde_json::Value {
    json!({
        "agents": agents,
        "samples_per_agent_s": 200,
        "offered_per_s": r.offered.round(),
        "acked_per_s": r.rate.round(),
        "p50_ms": (r.p50_ms * 10.0).round() / 10.0,
        "p99_ms": (r.p99_ms * 10.0).round() / 10.0,
        "max_ms": (r.max_ms * 10.0).round() / 10.0,
    })
}

pub(crate) fn run(o: Opts) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.store == "sqlite",
        "--store {}: only sqlite is built so far (PostgreSQL comes with the scale-out store)",
        o.store
    );
    let rt = tokio::runtime::Runtime::new()?;
    let mut builds = vec![("now", coordinator_binary()?)];
    if let Some(b) = &o.before {
        builds.push(("before", b.clone()));
    }
    let setups: Vec<(&str, Setup)> = builds
        .into_iter()
        .map(|(label, binary)| {
            let evaluations = o.evaluations;
            (
                label,
                Setup {
                    binary,
                    evaluations,
                },
            )
        })
        .collect();
    // (a), then (b) right after it: the same rows, the same amount.
    settle();
    let a = bare_sqlite(
        o.samples,
        Shape {
            runs: 1,
            batch: 500,
            per_tx: 1,
        },
        o.evaluations,
    )?;
    say(o.json, format!(
        "(a) bare SQLite            {a:>10.0} samples/s  ({} samples, one run, batches of 500, synchronous=FULL)",
        o.samples
    ));
    let mut out = json!({"bare_samples_per_s": a.round(), "store": o.store});
    for (label, setup) in &setups {
        let mut headline = None;
        for agents in [10usize, 100] {
            settle();
            let r = rt.block_on(http_unpaced(setup, agents, o.samples))?;
            say(o.json, format!(
                "(b) {label:<6} N={agents:<4}      {:>10.0} samples/s  ratio to (a) {:>5.1} %  batch latency p50 {:>7.1} ms  p99 {:>7.1} ms",
                r.rate,
                100.0 * r.rate / a,
                r.p50_ms,
                r.p99_ms
            ));
            headline.get_or_insert(r.rate);
        }
        let http = headline.unwrap_or(f64::NAN);
        let part = json!({
            "http_samples_per_s": http.round(),
            "http_vs_bare": ((http / a) * 1000.0).round() / 1000.0,
        });
        merge(&mut out, label, part);
    }
    // The fleet's shape: its runs take turns, 200-sample batches, five
    // seconds' worth of what the fleet offers; one transaction per batch,
    // then as many batches per transaction as there are agents (the best
    // one commit per group can do).
    let fleet_shape = Shape {
        runs: o.fleet_agents,
        batch: 200,
        per_tx: 1,
    };
    for (shape, name, key) in [
        (
            fleet_shape,
            "one transaction each",
            "bare_fleet_shape_samples_per_s",
        ),
        (
            Shape {
                per_tx: o.fleet_agents,
                ..fleet_shape
            },
            "a transaction per round of all runs",
            "bare_fleet_shape_grouped_samples_per_s",
        ),
    ] {
        settle();
        let r = bare_sqlite(o.fleet_agents * 200 * 5, shape, o.evaluations)?;
        say(o.json, format!(
            "(a) bare SQLite, fleet shape {r:>8.0} samples/s  ({} runs taking turns, batches of 200, {name})",
            o.fleet_agents
        ));
        out[key] = json!(r.round());
    }
    for (label, setup) in &setups {
        settle();
        let c = rt.block_on(fleet(setup, o.fleet_agents, o.fleet_secs))?;
        say(o.json, format!(
            "(c) {label:<6} fleet {} agents × 200 samples/s for {} s: offered {:.0} samples/s, acknowledged {:.0} samples/s ({:.1} %), batch latency p50 {:.1} ms p99 {:.1} ms, max {:.1} ms",
            o.fleet_agents,
            o.fleet_secs,
            c.offered,
            c.rate,
            100.0 * c.rate / c.offered,
            c.p50_ms,
            c.p99_ms,
            c.max_ms
        ));
        merge(
            &mut out,
            label,
            json!({"fleet": fleet_json(&c, o.fleet_agents)}),
        );
    }
    if o.json {
        println!("{out}");
    }
    Ok(())
}
