//! Per-series summaries (`series_stats`, and `series_rollups` of the plotted
//! kinds in [`BUCKET_MS`] buckets) and per-threshold counts
//! (`threshold_counts`), folded in by every batch insert in its own
//! transaction, so a run page or report reads thousands of rows for a soak
//! of millions of measurements.
//!
//! Never: let a summary disagree with `measurements` (they are written only
//! together, and a resent batch writes neither).

use std::collections::HashMap;

use rusqlite::Connection;

use common::measurement::Kind;
use common::time::Timestamp;

use crate::store::StoreResult;
use crate::store::{PlotSeries, SENSOR_PLOT_KINDS as PLOTTED, THROUGHPUT_PLOT_KINDS as THROUGHPUT};
use common::wire::SeriesStats;

/// Width of one rollup bucket.
pub const BUCKET_MS: i64 = 10_000;
/// Above this many plotted samples a report plots the rollups, not the raw points.
pub const RAW_POINTS_MAX: i64 = 200_000;

fn plotted(kind: Kind) -> bool {
    PLOTTED.contains(&kind.as_str())
}

#[derive(Debug, Clone, Copy)]
struct Stat {
    n: i64,
    lo: f64,
    hi: f64,
    total: f64,
    first_ms: i64,
    last_ms: i64,
    last_value: f64,
}

impl Stat {
    fn new(ms: i64, v: f64) -> Self {
        Stat {
            n: 1,
            lo: v,
            hi: v,
            total: v,
            first_ms: ms,
            last_ms: ms,
            last_value: v,
        }
    }

    fn add(&mut self, ms: i64, v: f64) {
        self.n += 1;
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
        self.total += v;
        self.first_ms = self.first_ms.min(ms);
        // Later in time wins; at the same time, the later insert.
        if ms >= self.last_ms {
            self.last_ms = ms;
            self.last_value = v;
        }
    }
}

/// One batch's summaries, written after its rows.
#[derive(Default)]
pub struct BatchSummary<'a> {
    stats: HashMap<(Kind, &'a str), (Stat, &'a str)>,
    rollups: HashMap<(Kind, &'a str, i64), Stat>,
    /// Per threshold id: (evaluated, breaches).
    judged: HashMap<i64, (i64, i64)>,
}

impl<'a> BatchSummary<'a> {
    pub fn add(&mut self, kind: Kind, key: &'a str, unit: &'a str, ts: Timestamp, value: f64) {
        let ms = ts.unix_millis();
        self.stats
            .entry((kind, key))
            .and_modify(|(s, u)| {
                s.add(ms, value);
                if unit > *u {
                    *u = unit;
                }
            })
            .or_insert((Stat::new(ms, value), unit));
        if plotted(kind) {
            self.rollups
                .entry((kind, key, ms.div_euclid(BUCKET_MS) * BUCKET_MS))
                .and_modify(|s| s.add(ms, value))
                .or_insert(Stat::new(ms, value));
        }
    }

    /// One sample judged by threshold `id`.
    pub fn judged(&mut self, id: i64, passed: bool) {
        let c = self.judged.entry(id).or_default();
        c.0 += 1;
        c.1 += i64::from(!passed);
    }

    pub fn write(&self, tx: &Connection, run_id: i64) -> StoreResult<()> {
        let mut judged = tx.prepare_cached(
            "INSERT INTO threshold_counts (threshold_id, evaluated, breaches) VALUES (?1, ?2, ?3)
             ON CONFLICT (threshold_id) DO UPDATE SET
               evaluated = evaluated + excluded.evaluated, breaches = breaches + excluded.breaches",
        )?;
        for (id, (evaluated, breaches)) in &self.judged {
            judged.execute((id, evaluated, breaches))?;
        }
        let mut stat = tx.prepare_cached(
            "INSERT INTO series_stats (run_id, kind, key, unit, n, lo, hi, total, first_ms, last_ms, last_value)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
             ON CONFLICT (run_id, kind, key) DO UPDATE SET
               unit = max(unit, excluded.unit), n = n + excluded.n,
               lo = min(lo, excluded.lo), hi = max(hi, excluded.hi), total = total + excluded.total,
               first_ms = min(first_ms, excluded.first_ms),
               last_value = CASE WHEN excluded.last_ms >= last_ms THEN excluded.last_value ELSE last_value END,
               last_ms = max(last_ms, excluded.last_ms)",
        )?;
        for ((kind, key), (s, unit)) in &self.stats {
            stat.execute((
                run_id,
                kind.as_str(),
                key,
                unit,
                s.n,
                s.lo,
                s.hi,
                s.total,
                s.first_ms,
                s.last_ms,
                s.last_value,
            ))?;
        }
        let mut roll = tx.prepare_cached(
            "INSERT INTO series_rollups (run_id, kind, key, bucket_ms, n, lo, hi, total)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT (run_id, kind, key, bucket_ms) DO UPDATE SET
               n = n + excluded.n, lo = min(lo, excluded.lo), hi = max(hi, excluded.hi),
               total = total + excluded.total",
        )?;
        for ((kind, key, bucket), s) in &self.rollups {
            roll.execute((run_id, kind.as_str(), key, bucket, s.n, s.lo, s.hi, s.total))?;
        }
        Ok(())
    }
}

