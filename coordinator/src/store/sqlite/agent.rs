//! What the agent's requests do to the store: claim, stage start and finish,
//! heartbeat, firmware, artifacts, hold, completion, silent-agent expiry.

use rusqlite::{Connection, OptionalExtension};

use common::inventory::FirmwareComponent;
use common::mac::Mac;
use common::profile::Profile;
use common::run_state::{RunEvent, RunState};
use common::stage::{Stage, StageState, DEFAULT_STAGE_ORDER};
use common::time::Timestamp;
use common::wire::{ArtifactInfo, HoldReport, Overrides, Power, StageFinish, StagePlan};

use super::runs::{self, apply_transition, state_of};
use super::{insert_event, parse_col};
use crate::gate::{self, Breach, StageFacts};
use crate::store::{
    ClaimKind, Claimed, ComputedDiffs, NewArtifact, RunFacts, StageResult, StoreError, StoreResult,
};

pub fn facts(tx: &Connection, run_id: i64) -> StoreResult<RunFacts> {
    let (state, hold_public_key, release_power): (String, Option<String>, Option<String>) = tx
        .query_row(
            "SELECT state, hold_public_key, release_power FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
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
                   AND e.kind IN ('temp', 'power')
                 ORDER BY e.id LIMIT 1",
            )?
            .query_row((run_id, name), |r| {
                let (kind, key, observed, op, threshold): (String, String, f64, String, f64) =
                    (r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?);
                Ok(format!("critical {kind} breach: {key} = {observed} (must be {op} {threshold})"))
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
    })
}

/// The initial state of each stage for a run of `profile`.
fn seed_state(
    profile: Profile,
    non_destructive: bool,
    stage: Stage,
) -> (StageState, Option<&'static str>) {
    if !profile.definition().runs(stage) {
        (StageState::Skipped, Some("not in profile"))
    } else if non_destructive && stage.is_destructive() {
        (StageState::Skipped, Some("non-destructive run"))
    } else {
        (StageState::Pending, None)
    }
}

