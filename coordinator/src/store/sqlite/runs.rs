//! Run rows, the transitions that change them, and the operator's view.

use std::sync::LazyLock;

use rusqlite::{Connection, OptionalExtension};

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::measurement::Kind;
use common::run_state::{RunEvent, RunState};
use common::stage::StageState;
use common::threshold::{KeySelector, Rule};
use common::time::Timestamp;
use common::wire::{Event, Power, Run, RunDetail, SpecDiffRow, StageView, SubStep, ThresholdRow};

use super::{insert_event, insert_plain_event, parse_col, parse_opt, ts_col, ts_opt, FrozenRule};
use crate::gate;
use crate::store::{NewRun, RunFacts, StoreError, StoreResult};

const COLUMNS: &str = "r.id, r.host_id, h.name AS host, r.state, r.result, r.failed_stage, r.next_boot_target,
    r.started_at, r.completed_at, r.report_path, r.hold_ip, r.override_flags_json, r.non_destructive, r.profile";

fn row_to_run(r: &rusqlite::Row<'_>) -> rusqlite::Result<Run> {
    Ok(Run {
        id: r.get("id")?,
        host_id: r.get("host_id")?,
        host: r.get("host")?,
        state: parse_col(r, "state")?,
        result: parse_opt(r, "result")?,
        failed_stage: parse_opt(r, "failed_stage")?,
        next_boot_target: r.get("next_boot_target")?,
        started_at: ts_col(r, "started_at")?,
        completed_at: ts_opt(r, "completed_at")?,
        report_path: r.get("report_path")?,
        hold_ip: r.get("hold_ip")?,
        override_flags_json: r.get("override_flags_json")?,
        non_destructive: r.get("non_destructive")?,
        profile: {
            let s: String = r.get("profile")?;
            s.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, e.into())
            })?
        },
    })
}

pub fn create(tx: &Connection, run: &NewRun, now: Timestamp) -> StoreResult<Run> {
    let overrides =
        serde_json::to_string(&run.overrides).map_err(|e| StoreError::Invalid(e.to_string()))?;
    tx.execute(
        "INSERT INTO runs (host_id, state, agent_token_hash, started_at, override_flags_json, non_destructive, profile, require_all_disks)
         VALUES (?1, 'Queued', '', ?2, ?3, ?4, ?5, ?6)",
        (run.host_id, now.to_string(), overrides, run.non_destructive, run.profile.as_str(), run.require_all_disks),
    )?;
    let run_id = tx.last_insert_rowid();
    let mut insert = tx.prepare_cached(
        "INSERT INTO thresholds (run_id, stage_name, kind, key, op, threshold, nominal, unit, severity, source)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?;
    for (rule, source) in &run.thresholds {
        insert.execute((
            run_id,
            rule.stage.as_str(),
            rule.kind.as_str(),
            rule.key.as_str(),
            rule.op.as_str(),
            rule.threshold,
            rule.nominal,
            &rule.unit,
            rule.severity.as_str(),
            source.as_str(),
        ))?;
    }
    insert_plain_event(
        tx,
        Some(run_id),
        run.host_id,
        EventLevel::Info,
        EventKind::Transition,
        format!(
            "run created: Queued ({} profile{}, {} thresholds)",
            run.profile,
            if run.non_destructive {
                ", non-destructive"
            } else {
                ""
            },
            run.thresholds.len()
        ),
        now,
    )?;
    by_id(tx, run_id)
}

pub fn list(tx: &Connection) -> StoreResult<Vec<Run>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs r JOIN hosts h ON h.id = r.host_id ORDER BY r.id"
    ))?;
    let rows = stmt
        .query_map([], row_to_run)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// Newest first: at most `limit` runs with an id below `before`.
