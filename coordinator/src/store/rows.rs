//! Rows the store hands out for reports and `/metrics`: the store's own
//! types, so it needs neither the report nor the metrics module.

use serde::Serialize;

use common::time::Timestamp;

/// At most this many breach samples are listed (all are counted).
pub const BREACHES_SHOWN: usize = 200;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub stage: String,
    pub kind: String,
    pub key: String,
    pub ts: Timestamp,
    pub observed: f64,
    pub op: String,
    pub threshold: f64,
    pub unit: String,
    pub severity: String,
}

/// A fio or iperf pass result as the store reads it: the latest value of
/// one key within one stage.
#[derive(Debug, Clone, PartialEq)]
pub struct PassResult {
    pub stage: Option<String>,
    pub kind: String,
    pub key: String,
    pub value: f64,
    pub unit: String,
}

/// One measured series to plot (raw points, oldest first).
#[derive(Debug, Clone)]
pub struct PlotSeries {
    pub kind: String,
    pub key: String,
    pub unit: String,
    pub points: Vec<(Timestamp, f64)>,
}

/// Sensor kinds plotted over the whole run (and rolled up for long runs),
/// in the report's page order.
pub const SENSOR_PLOT_KINDS: [&str; 4] = ["temp", "power", "fan", "psu_volt"];
/// Throughput kinds whose `…interval…` series are plotted over the time
/// they were measured (always read raw).
pub const THROUGHPUT_PLOT_KINDS: [&str; 2] = ["fio", "iperf"];

/// What the store knows at scrape time (`/metrics`).
#[derive(Debug, Clone, Default)]
pub struct MetricsSnapshot {
    pub runs_by_state: Vec<(String, i64)>,
    /// Every host and when it was last heard from (agent or host mode).
    pub hosts: Vec<(String, Option<Timestamp>)>,
    /// Running runs: id, host, last heartbeat.
    pub agents: Vec<(i64, String, Option<Timestamp>)>,
}