/// Statistics of every series of a run, by kind and key.
pub fn stats(tx: &Connection, run_id: i64) -> StoreResult<Vec<SeriesStats>> {
    let rows = tx
        .prepare_cached(
            "SELECT kind, key, unit, n, lo, hi, total, first_ms, last_ms, last_value
             FROM series_stats WHERE run_id = ?1 ORDER BY kind, key",
        )?
        .query_map([run_id], |r| {
            let n: i64 = r.get("n")?;
            Ok(SeriesStats {
                kind: r.get("kind")?,
                key: r.get("key")?,
                unit: r.get("unit")?,
                count: n,
                min: r.get("lo")?,
                max: r.get("hi")?,
                mean: r.get::<_, f64>("total")? / n.max(1) as f64,
                last: r.get("last_value")?,
                first_ts: Timestamp::from_unix_millis(r.get("first_ms")?),
                last_ts: Timestamp::from_unix_millis(r.get("last_ms")?),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Stored measurements of a run.
pub fn count(tx: &Connection, run_id: i64) -> StoreResult<i64> {
    Ok(tx.query_row(
        "SELECT COALESCE(SUM(n), 0) FROM series_stats WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?)
}

/// The plotted series of a run: the sensors' raw points while there are
/// few, otherwise each rollup bucket's minimum and maximum (so peaks
/// survive), by kind in page order and key; then the throughput interval
/// series, always raw (a pass reports at most 600 times).
pub fn plot_series(tx: &Connection, run_id: i64) -> StoreResult<Vec<PlotSeries>> {
    let mut out = sensor_series(tx, run_id)?;
    out.extend(throughput_series(tx, run_id)?);
    Ok(out)
}

fn throughput_series(tx: &Connection, run_id: i64) -> StoreResult<Vec<PlotSeries>> {
    let mut out: Vec<PlotSeries> = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT key, COALESCE(unit, '') AS unit, ts, value FROM measurements
         WHERE run_id = ?1 AND kind = ?2 AND key LIKE '%interval%' AND value IS NOT NULL
         ORDER BY key, ts, id",
    )?;
    for kind in THROUGHPUT {
        let Ok(k) = kind.parse::<Kind>() else {
            continue;
        };
        let mut rows = stmt.query((run_id, kind))?;
        while let Some(r) = rows.next()? {
            let key: String = r.get("key")?;
            if !k.is_interval_key(&key) {
                continue;
            }
            let unit: String = r.get("unit")?;
            let p = (super::ts_col(r, "ts")?, r.get::<_, f64>("value")?);
            push_point(&mut out, kind, key, &unit, p);
        }
    }
    Ok(out)
}

fn sensor_series(tx: &Connection, run_id: i64) -> StoreResult<Vec<PlotSeries>> {
    let kinds: Vec<&str> = PLOTTED.to_vec();
    let plotted: i64 = tx.query_row(
        "SELECT COALESCE(SUM(n), 0) FROM series_stats WHERE run_id = ?1 AND kind IN (?2, ?3, ?4, ?5)",
        (run_id, kinds[0], kinds[1], kinds[2], kinds[3]),
        |r| r.get(0),
    )?;
    if plotted <= RAW_POINTS_MAX {
        raw_series(tx, run_id)
    } else {
        rollup_series(tx, run_id)
    }
}

fn push_point(out: &mut Vec<PlotSeries>, kind: &str, key: String, unit: &str, p: (Timestamp, f64)) {
    match out.last_mut() {
        Some(s) if s.kind == kind && s.key == key => s.points.push(p),
        _ => out.push(PlotSeries {
            kind: kind.to_string(),
            key,
            unit: unit.to_string(),
            points: vec![p],
        }),
    }
}

fn raw_series(tx: &Connection, run_id: i64) -> StoreResult<Vec<PlotSeries>> {
    let mut out: Vec<PlotSeries> = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT key, COALESCE(unit, '') AS unit, ts, value FROM measurements
         WHERE run_id = ?1 AND kind = ?2 AND value IS NOT NULL ORDER BY key, ts, id",
    )?;
    for kind in PLOTTED {
        let mut rows = stmt.query((run_id, kind))?;
        while let Some(r) = rows.next()? {
            let unit: String = r.get("unit")?;
            let p = (super::ts_col(r, "ts")?, r.get::<_, f64>("value")?);
            push_point(&mut out, kind, r.get("key")?, &unit, p);
        }
    }
    Ok(out)
}

fn rollup_series(tx: &Connection, run_id: i64) -> StoreResult<Vec<PlotSeries>> {
    let mut out: Vec<PlotSeries> = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT r.key, s.unit, r.bucket_ms, r.lo, r.hi FROM series_rollups r
         JOIN series_stats s ON s.run_id = r.run_id AND s.kind = r.kind AND s.key = r.key
         WHERE r.run_id = ?1 AND r.kind = ?2 ORDER BY r.key, r.bucket_ms",
    )?;
    for kind in PLOTTED {
        let mut rows = stmt.query((run_id, kind))?;
        while let Some(r) = rows.next()? {
            let key: String = r.get(0)?;
            let unit: String = r.get(1)?;
            let bucket: i64 = r.get(2)?;
            let (lo, hi): (f64, f64) = (r.get(3)?, r.get(4)?);
            let at = |part: i64| Timestamp::from_unix_millis(bucket + BUCKET_MS * part / 3);
            push_point(&mut out, kind, key.clone(), &unit, (at(1), lo));
            if hi != lo {
                push_point(&mut out, kind, key, &unit, (at(2), hi));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_keeps_extremes_sum_and_the_latest_value() {
        let mut s = Stat::new(2_000, 50.0);
        s.add(1_000, 40.0);
        s.add(3_000, 70.0);
        s.add(3_000, 60.0);
        assert_eq!((s.n, s.lo, s.hi, s.total), (4, 40.0, 70.0, 220.0));
        assert_eq!((s.first_ms, s.last_ms, s.last_value), (1_000, 3_000, 60.0));
    }
}
