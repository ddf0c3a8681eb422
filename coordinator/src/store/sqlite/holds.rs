//! A failed host held for debugging: the hold key's row and where the
//! agent says SSH answers.

use rusqlite::Connection;

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::run_state::RunState;
use common::time::Timestamp;
use common::wire::HoldReport;

use super::artifacts::record_artifact;
use super::runs::{facts, open_state_of};
use super::{insert_event, insert_plain_event};
use crate::store::{NewArtifact, RunFacts, StoreError, StoreResult};

pub fn set_hold_key(
    tx: &Connection,
    run_id: i64,
    public_key: &str,
    key: &NewArtifact,
    now: Timestamp,
) -> StoreResult<RunFacts> {
    let (state, host_id) = open_state_of(tx, run_id)?;
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
        insert_plain_event(
            tx,
            Some(run_id),
            host_id,
            EventLevel::Warn,
            EventKind::HoldStarted,
            "host held for debugging; hold key issued",
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
    let (state, host_id) = open_state_of(tx, run_id)?;
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
            EventLevel::Info,
            format!("held host reachable at {ip}, SSH port {port}"),
        ),
        (None, Some(e)) => (
            EventLevel::Warn,
            format!("held host at {ip} has no SSH access: {e}"),
        ),
        (None, None) => (EventLevel::Info, format!("held host reachable at {ip}")),
    };
    insert_event(
        tx,
        &NewEvent {
            run_id: Some(run_id),
            host_id: Some(host_id),
            level,
            kind: EventKind::HoldStarted,
            message: message.to_string(),
            data: None,
        },
        now,
    )?;
    facts(tx, run_id)
}
