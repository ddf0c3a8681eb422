//! Stage start and finish: the rows, the facts the gate judges a finished
//! stage by (its critical breaches and spec diffs), and applying what the
//! gate decided in the same transaction.
//!
//! Never: judge a stage here; `gate::decide_stage` does.

use rusqlite::{Connection, OptionalExtension};

use crate::store::NewEvent;
use common::event::EventKind;
use common::run_state::{RunEvent, RunState};
use common::stage::{Stage, StageState};
use common::threshold::Op;
use common::time::Timestamp;
use common::wire::{StageFinish, StageOutcome};

use super::runs::{apply_transition, facts, open_state_of};
use super::{insert_event, parse_col};
use crate::gate::{self, Breach, StageDecision, StageFacts, SubStepDecision};
use crate::store::{ComputedDiffs, RunFacts, StageResult, StoreError, StoreResult};

pub(super) fn stage_row(
    tx: &Connection,
    run_id: i64,
    ordinal: u32,
) -> StoreResult<(i64, String, StageState)> {
    tx.prepare_cached("SELECT id, name, state FROM stages WHERE run_id = ?1 AND ordinal = ?2")?
        .query_row((run_id, ordinal), |r| {
            Ok((r.get(0)?, r.get(1)?, parse_col(r, "state")?))
        })
        .optional()?
        .ok_or_else(|| StoreError::NotFound(format!("run {run_id} has no stage {ordinal}")))
}

pub fn start_stage(
    tx: &Connection,
    run_id: i64,
    ordinal: u32,
    at: Timestamp,
    now: Timestamp,
) -> StoreResult<RunFacts> {
    let (state, _) = open_state_of(tx, run_id)?;
    if state != RunState::Running {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {state}; no stage can start"
        )));
    }
    let (_, name, st) = stage_row(tx, run_id, ordinal)?;
    match st {
        StageState::Running => return facts(tx, run_id),
        StageState::Pending => {}
        other => {
            return Err(StoreError::Conflict(format!(
                "stage {name} is {other}; it cannot start again"
            )))
        }
    }
    let blocking: Option<(String, String)> = tx
        .query_row(
            "SELECT name, state FROM stages WHERE run_id = ?1 AND ordinal < ?2 AND state NOT IN ('passed', 'skipped') ORDER BY ordinal LIMIT 1",
            (run_id, ordinal),
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if let Some((before, before_state)) = blocking {
        return Err(StoreError::Conflict(format!(
            "stage {name} cannot start: stage {before} is {before_state}"
        )));
    }
    tx.execute(
        "UPDATE stages SET state = 'running', started_at = ?1 WHERE run_id = ?2 AND ordinal = ?3",
        (at.to_string(), run_id, ordinal),
    )?;
    tx.execute(
        "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2",
        (now.to_string(), run_id),
    )?;
    facts(tx, run_id)
}

