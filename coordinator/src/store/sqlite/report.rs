//! What a run report reads (one read transaction) and where it is recorded.

use std::collections::BTreeMap;

use rusqlite::Connection;

use common::measurement::Kind;
use common::run_state::RunState;
use common::time::Timestamp;

use super::{artifacts, hosts, runs, summaries, ts_col};
use crate::store::{Breach, NewArtifact, PassResult, ReportInputs, StoreResult, BREACHES_SHOWN};

pub fn inputs(tx: &Connection, run_id: i64, plots: bool) -> StoreResult<ReportInputs> {
    let detail = runs::detail(tx, run_id)?;
    let host = hosts::by_name(tx, &detail.run.host)?;
    let firmware = artifacts::firmware(tx, run_id)?;
    let breach_total: i64 = tx.query_row(
        "SELECT count(*) FROM threshold_evaluations WHERE run_id = ?1 AND passed = 0",
        [run_id],
        |r| r.get(0),
    )?;
    let breaches = tx
        .prepare(
            "SELECT e.stage_name, e.kind, e.key, e.ts, e.observed, t.op, t.threshold, t.unit, t.severity
             FROM threshold_evaluations e JOIN thresholds t ON t.id = e.threshold_id
             WHERE e.run_id = ?1 AND e.passed = 0 ORDER BY e.id LIMIT ?2",
        )?
        .query_map((run_id, BREACHES_SHOWN as i64), |r| {
            Ok(Breach {
                stage: r.get("stage_name")?,
                kind: r.get("kind")?,
                key: r.get("key")?,
                ts: ts_col(r, "ts")?,
                observed: r.get("observed")?,
                op: r.get("op")?,
                threshold: r.get("threshold")?,
                unit: r.get("unit")?,
                severity: r.get("severity")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let stats = summaries::stats(tx, run_id)?;
    let pass_results = pass_results(tx, run_id)?;
    Ok(ReportInputs {
        detail,
        host,
        firmware,
        breaches,
        breach_total,
        stats,
        pass_results,
        plots: if plots {
            summaries::plot_series(tx, run_id)?
        } else {
            Vec::new()
        },
    })
}

/// The fio and iperf pass results with the stage that measured each, the
/// latest per stage and key, in stage order. The interval series are read
/// past (a pass reports at most 600 times), not returned.
fn pass_results(tx: &Connection, run_id: i64) -> StoreResult<Vec<PassResult>> {
    let mut latest: BTreeMap<(i64, String, String), PassResult> = BTreeMap::new();
    let mut stmt = tx.prepare(
        "SELECT s.ordinal, s.name, m.kind, m.key, m.value, m.unit
         FROM measurements m LEFT JOIN stages s ON s.id = m.stage_id
         WHERE m.run_id = ?1 AND m.kind IN ('fio', 'iperf') AND m.value IS NOT NULL
         ORDER BY m.ts, m.id",
    )?;
    let mut rows = stmt.query([run_id])?;
    while let Some(r) = rows.next()? {
        let kind: String = r.get(2)?;
        let key: String = r.get(3)?;
        let is_interval = kind.parse::<Kind>().is_ok_and(|k| k.is_interval_key(&key));
        if is_interval {
            continue;
        }
        let ordinal: Option<i64> = r.get(0)?;
        let result = PassResult {
            stage: r.get(1)?,
            kind: kind.clone(),
            key: key.clone(),
            value: r.get(4)?,
            unit: r.get::<_, Option<String>>(5)?.unwrap_or_default(),
        };
        latest.insert((ordinal.unwrap_or(i64::MAX), kind, key), result);
    }
    Ok(latest.into_values().collect())
}

/// Runs held or ended whose stored report was rendered at another state
/// (or never).
pub fn due(tx: &Connection) -> StoreResult<Vec<i64>> {
    Ok(tx
        .prepare(
            "SELECT id FROM runs
             WHERE state IN ('FailedHolding', 'Passed', 'Failed', 'Aborted', 'Cancelled')
               AND (report_state IS NULL OR report_state != state)
             ORDER BY id",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<Vec<i64>, _>>()?)
}

/// Records the rendered report files (report.json first: it becomes
/// `report_path`) and the state they show.
pub fn record(
    tx: &Connection,
    artifacts: &[NewArtifact],
    rendered_at: RunState,
    now: Timestamp,
) -> StoreResult<()> {
    for a in artifacts {
        artifacts::record_artifact(tx, a, now)?;
    }
    if let Some(json) = artifacts.first() {
        tx.execute(
            "UPDATE runs SET report_path = ?1, report_state = ?2 WHERE id = ?3",
            (&json.path, rendered_at.as_str(), json.run_id),
        )?;
    }
    Ok(())
}