pub fn page(tx: &Connection, before: Option<i64>, limit: u32) -> StoreResult<Vec<Run>> {
    let mut stmt = tx.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM runs r JOIN hosts h ON h.id = r.host_id WHERE r.id < ?1 ORDER BY r.id DESC LIMIT ?2"
    ))?;
    let rows = stmt
        .query_map((before.unwrap_or(i64::MAX), limit), row_to_run)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn by_id(tx: &Connection, run_id: i64) -> StoreResult<Run> {
    tx.query_row(
        &format!("SELECT {COLUMNS} FROM runs r JOIN hosts h ON h.id = r.host_id WHERE r.id = ?1"),
        [run_id],
        row_to_run,
    )
    .optional()?
    .ok_or_else(|| StoreError::NotFound(format!("run {run_id} not found")))
}

/// [`state_of`] for an agent's write: a run that has ended is
/// [`StoreError::RunFinished`].
pub fn open_state_of(tx: &Connection, run_id: i64) -> StoreResult<(RunState, i64)> {
    let (state, host_id) = state_of(tx, run_id)?;
    if state.is_terminal() {
        return Err(StoreError::RunFinished { run_id, state });
    }
    Ok((state, host_id))
}

pub fn state_of(tx: &Connection, run_id: i64) -> StoreResult<(RunState, i64)> {
    let row: Option<(String, i64)> = tx
        .query_row(
            "SELECT state, host_id FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (state, host_id) =
        row.ok_or_else(|| StoreError::NotFound(format!("run {run_id} not found")))?;
    let state = state
        .parse()
        .map_err(|e: common::run_state::UnknownRunState| StoreError::Corrupt(e.to_string()))?;
    Ok((state, host_id))
}

/// The gate's live-abort kinds as the JSON array the facts query reads
/// with `json_each`: made once, not on every batch and heartbeat.
static LIVE_ABORT_KINDS: LazyLock<String> = LazyLock::new(|| {
    let kinds: Vec<&str> = gate::LIVE_ABORT_KINDS.iter().map(|k| k.as_str()).collect();
    serde_json::Value::from(kinds).to_string()
});

/// What the gate needs to know about a run to answer its agent.
pub fn facts(tx: &Connection, run_id: i64) -> StoreResult<RunFacts> {
    let (state, hold_public_key, release_power, held_at): (
        String,
        Option<String>,
        Option<String>,
        Option<String>,
    ) = tx
        .query_row(
            "SELECT state, hold_public_key, release_power, held_at FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("run {run_id} not found")))?;
    let state: RunState = state
        .parse()
        .map_err(|e: common::run_state::UnknownRunState| StoreError::Corrupt(e.to_string()))?;
    let running_stage: Option<(u32, String)> = tx
        .prepare_cached("SELECT ordinal, name FROM stages WHERE run_id = ?1 AND state = 'running' ORDER BY ordinal LIMIT 1")?
        .query_row([run_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let live_breach = match &running_stage {
        Some((_, name)) => tx
            .prepare_cached(
                "SELECT e.kind, e.key, e.observed, t.op, t.threshold FROM threshold_evaluations e
                 JOIN thresholds t ON t.id = e.threshold_id
                 WHERE e.run_id = ?1 AND e.passed = 0 AND e.stage_name = ?2 AND t.severity = 'critical'
                   AND e.kind IN (SELECT value FROM json_each(?3))
                 ORDER BY e.id LIMIT 1",
            )?
            .query_row((run_id, name, LIVE_ABORT_KINDS.as_str()), |r| {
                let (kind, key, observed, op, threshold): (String, String, f64, String, f64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                Ok(gate::live_breach_reason(&kind, &key, observed, &op, threshold))
            })
            .optional()?,
        None => None,
    };
    let release_power = match release_power.as_deref() {
        Some("poweroff") => Some(Power::Poweroff),
        Some("reboot") => Some(Power::Reboot),
        Some(_) => Some(Power::None),
        None => None,
    };
    Ok(RunFacts {
        run_id,
        state,
        running_stage,
        live_breach,
        hold_public_key,
        release_power,
        held_at: held_at.and_then(|t| t.parse().ok()),
    })
}

/// Applies `event` to the run: checks the state machine, updates state,
/// result and completed_at, writes a `transition` event. Illegal → Conflict.
pub fn apply_transition(
    tx: &Connection,
    run_id: i64,
    event: RunEvent,
    now: Timestamp,
) -> StoreResult<RunState> {
    let (from, host_id) = state_of(tx, run_id)?;
    let to = from
        .transition(event)
        .map_err(|e| StoreError::Conflict(format!("run {run_id}: {e}")))?;
    let result = gate::run_result(to, event);
    let completed = to.is_terminal().then(|| now.to_string());
    // The hold clock starts when the run fails, whether or not its agent
    // ever comes back for the key (a node that died stays held otherwise).
    if to == RunState::FailedHolding && from != RunState::FailedHolding {
        tx.execute(
            "UPDATE runs SET held_at = ?1 WHERE id = ?2",
            (now.to_string(), run_id),
        )?;
    }
    if to.is_terminal() && !from.is_terminal() {
        // A finished run takes no stage report: the stage it was running
        // ends with it.
        let reasons = gate::stage_after_run_ended(to).reasons;
        tx.execute(
            "UPDATE stages SET state = 'failed', completed_at = ?1, summary_json = ?2 WHERE run_id = ?3 AND state = 'running'",
            (now.to_string(), serde_json::json!({"reasons": reasons}).to_string(), run_id),
        )?;
    }
    tx.execute(
        "UPDATE runs SET state = ?1, result = COALESCE(?2, result), completed_at = COALESCE(?3, completed_at) WHERE id = ?4",
        (to.as_str(), result.map(|r| r.as_str()), completed, run_id),
    )?;
    let message = if from == to {
        format!("{from} ({})", event.as_str())
    } else {
        format!("{from} → {to} ({})", event.as_str())
    };
    insert_event(
        tx,
        &NewEvent {
            run_id: Some(run_id),
            host_id: Some(host_id),
            level: gate::transition_level(to, event),
            kind: EventKind::Transition,
            message,
            data: Some(
                serde_json::json!({"from": from.as_str(), "to": to.as_str(), "event": event.as_str()}),
            ),
        },
        now,
    )?;
    Ok(to)
}

/// Records how a released hold leaves the host (`power`) and why.
pub fn released(
    tx: &Connection,
    run_id: i64,
    host_id: i64,
    power: Power,
    why: gate::GateEvent,
    now: Timestamp,
) -> StoreResult<()> {
    tx.execute(
        "UPDATE runs SET release_power = ?1 WHERE id = ?2",
        (power.as_str(), run_id),
    )?;
    let (level, kind, message) = (why.level, why.kind, why.message);
    insert_plain_event(tx, Some(run_id), host_id, level, kind, message, now)?;
    Ok(())
}

pub fn operator_transition(
    tx: &Connection,
    run_id: i64,
    event: RunEvent,
    power: Option<Power>,
    now: Timestamp,
) -> StoreResult<Run> {
    let running_stage: Option<String> = tx
        .query_row("SELECT name FROM stages WHERE run_id = ?1 AND state = 'running' ORDER BY ordinal LIMIT 1", [run_id], |r| r.get(0))
        .optional()?;
    apply_transition(tx, run_id, event, now)?;
    let (_, host_id) = state_of(tx, run_id)?;
    match event {
        RunEvent::Release => {
            let power = power.unwrap_or_default();
            let event = gate::GateEvent {
                level: EventLevel::Info,
                kind: EventKind::Release,
                message: format!("hold released by operator (power: {})", power.as_str()),
            };
            released(tx, run_id, host_id, power, event, now)?;
        }
        RunEvent::OperatorAbort => {
            if let Some(stage) = running_stage {
                tx.execute(
                    "UPDATE runs SET failed_stage = COALESCE(failed_stage, ?1) WHERE id = ?2",
                    (&stage, run_id),
                )?;
            }
        }
        _ => {}
    }
    by_id(tx, run_id)
}

pub fn ignore_diff(
    tx: &Connection,
    run_id: i64,
    field: &str,
    now: Timestamp,
) -> StoreResult<usize> {
    let (_, host_id) = state_of(tx, run_id)?;
    let n = tx.execute(
        "UPDATE spec_diffs SET ignored = 1 WHERE run_id = ?1 AND field = ?2",
        (run_id, field),
    )?;
    // Remember it for a SpecValidate still to come.
    let flags: Option<String> = tx.query_row(
        "SELECT override_flags_json FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let mut flags: serde_json::Value = flags
        .and_then(|f| serde_json::from_str(&f).ok())
        .unwrap_or_else(|| serde_json::json!({}));
    if let Some(obj) = flags.as_object_mut() {
        let list = obj
            .entry("ignore_diffs")
            .or_insert_with(|| serde_json::json!([]));
        if let Some(arr) = list.as_array_mut() {
            if !arr.iter().any(|v| v == field) {
                arr.push(serde_json::json!(field));
            }
        }
    }
    tx.execute(
        "UPDATE runs SET override_flags_json = ?1 WHERE id = ?2",
        (flags.to_string(), run_id),
    )?;
    insert_event(
        tx,
        &NewEvent::new(
            Some(run_id),
            Some(host_id),
            EventLevel::Info,
            EventKind::IgnoreDiff,
            format!("operator ignores spec diff {field} ({n} existing row(s) marked)"),
        ),
        now,
    )?;
    Ok(n)
}

fn row_to_event(r: &rusqlite::Row<'_>) -> rusqlite::Result<Event> {
    Ok(Event {
        id: r.get("id")?,
        run_id: r.get("run_id")?,
        host_id: r.get("host_id")?,
        ts: ts_col(r, "ts")?,
        level: parse_col(r, "level")?,
        kind: parse_col(r, "kind")?,
        message: r.get("message")?,
        data_json: r.get("data_json")?,
    })
}

pub fn events(tx: &Connection, run_id: i64) -> StoreResult<Vec<Event>> {
    events_page(tx, run_id, 0, u32::MAX)
}

/// Oldest first: at most `limit` events with an id above `after`.
pub fn events_page(
    tx: &Connection,
    run_id: i64,
    after: i64,
    limit: u32,
) -> StoreResult<Vec<Event>> {
    let mut stmt = tx.prepare_cached(
        "SELECT * FROM events WHERE run_id = ?1 AND id > ?2 ORDER BY id LIMIT ?3",
    )?;
    let rows = stmt.query_map((run_id, after, limit), row_to_event)?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}

pub fn detail(tx: &Connection, run_id: i64) -> StoreResult<RunDetail> {
    let run = by_id(tx, run_id)?;
    let mut stmt = tx.prepare_cached("SELECT * FROM stages WHERE run_id = ?1 ORDER BY ordinal")?;
    let mut stages = stmt
        .query_map([run_id], |r| {
            Ok(StageView {
                id: r.get("id")?,
                name: r.get("name")?,
                ordinal: r.get("ordinal")?,
                state: parse_col::<StageState>(r, "state")?,
                started_at: ts_opt(r, "started_at")?,
                completed_at: ts_opt(r, "completed_at")?,
                summary_json: r.get("summary_json")?,
                sub_steps: Vec::new(),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = tx
        .prepare_cached("SELECT * FROM sub_steps WHERE run_id = ?1 ORDER BY stage_name, ordinal")?;
    let subs = stmt
        .query_map([run_id], |r| {
            let stage: String = r.get("stage_name")?;
            Ok((
                stage,
                SubStep {
                    id: r.get("id")?,
                    ordinal: r.get("ordinal")?,
                    name: r.get("name")?,
                    state: parse_col(r, "state")?,
                    started_at: ts_opt(r, "started_at")?,
                    completed_at: ts_opt(r, "completed_at")?,
                    summary_json: r.get("summary_json")?,
                },
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    for (stage_name, sub) in subs {
        if let Some(stage) = stages.iter_mut().find(|s| s.name == stage_name) {
            stage.sub_steps.push(sub);
        }
    }
    let mut stmt = tx.prepare_cached("SELECT * FROM spec_diffs WHERE run_id = ?1 ORDER BY id")?;
    let spec_diffs = stmt
        .query_map([run_id], |r| {
            Ok(SpecDiffRow {
                id: r.get("id")?,
                field: r.get("field")?,
                expected: r.get("expected")?,
                actual: r.get("actual")?,
                severity: r.get("severity")?,
                ignored: r.get("ignored")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut stmt = tx.prepare_cached(
        "SELECT t.*, COALESCE(c.evaluated, 0) AS evaluated, COALESCE(c.breaches, 0) AS breaches
         FROM thresholds t LEFT JOIN threshold_counts c ON c.threshold_id = t.id
         WHERE t.run_id = ?1 ORDER BY t.id",
    )?;
    let thresholds = stmt
        .query_map([run_id], |r| {
            Ok(ThresholdRow {
                id: r.get("id")?,
                stage_name: r.get("stage_name")?,
                kind: r.get("kind")?,
                key: r.get("key")?,
                op: r.get("op")?,
                threshold: r.get("threshold")?,
                nominal: r.get("nominal")?,
                unit: r.get("unit")?,
                severity: r.get("severity")?,
                source: r.get("source")?,
                evaluated: r.get("evaluated")?,
                breaches: r.get("breaches")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let measurements = super::summaries::count(tx, run_id)?;
    Ok(RunDetail {
        run,
        stages,
        events: events(tx, run_id)?,
        spec_diffs,
        thresholds,
        measurements,
    })
}

/// The run's frozen thresholds, rebuilt into rules.
pub fn load_rules(tx: &Connection, run_id: i64) -> StoreResult<Vec<FrozenRule>> {
    let mut stmt = tx.prepare_cached(
        "SELECT id, stage_name, kind, key, op, threshold, nominal, unit, severity FROM thresholds WHERE run_id = ?1 ORDER BY id",
    )?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, f64>(5)?,
                r.get::<_, f64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    rows.into_iter()
        .map(
            |(id, stage, kind, key, op, threshold, nominal, unit, severity)| {
                let corrupt = |e: String| StoreError::Corrupt(format!("threshold {id}: {e}"));
                Ok(FrozenRule {
                    id,
                    rule: Rule {
                        stage: stage.parse().map_err(corrupt)?,
                        kind: kind.parse::<Kind>().map_err(|e| corrupt(e.to_string()))?,
                        key: KeySelector::new(&key).map_err(corrupt)?,
                        op: op.parse().map_err(corrupt)?,
                        threshold,
                        nominal,
                        unit,
                        severity: severity.parse().map_err(corrupt)?,
                    },
                })
            },
        )
        .collect()
}

/// One page of a run's measurements past a cursor, in id order: a range
/// read of `(run_id, id)`. Left to itself the planner takes the seed's
/// `(run_id, kind, ts)` index and sorts every row of the run past the cursor
/// for each page, which makes paging a long soak quadratic.
const PAGE_BY_ID_SQL: &str = "SELECT id, stage_id, ts, kind, key, value, unit
     FROM measurements INDEXED BY idx_measurements_run_id
     WHERE run_id = ?1 AND id > ?3 AND (?2 IS NULL OR kind = ?2) ORDER BY id LIMIT ?4";

/// The same for a kind the run has few samples of: its rows straight from
/// the seed's `(run_id, kind, ts)` index, sorted (a range read of the run
/// would walk every other kind's rows to find them).
const PAGE_OF_RARE_KIND_SQL: &str = "SELECT id, stage_id, ts, kind, key, value, unit
     FROM measurements INDEXED BY idx_measurements_run_kind_ts
     WHERE run_id = ?1 AND kind = ?2 AND id > ?3 ORDER BY id LIMIT ?4";

/// Samples of one kind up to which a page sorts them rather than walk the run.
const RARE_KIND_MAX: i64 = 100_000;

/// Which page query serves `kind` for this run, by its sample count in the
/// summaries.
fn page_sql(tx: &Connection, run_id: i64, kind: Option<&str>) -> StoreResult<&'static str> {
    let Some(kind) = kind else {
        return Ok(PAGE_BY_ID_SQL);
    };
    let n: i64 = tx.query_row(
        "SELECT COALESCE(SUM(n), 0) FROM series_stats WHERE run_id = ?1 AND kind = ?2",
        (run_id, kind),
        |r| r.get(0),
    )?;
    Ok(if n <= RARE_KIND_MAX {
        PAGE_OF_RARE_KIND_SQL
    } else {
        PAGE_BY_ID_SQL
    })
}

pub fn measurements(
    tx: &Connection,
    run_id: i64,
    page: &crate::store::MeasurementPage,
) -> StoreResult<Vec<common::wire::Measurement>> {
    let mut stmt = tx.prepare_cached(page_sql(tx, run_id, page.kind.as_deref())?)?;
    let rows = stmt
        .query_map(
            (run_id, page.kind.as_deref(), page.after, page.limit),
            |r| {
                Ok(common::wire::Measurement {
                    id: r.get("id")?,
                    stage_id: r.get("stage_id")?,
                    ts: ts_col(r, "ts")?,
                    kind: r.get("kind")?,
                    key: r.get("key")?,
                    value: r.get("value")?,
                    unit: r.get("unit")?,
                })
            },
        )?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(db: &Connection, sql: &str) -> Vec<String> {
        db.prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap()
            .query_map((1, "fio", 0, 10), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_measurements_page_is_a_range_read_or_a_sort_of_a_rare_kind_only() {
        let mut db = Connection::open_in_memory().unwrap();
        crate::store::sqlite::migrate(&mut db, Timestamp::from_unix_millis(0)).unwrap();
        assert_eq!(
            plan(&db, PAGE_BY_ID_SQL),
            ["SEARCH measurements USING INDEX idx_measurements_run_id (run_id=? AND id>?)"],
            "no temp B-tree: a page must not sort the run"
        );
        assert_eq!(
            plan(&db, PAGE_OF_RARE_KIND_SQL),
            [
                "SEARCH measurements USING INDEX idx_measurements_run_kind_ts (run_id=? AND kind=?)",
                "USE TEMP B-TREE FOR ORDER BY"
            ]
        );
        // Which one a page takes follows the run's count of that kind.
        let set_count = |kind: &str, n: i64| {
            db.execute(
                "INSERT OR REPLACE INTO series_stats (run_id, kind, key, unit, n, lo, hi, total, first_ms, last_ms, last_value)
                 VALUES (1, ?1, 'k', '', ?2, 0, 0, 0, 0, 0, 0)",
                (kind, n),
            )
            .unwrap();
        };
        db.execute_batch("PRAGMA foreign_keys = OFF;").unwrap();
        set_count("fio", 40);
        set_count("temp", RARE_KIND_MAX + 1);
        assert_eq!(page_sql(&db, 1, None).unwrap(), PAGE_BY_ID_SQL);
        assert_eq!(
            page_sql(&db, 1, Some("fio")).unwrap(),
            PAGE_OF_RARE_KIND_SQL
        );
        assert_eq!(
            page_sql(&db, 1, Some("iperf")).unwrap(),
            PAGE_OF_RARE_KIND_SQL
        );
        assert_eq!(page_sql(&db, 1, Some("temp")).unwrap(), PAGE_BY_ID_SQL);
    }
}