fn critical_breaches(tx: &Connection, run_id: i64, stage_name: &str) -> StoreResult<Vec<Breach>> {
    let mut stmt = tx.prepare_cached(
        "SELECT t.kind, e.key, t.op, t.threshold, t.nominal, MIN(e.observed), MAX(e.observed), COUNT(*)
         FROM threshold_evaluations e JOIN thresholds t ON t.id = e.threshold_id
         WHERE e.run_id = ?1 AND e.passed = 0 AND e.stage_name = ?2 AND t.severity = 'critical'
         GROUP BY t.id, e.key ORDER BY MIN(e.id)",
    )?;
    let rows = stmt
        .query_map((run_id, stage_name), |r| {
            let op: Op = r.get::<_, String>(2)?.parse().map_err(|e: String| {
                rusqlite::Error::FromSqlConversionFailure(2, rusqlite::types::Type::Text, e.into())
            })?;
            let (nominal, min, max): (f64, f64, f64) = (r.get(4)?, r.get(5)?, r.get(6)?);
            Ok(Breach {
                kind: r.get(0)?,
                key: r.get(1)?,
                op: op.as_str().to_string(),
                threshold: r.get(3)?,
                worst: gate::worst(op, nominal, min, max),
                count: r.get(7)?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn run_ignores(tx: &Connection, run_id: i64) -> StoreResult<Vec<String>> {
    let flags: Option<String> = tx.query_row(
        "SELECT override_flags_json FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    Ok(flags
        .and_then(|f| serde_json::from_str::<serde_json::Value>(&f).ok())
        .and_then(|v| v.get("ignore_diffs").cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default())
}

fn insert_diffs(tx: &Connection, run_id: i64, diffs: &ComputedDiffs) -> StoreResult<()> {
    let ignores = run_ignores(tx, run_id)?;
    let mut exists = tx.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM spec_diffs WHERE run_id = ?1 AND field = ?2 AND expected IS ?3 AND actual IS ?4)",
    )?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO spec_diffs (run_id, field, expected, actual, severity, ignored) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for d in &diffs.0 {
        let dup: bool =
            exists.query_row((run_id, &d.field, &d.expected, &d.actual), |r| r.get(0))?;
        if !dup {
            let ignored = d.ignored || ignores.contains(&d.field);
            insert.execute((
                run_id,
                &d.field,
                &d.expected,
                &d.actual,
                d.severity.as_str(),
                ignored,
            ))?;
        }
    }
    Ok(())
}

fn critical_diffs(tx: &Connection, run_id: i64, stage: Stage) -> StoreResult<Vec<String>> {
    let filter = match stage {
        Stage::SpecValidate => "field NOT LIKE 'firmware.%'",
        Stage::Firmware => "field LIKE 'firmware.%'",
        _ => return Ok(Vec::new()),
    };
    let mut stmt = tx.prepare(&format!(
        "SELECT field, expected, actual FROM spec_diffs WHERE run_id = ?1 AND severity = 'critical' AND ignored = 0 AND {filter} ORDER BY id"
    ))?;
    let rows = stmt
        .query_map([run_id], |r| {
            let (f, e, a): (String, Option<String>, Option<String>) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(format!(
                "{f}: expected {}, found {}",
                e.unwrap_or_else(|| "-".into()),
                a.unwrap_or_else(|| "nothing".into())
            ))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn stored_reasons(summary: Option<String>) -> Vec<String> {
    summary
        .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
        .and_then(|v| v.get("reasons").cloned())
        .and_then(|v| serde_json::from_value(v).ok())
        .unwrap_or_default()
}

pub fn finish_stage(
    tx: &Connection,
    run_id: i64,
    ordinal: u32,
    report: &StageFinish,
    diffs: Option<ComputedDiffs>,
    now: Timestamp,
) -> StoreResult<StageResult> {
    let (run_state, _) = open_state_of(tx, run_id)?;
    let (stage_id, name, st) = stage_row(tx, run_id, ordinal)?;
    let stage = Stage::from_ordinal(ordinal)
        .ok_or_else(|| StoreError::NotFound(format!("no stage {ordinal}")))?;
    if st != StageState::Running {
        return resent_or_conflict(tx, run_id, ordinal, stage_id, name, st);
    }
    let decision = if run_state == RunState::Running {
        if let Some(d) = &diffs {
            insert_diffs(tx, run_id, d)?;
        }
        let facts = StageFactRows::load(tx, run_id, ordinal, stage, &name, report)?;
        tx.execute(
            "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2",
            (now.to_string(), run_id),
        )?;
        gate::decide_stage(&facts.as_facts(&name, report))
    } else {
        gate::stage_after_run_ended(run_state)
    };
    let finished = Finished {
        run_id,
        stage_id,
        name: &name,
        report,
        completed: report.at.unwrap_or(now),
    };
    apply_decision(tx, &finished, &decision, now)?;
    Ok(StageResult {
        ordinal,
        name,
        state: decision.state,
        reasons: decision.reasons,
        facts: facts(tx, run_id)?,
    })
}

/// A report for a stage that is not running: a resend of one already
/// decided gets that decision again; anything else is a conflict.
fn resent_or_conflict(
    tx: &Connection,
    run_id: i64,
    ordinal: u32,
    stage_id: i64,
    name: String,
    st: StageState,
) -> StoreResult<StageResult> {
    if !matches!(
        st,
        StageState::Passed | StageState::Failed | StageState::Skipped
    ) {
        return Err(StoreError::Conflict(format!(
            "stage {name} is {st}, not running; start it first"
        )));
    }
    let summary: Option<String> = tx.query_row(
        "SELECT summary_json FROM stages WHERE id = ?1",
        [stage_id],
        |r| r.get(0),
    )?;
    Ok(StageResult {
        ordinal,
        name,
        state: st,
        reasons: stored_reasons(summary),
        facts: facts(tx, run_id)?,
    })
}

/// Writes the agent's sub-steps, each the gate decided in its decided state
/// with the gate's reason beside what the agent found.
fn upsert_sub_steps(
    tx: &Connection,
    run_id: i64,
    name: &str,
    report: &StageFinish,
    decided: &[SubStepDecision],
) -> StoreResult<()> {
    let mut upsert = tx.prepare_cached(
        "INSERT INTO sub_steps (run_id, stage_name, ordinal, name, state, started_at, completed_at, summary_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (run_id, stage_name, ordinal) DO UPDATE SET name = excluded.name, state = excluded.state,
           started_at = excluded.started_at, completed_at = excluded.completed_at, summary_json = excluded.summary_json",
    )?;
    for s in &report.sub_steps {
        let mut summary = s.summary.clone().unwrap_or_else(|| serde_json::json!({}));
        let mut state = s.state;
        if let Some(d) = decided.iter().find(|d| d.ordinal == s.ordinal) {
            state = d.state;
            if let Some(m) = summary.as_object_mut() {
                m.insert("reason".into(), serde_json::json!(d.reason));
            }
        }
        upsert.execute((
            run_id,
            name,
            s.ordinal,
            &s.name,
            state.as_str(),
            s.started_at.map(|t| t.to_string()),
            s.completed_at.map(|t| t.to_string()),
            summary.to_string(),
        ))?;
    }
    Ok(())
}

/// What the store knows about a finished stage, read for the gate.
struct StageFactRows {
    breaches: Vec<Breach>,
    diffs: Vec<String>,
    later_pending: bool,
    untested: Vec<String>,
    require_all_disks: bool,
    refused_before: i64,
    incomplete: Vec<String>,
}

impl StageFactRows {
    fn load(
        tx: &Connection,
        run_id: i64,
        ordinal: u32,
        stage: Stage,
        name: &str,
        report: &StageFinish,
    ) -> StoreResult<Self> {
        let later_pending: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM stages WHERE run_id = ?1 AND ordinal > ?2 AND state IN ('pending', 'running'))",
            (run_id, ordinal),
            |r| r.get(0),
        )?;
        let require_all_disks: bool = tx.query_row(
            "SELECT require_all_disks FROM runs WHERE id = ?1",
            [run_id],
            |r| r.get(0),
        )?;
        // Only the run's verdict says how many passes were refused: counted
        // for the last stage, not for every one.
        let refused_before: i64 = if later_pending {
            0
        } else {
            tx.query_row(
                "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = ?2",
                (run_id, EventKind::InterlockRefused.as_str()),
                |r| r.get(0),
            )?
        };
        let incomplete = if later_pending {
            Vec::new()
        } else {
            let mut why = incomplete_reasons(tx, run_id)?;
            if report.outcome == StageOutcome::Skipped && !report.absent {
                why.push(skip_reason(name, report.reason.as_deref()));
            }
            why
        };
        Ok(StageFactRows {
            incomplete,
            breaches: critical_breaches(tx, run_id, name)?,
            diffs: critical_diffs(tx, run_id, stage)?,
            later_pending,
            untested: report
                .sub_steps
                .iter()
                .filter_map(|s| s.interlock_refusal().map(str::to_string))
                .collect(),
            require_all_disks,
            refused_before,
        })
    }

    fn as_facts<'a>(&'a self, name: &'a str, report: &'a StageFinish) -> StageFacts<'a> {
        StageFacts {
            stage: name,
            agent: report.outcome,
            agent_reason: report.reason.as_deref(),
            critical_breaches: &self.breaches,
            critical_diffs: &self.diffs,
            is_last: !self.later_pending,
            sub_steps: &report.sub_steps,
            untested: &self.untested,
            require_all_disks: self.require_all_disks,
            refused_before: self.refused_before,
            incomplete: &self.incomplete,
        }
    }
}

/// Why a run whose stages all pass was still not fully tested, apart from
/// refused disks: stages skipped with something there to test (every disk
/// unreadable, no iperf3 server), and measurements the coordinator lost
/// after acknowledging them (`data_lost`).
fn incomplete_reasons(tx: &Connection, run_id: i64) -> StoreResult<Vec<String>> {
    let mut why = Vec::new();
    let mut stmt = tx.prepare_cached(
        "SELECT name, summary_json FROM stages WHERE run_id = ?1 AND state = 'skipped' ORDER BY ordinal",
    )?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    for row in rows {
        let (name, summary) = row?;
        let summary: serde_json::Value = summary
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default();
        if summary["absent"].as_bool() != Some(true) {
            why.push(skip_reason(&name, summary["reason"].as_str()));
        }
    }
    let lost: i64 = tx.query_row(
        "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = ?2",
        (run_id, EventKind::DataLost.as_str()),
        |r| r.get(0),
    )?;
    if lost > 0 {
        why.push(
            "the coordinator lost measurements it had acknowledged (see data_lost events)".into(),
        );
    }
    Ok(why)
}

fn skip_reason(stage: &str, reason: Option<&str>) -> String {
    format!("{stage} skipped: {}", reason.unwrap_or("no reason given"))
}

/// The stage a decision is applied to.
struct Finished<'a> {
    run_id: i64,
    stage_id: i64,
    name: &'a str,
    report: &'a StageFinish,
    /// When the agent says the stage ended.
    completed: Timestamp,
}

/// Writes what the gate decided: its events, the stage's state and
/// reasons, and the run's transition.
fn apply_decision(
    tx: &Connection,
    stage: &Finished<'_>,
    decision: &StageDecision,
    now: Timestamp,
) -> StoreResult<()> {
    let Finished {
        run_id,
        stage_id,
        name,
        report,
        completed,
    } = *stage;
    upsert_sub_steps(tx, run_id, name, report, &decision.sub_steps)?;
    for e in &decision.events {
        let event = NewEvent::new(Some(run_id), None, e.level, e.kind, e.message.clone());
        insert_event(tx, &event, now)?;
    }
    let summary = serde_json::json!({"agent": report.summary, "reason": report.reason, "reasons": decision.reasons, "absent": report.absent});
    tx.execute(
        "UPDATE stages SET state = ?1, completed_at = ?2, summary_json = ?3 WHERE id = ?4",
        (
            decision.state.as_str(),
            completed.to_string(),
            summary.to_string(),
            stage_id,
        ),
    )?;
    if let Some(event) = decision.run_event {
        if event == RunEvent::StageFailed {
            tx.execute(
                "UPDATE runs SET failed_stage = ?1 WHERE id = ?2",
                (name, run_id),
            )?;
        }
        apply_transition(tx, run_id, event, now)?;
    }
    Ok(())
}
