//! Expiry: runs whose agent went silent and holds past their time.

use rusqlite::{Connection, OptionalExtension};

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::run_state::RunEvent;
use common::time::Timestamp;
use common::wire::Power;

use super::insert_event;
use super::runs::apply_transition;
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
            &NewEvent {
                run_id: Some(run_id),
                host_id: Some(host_id),
                level: EventLevel::Error,
                kind: EventKind::AgentSilent,
                message: format!("{reason}{at}; a hang is a hardware fault"),
                data: None,
            },
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
            &NewEvent {
                run_id: Some(run_id),
                host_id: Some(host_id),
                level: EventLevel::Warn,
                kind: EventKind::HoldTimeout,
                message: format!("held since {since} and never released: powering the host off"),
                data: None,
            },
            now,
        )?;
        ended.push(run_id);
    }
    Ok(ended)
}
