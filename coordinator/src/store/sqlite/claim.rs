//! Claim and the run's life as the agent sees it: the facts a directive
//! is computed from, the claim that turns a queued run into a running one,
//! heartbeats and the agent's completion.
//!
//! Never: decide a directive (that is the gate's, from [`RunFacts`]).

use rusqlite::{Connection, OptionalExtension};

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::mac::Mac;
use common::profile::Profile;
use common::run_state::{RunEvent, RunState};
use common::stage::{Stage, StageState, DEFAULT_STAGE_ORDER};
use common::time::Timestamp;
use common::wire::{Overrides, RunComplete, StagePlan};

use super::runs::{self, apply_transition, facts, state_of};
use super::{insert_event, insert_plain_event, parse_col, ts_opt};
use crate::gate;
use crate::store::{
    ClaimAttempt, ClaimKind, ClaimOutcome, Claimed, RunFacts, StoreError, StoreResult,
};

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

pub fn stage_plan(tx: &Connection, run_id: i64) -> StoreResult<Vec<StagePlan>> {
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

/// The run a claim is about.
struct FoundRun {
    id: i64,
    state: RunState,
    boot_id: Option<String>,
    host_id: i64,
    last_heartbeat: Option<Timestamp>,
    profile: String,
    non_destructive: bool,
    /// The host's claim secret hash ('' = none).
    secret_hash: String,
}

/// The run a claim for `macs` is about: a running one before a queued
/// one, then the oldest.
fn find_run(tx: &Connection, macs: &[Mac]) -> StoreResult<Option<FoundRun>> {
    let mut find = tx.prepare_cached(
        "SELECT r.id, r.state, r.boot_id, r.host_id, r.last_heartbeat_at, r.profile,
                r.non_destructive, h.claim_secret_hash
         FROM runs r JOIN hosts h ON h.id = r.host_id
         WHERE h.mac = ?1 AND r.state IN ('Queued', 'Running')
         ORDER BY r.state = 'Running' DESC, r.id ASC LIMIT 1",
    )?;
    let mut found: Option<FoundRun> = None;
    for mac in macs {
        let row = find
            .query_row([mac.to_string()], |r| {
                Ok(FoundRun {
                    id: r.get("id")?,
                    state: parse_col(r, "state")?,
                    boot_id: r.get("boot_id")?,
                    host_id: r.get("host_id")?,
                    last_heartbeat: ts_opt(r, "last_heartbeat_at")?,
                    profile: r.get("profile")?,
                    non_destructive: r.get("non_destructive")?,
                    secret_hash: r.get("claim_secret_hash")?,
                })
            })
            .optional()?;
        if let Some(row) = row {
            let running = |f: &FoundRun| f.state == RunState::Running;
            if found.as_ref().is_none_or(|f| !running(f) && running(&row)) {
                found = Some(row);
            }
        }
    }
    Ok(found)
}

/// Whether any of `macs` has a queued or running run (read-only).
pub fn any_claimable(tx: &Connection, macs: &[Mac]) -> StoreResult<bool> {
    Ok(find_run(tx, macs)?.is_some())
}

pub fn claim(tx: &Connection, attempt: &ClaimAttempt, now: Timestamp) -> StoreResult<ClaimOutcome> {
    let boot_id = attempt.boot_id.as_str();
    let Some(found) = find_run(tx, &attempt.macs)? else {
        return Ok(ClaimOutcome::NothingQueued);
    };
    let (run_id, host_id) = (found.id, found.host_id);
    let profile: Profile = found.profile.parse().map_err(StoreError::Corrupt)?;
    let prev_boot = found.boot_id;
    let decided = gate::claim(&gate::ClaimFacts {
        state: found.state,
        same_boot: prev_boot.as_deref() == Some(boot_id),
        last_heartbeat: found.last_heartbeat,
        heartbeat_interval_s: profile.definition().heartbeat_interval_s,
        now,
        caller: &attempt.caller,
        host_secret_hash: &found.secret_hash,
        claim_secret_hash: attempt.secret_hash.as_deref(),
        protocol_version: attempt.protocol_version,
        agent_version: attempt.agent_version.as_deref(),
        run_id,
        non_destructive: found.non_destructive,
        host_mode_run: attempt.host_mode_run,
    });
    let kind = match decided {
        Err((why, refusal)) => {
            let message = refusal.message.clone();
            let (level, kind) = (refusal.level, refusal.kind);
            insert_plain_event(tx, Some(run_id), host_id, level, kind, refusal.message, now)?;
            return Ok(ClaimOutcome::Refused {
                run_id,
                why,
                message,
            });
        }
        Ok(kind) => kind,
    };
    match kind {
        ClaimKind::First => {
            apply_transition(tx, run_id, RunEvent::Claim, now)?;
            let non_destructive: bool = tx.query_row(
                "SELECT non_destructive FROM runs WHERE id = ?1",
                [run_id],
                |r| r.get(0),
            )?;
            let mut insert = tx.prepare_cached("INSERT INTO stages (run_id, name, ordinal, state, summary_json) VALUES (?1, ?2, ?3, ?4, ?5)")?;
            for stage in DEFAULT_STAGE_ORDER {
                let (st, why) = seed_state(profile, non_destructive, stage);
                let summary = why
                    // Left out by the run's plan: no loss of coverage.
                    .map(|w| {
                        serde_json::json!({"reasons": [gate::skipped_reason(w)], "absent": true})
                            .to_string()
                    });
                insert.execute((run_id, stage.name(), stage.ordinal(), st.as_str(), summary))?;
            }
            tx.execute(
                "UPDATE runs SET claimed_at = ?1 WHERE id = ?2",
                (now.to_string(), run_id),
            )?;
        }
        ClaimKind::SameBoot => {}
        ClaimKind::Resumed => {
            apply_transition(tx, run_id, RunEvent::Resume, now)?;
            tx.execute("UPDATE stages SET state = 'pending', started_at = NULL WHERE run_id = ?1 AND state = 'running'", [run_id])?;
        }
    }
    tx.execute(
        "UPDATE runs SET agent_token_hash = ?1, boot_id = ?2, last_heartbeat_at = ?3 WHERE id = ?4",
        (&attempt.token_hash, boot_id, now.to_string(), run_id),
    )?;
    let stages = stage_plan(tx, run_id)?;
    let resume_from = stages
        .iter()
        .find(|s| !s.state.lets_pipeline_continue())
        .map(|s| s.ordinal)
        .unwrap_or(DEFAULT_STAGE_ORDER.len() as u32);
    let (event_kind, message) = match kind {
        ClaimKind::First => (
            EventKind::Claim,
            format!(
                "claimed by boot {boot_id} (agent {}, protocol {})",
                attempt
                    .agent_version
                    .as_deref()
                    .unwrap_or("of unknown version"),
                attempt.protocol_version
            ),
        ),
        ClaimKind::SameBoot => (
            EventKind::Claim,
            format!(
                "claimed again by boot {boot_id} after its heartbeat went stale; token re-issued"
            ),
        ),
        ClaimKind::Resumed => (
            EventKind::Resume,
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
        EventLevel::Warn
    } else {
        EventLevel::Info
    };
    insert_plain_event(tx, Some(run_id), host_id, level, event_kind, message, now)?;
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
    Ok(ClaimOutcome::Claimed(Box::new(Claimed {
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
    })))
}

pub fn heartbeat(tx: &Connection, run_id: i64, now: Timestamp) -> StoreResult<RunFacts> {
    tx.execute(
        "UPDATE runs SET last_heartbeat_at = ?1 WHERE id = ?2 AND state IN ('Running', 'FailedHolding')",
        (now.to_string(), run_id),
    )?;
    facts(tx, run_id)
}

pub fn complete(
    tx: &Connection,
    run_id: i64,
    count: &RunComplete,
    now: Timestamp,
) -> StoreResult<(u64, RunFacts)> {
    let (state, host_id) = state_of(tx, run_id)?;
    let stored: i64 = tx.query_row(
        "SELECT COALESCE(SUM(sample_count), 0) FROM batches WHERE run_id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    let stored = stored as u64;
    let reported: Option<i64> = tx.query_row(
        "SELECT samples_reported FROM runs WHERE id = ?1",
        [run_id],
        |r| r.get(0),
    )?;
    if reported.is_some() {
        if state.is_terminal() {
            return Err(StoreError::RunFinished { run_id, state });
        }
        // A resend whose answer was lost: counted once.
        return Ok((stored, facts(tx, run_id)?));
    }
    let produced = count.samples_produced;
    tx.execute(
        "UPDATE runs SET samples_reported = ?1 WHERE id = ?2",
        (produced as i64, run_id),
    )?;
    let refused = count.samples_refused.min(produced);
    if stored != produced - refused {
        insert_event(
            tx,
            &NewEvent {
                run_id: Some(run_id),
                host_id: Some(host_id),
                level: EventLevel::Error,
                kind: EventKind::SampleCountMismatch,
                message: format!("agent produced {produced} samples ({refused} refused); coordinator stored {stored}"),
                data: Some(serde_json::json!({"produced": produced, "refused": refused, "stored": stored})),
            },
            now,
        )?;
    }
    Ok((stored, facts(tx, run_id)?))
}
