//! Prometheus metrics: counters the API updates as it works (samples
//! ingested, batch latency, group commits) and, at scrape time, what the store says (runs
//! by state, held hosts, how long since each host and running agent was
//! heard from). Rendered in the Prometheus text exposition format 0.0.4.
//!
//! Never: hold a lock or touch the store while counting a batch (atomics
//! only), or put a label value into the output unescaped.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::time::Timestamp;

/// Upper bounds of the batch latency histogram, seconds.
pub const LATENCY_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Counters the API updates; one per coordinator process.
#[derive(Debug, Default)]
pub struct Counters {
    samples: AtomicU64,
    batches: AtomicU64,
    /// Per bucket (not cumulative); the last slot is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    latency_micros: AtomicU64,
    /// Group commits: transactions the batches were written in.
    groups: AtomicU64,
}

impl Counters {
    /// Records one accepted batch of `samples` that took `took` to store
    /// and answer.
    pub fn batch(&self, samples: usize, took: Duration) {
        self.samples.fetch_add(samples as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let secs = took.as_secs_f64();
        let slot = LATENCY_BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[slot].fetch_add(1, Ordering::Relaxed);
        self.latency_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }
}

impl Counters {
    /// Records one group commit (one transaction).
    pub fn group(&self) {
        self.groups.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the store knows at scrape time.
pub use crate::store::MetricsSnapshot as Snapshot;

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn age(now: Timestamp, t: Timestamp) -> f64 {
    ((now.unix_millis() - t.unix_millis()).max(0)) as f64 / 1000.0
}

/// The exposition text.
pub fn render(counters: &Counters, snap: &Snapshot, now: Timestamp) -> String {
    let mut o = String::new();
    let states = [
        "Queued",
        "Running",
        "Passed",
        "FailedHolding",
        "Failed",
        "Aborted",
        "Cancelled",
    ];
    o.push_str("# HELP vetting_runs Runs by state.\n# TYPE vetting_runs gauge\n");
    for s in states {
        let n = snap
            .runs_by_state
            .iter()
            .find(|(st, _)| st == s)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(o, "vetting_runs{{state=\"{s}\"}} {n}");
    }
    let held = snap
        .runs_by_state
        .iter()
        .find(|(st, _)| st == "FailedHolding")
        .map_or(0, |(_, n)| *n);
    let _ = writeln!(
        o,
        "# HELP vetting_held_hosts Hosts held powered on for debugging.\n# TYPE vetting_held_hosts gauge\nvetting_held_hosts {held}"
    );
    let _ = writeln!(
        o,
        "# HELP vetting_samples_ingested_total Measurements stored from agent batches.\n# TYPE vetting_samples_ingested_total counter\nvetting_samples_ingested_total {}",
        counters.samples.load(Ordering::Relaxed)
    );
    o.push_str("# HELP vetting_batch_latency_seconds Time to store and answer one measurement batch.\n# TYPE vetting_batch_latency_seconds histogram\n");
    let mut cumulative = 0;
    for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
        cumulative += counters.buckets[i].load(Ordering::Relaxed);
        let _ = writeln!(
            o,
            "vetting_batch_latency_seconds_bucket{{le=\"{b}\"}} {cumulative}"
        );
    }
    cumulative += counters.buckets[LATENCY_BUCKETS.len()].load(Ordering::Relaxed);
    let _ = writeln!(
        o,
        "vetting_batch_latency_seconds_bucket{{le=\"+Inf\"}} {cumulative}"
    );
    let _ = writeln!(
        o,
        "vetting_batch_latency_seconds_sum {}",
        counters.latency_micros.load(Ordering::Relaxed) as f64 / 1e6
    );
    let _ = writeln!(
        o,
        "vetting_batch_latency_seconds_count {}",
        counters.batches.load(Ordering::Relaxed)
    );
    let _ = writeln!(
        o,
        "# HELP vetting_batch_groups_total Transactions the batches were written in (group commit: fewer than batches under load).\n# TYPE vetting_batch_groups_total counter\nvetting_batch_groups_total {}",
        counters.groups.load(Ordering::Relaxed)
    );
    o.push_str("# HELP vetting_host_last_seen_age_seconds Seconds since the host was last heard from.\n# TYPE vetting_host_last_seen_age_seconds gauge\n");
    for (host, seen) in &snap.hosts {
        if let Some(t) = seen {
            let _ = writeln!(
                o,
                "vetting_host_last_seen_age_seconds{{host=\"{}\"}} {}",
                label(host),
                age(now, *t)
            );
        }
    }
    o.push_str("# HELP vetting_agent_last_heartbeat_age_seconds Seconds since a running run's agent last reported.\n# TYPE vetting_agent_last_heartbeat_age_seconds gauge\n");
    for (run, host, beat) in &snap.agents {
        if let Some(t) = beat {
            let _ = writeln!(
                o,
                "vetting_agent_last_heartbeat_age_seconds{{run=\"{run}\",host=\"{}\"}} {}",
                label(host),
                age(now, *t)
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_count_every_batch() {
        let c = Counters::default();
        c.batch(10, Duration::from_micros(800));
        c.batch(5, Duration::from_millis(30));
        c.batch(1, Duration::from_secs(3));
        let text = render(&c, &Snapshot::default(), Timestamp::from_unix_millis(0));
        assert!(
            text.contains("vetting_samples_ingested_total 16\n"),
            "{text}"
        );
        assert!(text.contains("vetting_batch_latency_seconds_bucket{le=\"0.001\"} 1\n"));
        assert!(text.contains("vetting_batch_latency_seconds_bucket{le=\"0.05\"} 2\n"));
        assert!(text.contains("vetting_batch_latency_seconds_bucket{le=\"1\"} 2\n"));
        assert!(text.contains("vetting_batch_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("vetting_batch_latency_seconds_count 3\n"));
        assert!(
            text.contains("vetting_batch_latency_seconds_sum 3.0308\n"),
            "{text}"
        );
    }

    #[test]
    fn label_values_are_escaped() {
        let snap = Snapshot {
            hosts: vec![("a\"b\\c".into(), Some(Timestamp::from_unix_millis(1_000)))],
            ..Snapshot::default()
        };
        let text = render(
            &Counters::default(),
            &snap,
            Timestamp::from_unix_millis(3_500),
        );
        assert!(
            text.contains("vetting_host_last_seen_age_seconds{host=\"a\\\"b\\\\c\"} 2.5\n"),
            "{text}"
        );
    }
}