fn stage_plan(tx: &Connection, run_id: i64) -> StoreResult<Vec<StagePlan>> {
    let mut stmt = tx.prepare_cached(
        "SELECT ordinal, name, state FROM stages WHERE run_id = ?1 ORDER BY ordinal",
    )?;
    let rows = stmt
        .query_map([run_id], |r| {
            Ok(StagePlan {
                ordinal: r.get(0)?,
                name: r.get(1)?,
                state: parse_col(r, "state")?,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

pub fn claim(
    tx: &Connection,
    macs: &[Mac],
    boot_id: &str,
    token_hash: &str,
    now: Timestamp,
) -> StoreResult<Option<Claimed>> {
    let mut find = tx.prepare_cached(
        "SELECT r.id, r.state, r.boot_id, r.host_id FROM runs r JOIN hosts h ON h.id = r.host_id
         WHERE h.mac = ?1 AND r.state IN ('Queued', 'Running')
         ORDER BY r.state = 'Running' DESC, r.id ASC LIMIT 1",
    )?;
    let mut found: Option<(i64, String, Option<String>, i64)> = None;
    for mac in macs {
        if let Some(row) = find
            .query_row([mac.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?
        {
            if found
                .as_ref()
                .is_none_or(|f| f.1 != "Running" && row.1 == "Running")
            {
                found = Some(row);
            }
        }
    }
    let Some((run_id, state, prev_boot, host_id)) = found else {
        return Ok(None);
    };
    let kind = if state == "Queued" {
        apply_transition(tx, run_id, RunEvent::Claim, now)?;
        let (profile, non_destructive): (String, bool) = tx.query_row(
            "SELECT profile, non_destructive FROM runs WHERE id = ?1",
            [run_id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let profile: Profile = profile.parse().map_err(StoreError::Corrupt)?;
        let mut insert = tx.prepare_cached("INSERT INTO stages (run_id, name, ordinal, state, summary_json) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for stage in DEFAULT_STAGE_ORDER {
            let (st, why) = seed_state(profile, non_destructive, stage);
            let summary = why.map(|w| {
                serde_json::json!({"reasons": [crate::gate::skipped_reason(w)]}).to_string()
            });
            insert.execute((run_id, stage.name(), stage.ordinal(), st.as_str(), summary))?;
        }
        tx.execute(
            "UPDATE runs SET claimed_at = ?1 WHERE id = ?2",
            (now.to_string(), run_id),
        )?;
        ClaimKind::First
    } else if prev_boot.as_deref() == Some(boot_id) {
        ClaimKind::SameBoot
    } else {
        apply_transition(tx, run_id, RunEvent::Resume, now)?;
        tx.execute("UPDATE stages SET state = 'pending', started_at = NULL WHERE run_id = ?1 AND state = 'running'", [run_id])?;
        ClaimKind::Resumed
    };
    tx.execute(
        "UPDATE runs SET agent_token_hash = ?1, boot_id = ?2, last_heartbeat_at = ?3 WHERE id = ?4",
        (token_hash, boot_id, now.to_string(), run_id),
    )?;
    let stages = stage_plan(tx, run_id)?;
    let resume_from = stages
        .iter()
        .find(|s| !s.state.lets_pipeline_continue())
        .map(|s| s.ordinal)
        .unwrap_or(DEFAULT_STAGE_ORDER.len() as u32);
    let (event_kind, message) = match kind {
        ClaimKind::First => ("claim", format!("claimed by boot {boot_id}")),
        ClaimKind::SameBoot => (
            "claim",
            format!("claimed again by boot {boot_id}; token re-issued"),
        ),
        ClaimKind::Resumed => (
            "resume",
            format!(
                "new boot {boot_id} (was {}); resuming at stage {}",
                prev_boot.unwrap_or_default(),
                Stage::from_ordinal(resume_from)
                    .map(|s| s.name())
                    .unwrap_or("end")
            ),
        ),
    };
    let level = if kind == ClaimKind::Resumed {
        "warn"
    } else {
        "info"
    };
    insert_event(
        tx,
        Some(run_id),
        Some(host_id),
        level,
        event_kind,
        &message,
        None,
        now,
    )?;
    let next_seq: i64 = tx.query_row(
        "SELECT COALESCE(MAX(seq), 0) + 1 FROM batches WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let overrides: Option<String> = tx.query_row(
        "SELECT override_flags_json FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let overrides: Overrides = overrides
        .and_then(|o| serde_json::from_str(&o).ok())
        .unwrap_or_default();
    Ok(Some(Claimed {
        run: runs::by_id(tx, run_id)?,
        kind,
        stages,
        resume_from,
        thresholds: runs::load_rules(tx, run_id)?
            .into_iter()
            .map(|f| f.rule)
            .collect(),
        next_batch_seq: next_seq as u64,
        overrides,
    }))
}

fn stage_row(tx: &Connection, run_id: i64, ordinal: u32) -> StoreResult<(i64, String, StageState)> {
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
    let (state, _) = state_of(tx, run_id)?;
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
            let op: String = r.get(2)?;
            let (nominal, min, max): (f64, f64, f64) = (r.get(4)?, r.get(5)?, r.get(6)?);
            let worst = match op.as_str() {
                "gt" | "gte" => min,
                "within_pct" if (nominal - min).abs() > (max - nominal).abs() => min,
                _ => max,
            };
            Ok(Breach {
                kind: r.get(0)?,
                key: r.get(1)?,
                op,
                threshold: r.get(3)?,
                worst,
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
    let (run_state, _) = state_of(tx, run_id)?;
    let (stage_id, name, st) = stage_row(tx, run_id, ordinal)?;
    let stage = Stage::from_ordinal(ordinal)
        .ok_or_else(|| StoreError::NotFound(format!("no stage {ordinal}")))?;
    if st != StageState::Running {
        if matches!(
            st,
            StageState::Passed | StageState::Failed | StageState::Skipped
        ) {
            // A resent report: answer with what was decided.
            let summary: Option<String> = tx.query_row(
                "SELECT summary_json FROM stages WHERE id = ?1",
                [stage_id],
                |r| r.get(0),
            )?;
            return Ok(StageResult {
                ordinal,
                name,
                state: st,
                reasons: stored_reasons(summary),
                facts: facts(tx, run_id)?,
            });
        }
        return Err(StoreError::Conflict(format!(
            "stage {name} is {st}, not running; start it first"
        )));
    }
    let completed = report.at.unwrap_or(now).to_string();
    let mut upsert = tx.prepare_cached(
        "INSERT INTO sub_steps (run_id, stage_name, ordinal, name, state, started_at, completed_at, summary_json)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (run_id, stage_name, ordinal) DO UPDATE SET name = excluded.name, state = excluded.state,
           started_at = excluded.started_at, completed_at = excluded.completed_at, summary_json = excluded.summary_json",
    )?;
    for s in &report.sub_steps {
        let summary = s
            .summary
            .clone()
            .unwrap_or_else(|| serde_json::json!({}))
            .to_string();
        upsert.execute((
            run_id,
            &name,
            s.ordinal,
            &s.name,
            s.state.as_str(),
            s.started_at.map(|t| t.to_string()),
            s.completed_at.map(|t| t.to_string()),
            summary,
        ))?;
    }
    if run_state != RunState::Running {
        // The run ended under the agent (operator abort): record, do not gate.
        let reasons = vec![format!("run {run_state} while the stage ran")];
        let summary = serde_json::json!({"agent": report.summary, "reason": report.reason, "reasons": reasons});
        tx.execute(
            "UPDATE stages SET state = 'failed', completed_at = ?1, summary_json = ?2 WHERE id = ?3",
            (&completed, summary.to_string(), stage_id),
        )?;
        return Ok(StageResult {
            ordinal,
            name,
            state: StageState::Failed,
            reasons,
            facts: facts(tx, run_id)?,
        });
    }
    if let Some(d) = &diffs {
        insert_diffs(tx, run_id, d)?;
    }
    let breaches = critical_breaches(tx, run_id, &name)?;
    let diffs = critical_diffs(tx, run_id, stage)?;
    let later_pending: bool = tx.query_row(
        "SELECT EXISTS(SELECT 1 FROM stages WHERE run_id = ?1 AND ordinal > ?2 AND state IN ('pending', 'running'))",
        (run_id, ordinal),
        |r| r.get(0),
    )?;
    // Sub-steps the agent's interlock refused: each is an event, and they
    // make the stage incomplete (or failed, with --require-all-disks).
    let untested: Vec<String> = report
        .sub_steps
        .iter()
        .filter_map(|s| s.interlock_refusal().map(str::to_string))
        .collect();
    for b in &breaches {
        insert_event(
            tx,
            Some(run_id),
            None,
            "error",
            "breach",
            &format!(
                "{name}: {} {} = {} breached {} {} ({} sample{})",
                b.kind,
                b.key,
                b.worst,
                b.op,
                b.threshold,
                b.count,
                if b.count == 1 { "" } else { "s" }
            ),
            None,
            now,
        )?;
    }
    for why in &untested {
        insert_event(
            tx,
            Some(run_id),
            None,
            "warn",
            "interlock_refused",
            &format!("{name}: {why}"),
            None,
            now,
        )?;
    }
    let require_all_disks: bool = tx.query_row(
        "SELECT require_all_disks FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let decision = gate::decide_stage(&StageFacts {
        agent: report.outcome,
        agent_reason: report.reason.as_deref(),
        critical_breaches: &breaches,
        critical_diffs: &diffs,
        is_last: !later_pending,
        untested: &untested,
        require_all_disks,
    });
    if decision.run_event == Some(RunEvent::AllStagesPassed) {
        let refused: i64 = tx.query_row(
            "SELECT COUNT(*) FROM events WHERE run_id = ?1 AND kind = 'interlock_refused'",
            [run_id],
            |r| r.get(0),
        )?;
        if refused > 0 {
            insert_event(
                tx,
                Some(run_id),
                None,
                "warn",
                "pass_incomplete",
                &format!("passed, not fully tested: {refused} disk pass(es) refused by the interlock (see interlock_refused events)"),
                None,
                now,
            )?;
        }
    }
    let summary = serde_json::json!({"agent": report.summary, "reason": report.reason, "reasons": decision.reasons});
    tx.execute(
        "UPDATE stages SET state = ?1, completed_at = ?2, summary_json = ?3 WHERE id = ?4",
        (
            decision.state.as_str(),
            &completed,
            summary.to_string(),
            stage_id,
        ),
    )?;
    tx.execute(
        "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2",
        (now.to_string(), run_id),
    )?;
    if let Some(event) = decision.run_event {
        if event == RunEvent::StageFailed {
            tx.execute(
                "UPDATE runs SET failed_stage = ?1 WHERE id = ?2",
                (&name, run_id),
            )?;
        }
        apply_transition(tx, run_id, event, now)?;
    }
    Ok(StageResult {
        ordinal,
        name,
        state: decision.state,
        reasons: decision.reasons,
        facts: facts(tx, run_id)?,
    })
}

pub fn heartbeat(tx: &Connection, run_id: i64, now: Timestamp) -> StoreResult<RunFacts> {
    tx.execute(
        "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2 AND state IN ('Running', 'FailedHolding')",
        (now.to_string(), run_id),
    )?;
    facts(tx, run_id)
}

pub fn record_firmware(
    tx: &Connection,
    run_id: i64,
    components: &[FirmwareComponent],
    _now: Timestamp,
) -> StoreResult<()> {
    let (state, _) = state_of(tx, run_id)?;
    if !state.is_active() {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {state}; firmware is recorded while it runs"
        )));
    }
    let mut insert = tx.prepare_cached(
        "INSERT INTO firmware_snapshots (run_id, component, identifier, version, vendor, raw_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    for c in components {
        insert.execute((
            run_id,
            &c.component,
            &c.identifier,
            &c.version,
            &c.vendor,
            c.raw.to_string(),
        ))?;
    }
    Ok(())
}

pub fn firmware(tx: &Connection, run_id: i64) -> StoreResult<Vec<FirmwareComponent>> {
    let mut stmt = tx.prepare_cached("SELECT component, identifier, version, vendor, raw_json FROM firmware_snapshots WHERE run_id = ?1 ORDER BY id")?;
    let rows = stmt
        .query_map([run_id], |r| {
            let raw: String = r.get(4)?;
            Ok(FirmwareComponent {
                component: r.get(0)?,
                identifier: r.get(1)?,
                version: r.get(2)?,
                vendor: r.get(3)?,
                raw: serde_json::from_str(&raw).unwrap_or(serde_json::Value::Null),
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn row_to_artifact(r: &rusqlite::Row<'_>) -> rusqlite::Result<ArtifactInfo> {
    Ok(ArtifactInfo {
        id: r.get("id")?,
        run_id: r.get("run_id")?,
        stage_id: r.get("stage_id")?,
        kind: r.get("kind")?,
        path: r.get("path")?,
        sha256: r.get("sha256")?,
        blake3: r.get("blake3")?,
        size_bytes: r.get("size_bytes")?,
    })
}

pub fn record_artifact(
    tx: &Connection,
    a: &NewArtifact,
    now: Timestamp,
) -> StoreResult<ArtifactInfo> {
    state_of(tx, a.run_id)?;
    let stage_id: Option<i64> = match a.stage_ordinal {
        Some(o) => Some(stage_row(tx, a.run_id, o)?.0),
        None => None,
    };
    tx.execute(
        "INSERT INTO artifacts (run_id, stage_id, kind, path, sha256, size_bytes, blake3, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        (a.run_id, stage_id, &a.kind, &a.path, &a.sha256, a.size_bytes, &a.blake3, now.to_string()),
    )?;
    let id = tx.last_insert_rowid();
    Ok(tx.query_row(
        "SELECT * FROM artifacts WHERE id = ?1",
        [id],
        row_to_artifact,
    )?)
}

pub fn latest_artifact(
    tx: &Connection,
    run_id: i64,
    kind: &str,
) -> StoreResult<Option<ArtifactInfo>> {
    Ok(tx
        .query_row(
            "SELECT * FROM artifacts WHERE run_id = ?1 AND kind = ?2 ORDER BY id DESC LIMIT 1",
            (run_id, kind),
            row_to_artifact,
        )
        .optional()?)
}

pub fn set_hold_key(
    tx: &Connection,
    run_id: i64,
    public_key: &str,
    key: &NewArtifact,
    now: Timestamp,
) -> StoreResult<RunFacts> {
    let (state, host_id) = state_of(tx, run_id)?;
    if state != RunState::FailedHolding {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {state}; only a held run gets a hold key"
        )));
    }
    let existing: Option<String> = tx.query_row(
        "SELECT hold_public_key FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    if existing.is_none() {
        record_artifact(tx, key, now)?;
        tx.execute(
            "UPDATE runs SET hold_public_key = ?1, held_at = COALESCE(held_at, ?2) WHERE id = ?3",
            (public_key, now.to_string(), run_id),
        )?;
        insert_event(
            tx,
            Some(run_id),
            Some(host_id),
            "warn",
            "hold_started",
            "host held for debugging; hold key issued",
            None,
            now,
        )?;
    }
    facts(tx, run_id)
}

pub fn report_hold_ip(
    tx: &Connection,
    run_id: i64,
    report: &HoldReport,
    now: Timestamp,
) -> StoreResult<RunFacts> {
    let ip = report.hold_ip.as_str();
    let (state, host_id) = state_of(tx, run_id)?;
    if state != RunState::FailedHolding {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {state}; only a held host reports hold_ip"
        )));
    }
    tx.execute(
        "UPDATE runs SET hold_ip = ?1, hold_ssh_port = ?2 WHERE id = ?3",
        (ip, report.ssh_port, run_id),
    )?;
    let (level, message) = match (report.ssh_port, &report.ssh_error) {
        (Some(port), _) => (
            "info",
            format!("held host reachable at {ip}, SSH port {port}"),
        ),
        (None, Some(e)) => ("warn", format!("held host at {ip} has no SSH access: {e}")),
        (None, None) => ("info", format!("held host reachable at {ip}")),
    };
    insert_event(
        tx,
        Some(run_id),
        Some(host_id),
        level,
        "hold_started",
        &message,
        None,
        now,
    )?;
    facts(tx, run_id)
}

pub fn complete(
    tx: &Connection,
    run_id: i64,
    produced: u64,
    now: Timestamp,
) -> StoreResult<(u64, RunFacts)> {
    let (_, host_id) = state_of(tx, run_id)?;
    let stored: i64 = tx.query_row(
        "SELECT COALESCE(SUM(sample_count), 0) FROM batches WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let stored = stored as u64;
    tx.execute(
        "UPDATE runs SET samples_reported = ?1 WHERE id = ?2",
        (produced as i64, run_id),
    )?;
    if stored != produced {
        insert_event(
            tx,
            Some(run_id),
            Some(host_id),
            "error",
            "sample_count_mismatch",
            &format!("agent produced {produced} samples; coordinator stored {stored}"),
            Some(&serde_json::json!({"produced": produced, "stored": stored})),
            now,
        )?;
    }
    Ok((stored, facts(tx, run_id)?))
}

pub fn expire_silent(tx: &Connection, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>> {
    let silent: Vec<(i64, i64, Option<String>)> = tx
        .prepare("SELECT id, host_id, last_heartbeat_at FROM runs WHERE state = 'Running' AND (last_heartbeat_at IS NULL OR last_heartbeat_at < ?1)")?
        .query_map([cutoff.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut aborted = Vec::new();
    for (run_id, host_id, last) in silent {
        let stage: Option<(i64, String)> = tx
            .query_row(
                "SELECT id, name FROM stages WHERE run_id = ?1 AND state IN ('running', 'pending') ORDER BY state = 'running' DESC, ordinal LIMIT 1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let reason = format!(
            "agent silent since {}",
            last.unwrap_or_else(|| "claim".into())
        );
        if let Some((stage_id, name)) = &stage {
            let summary = serde_json::json!({"reasons": [reason.clone()]});
            tx.execute(
                "UPDATE stages SET state = 'failed', completed_at = ?1, summary_json = ?2 WHERE id = ?3",
                (now.to_string(), summary.to_string(), stage_id),
            )?;
            tx.execute(
                "UPDATE runs SET failed_stage = ?1 WHERE id = ?2",
                (name, run_id),
            )?;
        }
        apply_transition(tx, run_id, RunEvent::AgentSilent, now)?;
        let at = stage
            .map(|(_, n)| format!(" during {n}"))
            .unwrap_or_default();
        insert_event(
            tx,
            Some(run_id),
            Some(host_id),
            "error",
            "agent_silent",
            &format!("{reason}{at}; a hang is a hardware fault"),
            None,
            now,
        )?;
        aborted.push(run_id);
    }
    Ok(aborted)
}

pub fn expire_holds(tx: &Connection, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>> {
    let held: Vec<(i64, i64, String)> = tx
        .prepare("SELECT id, host_id, held_at FROM runs WHERE state = 'FailedHolding' AND held_at IS NOT NULL AND held_at < ?1")?
        .query_map([cutoff.to_string()], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut ended = Vec::new();
    for (run_id, host_id, since) in held {
        apply_transition(tx, run_id, RunEvent::HoldTimeout, now)?;
        tx.execute(
            "UPDATE runs SET release_power = ?1 WHERE id = ?2",
            (Power::Poweroff.as_str(), run_id),
        )?;
        insert_event(
            tx,
            Some(run_id),
            Some(host_id),
            "warn",
            "hold_timeout",
            &format!("held since {since} and never released: powering the host off"),
            None,
            now,
        )?;
        ended.push(run_id);
    }
    Ok(ended)
}

/// Paths whose rows are all older than `cutoff`, unpruned, and not the hold
/// key of a held run.
const PRUNABLE: &str = "SELECT path FROM artifacts GROUP BY path
     HAVING SUM(pruned_at IS NULL) > 0
        AND MAX(COALESCE(created_at, '')) < ?1
        AND SUM(kind = 'hold_key' AND run_id IN (SELECT id FROM runs WHERE state = 'FailedHolding')) = 0";

pub fn prune_candidates(tx: &Connection, cutoff: Timestamp) -> StoreResult<Vec<String>> {
    let paths = tx
        .prepare(PRUNABLE)?
        .query_map([cutoff.to_string()], |r| r.get(0))?
        .collect::<Result<Vec<String>, _>>()?;
    Ok(paths)
}

pub fn mark_pruned(
    tx: &Connection,
    path: &str,
    cutoff: Timestamp,
    now: Timestamp,
) -> StoreResult<bool> {
    let still: bool = tx.query_row(
        &format!("SELECT EXISTS(SELECT 1 FROM ({PRUNABLE}) WHERE path = ?2)"),
        (cutoff.to_string(), path),
        |r| r.get(0),
    )?;
    if !still {
        return Ok(false);
    }
    let rows: Vec<(i64, i64, String, String)> = tx
        .prepare("SELECT a.id, a.run_id, a.kind, r.host_id FROM artifacts a JOIN runs r ON r.id = a.run_id WHERE a.path = ?1 AND a.pruned_at IS NULL")?
        .query_map([path], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get::<_, i64>(3)?.to_string())))?
        .collect::<Result<Vec<_>, _>>()?;
    for (id, run_id, kind, host_id) in rows {
        tx.execute(
            "UPDATE artifacts SET pruned_at = ?1 WHERE id = ?2",
            (now.to_string(), id),
        )?;
        let file = std::path::Path::new(path)
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        insert_event(
            tx,
            Some(run_id),
            host_id.parse().ok(),
            "info",
            "prune",
            &format!("artifact {kind} ({file}) pruned: past retention; its row stays"),
            None,
            now,
        )?;
    }
    Ok(true)
}
