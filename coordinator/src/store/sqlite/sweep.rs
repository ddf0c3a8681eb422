//! Expiry: runs whose agent went silent and holds past their time.
//!
//! Never: decide what expiry means here; `gate::silent_agent` and
//! `gate::hold_expired` do, and this applies it.

use rusqlite::{Connection, OptionalExtension};

use common::run_state::RunEvent;
use common::time::Timestamp;

use super::insert_plain_event;
use super::runs::{apply_transition, released};
use crate::gate;
use crate::store::StoreResult;

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
        let verdict = gate::silent_agent(last.as_deref(), stage.as_ref().map(|(_, n)| n.as_str()));
        if let Some((stage_id, name)) = &stage {
            let summary = serde_json::json!({"reasons": [verdict.stage_reason]});
            tx.execute(
                "UPDATE stages SET state = ?1, completed_at = ?2, summary_json = ?3 WHERE id = ?4",
                (
                    verdict.stage_state.as_str(),
                    now.to_string(),
                    summary.to_string(),
                    stage_id,
                ),
            )?;
            tx.execute(
                "UPDATE runs SET failed_stage = ?1 WHERE id = ?2",
                (name, run_id),
            )?;
        }
        apply_transition(tx, run_id, RunEvent::AgentSilent, now)?;
        let e = verdict.event;
        insert_plain_event(tx, Some(run_id), host_id, e.level, e.kind, e.message, now)?;
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
        let (power, event) = gate::hold_expired(&since);
        apply_transition(tx, run_id, RunEvent::HoldTimeout, now)?;
        released(tx, run_id, host_id, power, event, now)?;
        ended.push(run_id);
    }
    Ok(ended)
}
