//! Artifact rows (content-addressed files the agent and the report writer
//! store), their pruning, and the firmware snapshot a run uploaded.
//!
//! Never: touch a file; the janitor and `lifecycle` do, around these rows.

use rusqlite::{Connection, OptionalExtension};

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::inventory::FirmwareComponent;
use common::time::Timestamp;
use common::wire::ArtifactInfo;

use super::insert_event;
use super::runs::{open_state_of, state_of};
use super::stages::stage_row;
use crate::store::{NewArtifact, StoreError, StoreResult};

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

/// Most artifacts an agent may upload for one run.
pub const MAX_AGENT_ARTIFACTS: i64 = 1000;

/// An agent's upload: only while the run is open, at most
/// [`MAX_AGENT_ARTIFACTS`] per run.
pub fn record_agent_artifact(
    tx: &Connection,
    a: &NewArtifact,
    now: Timestamp,
) -> StoreResult<ArtifactInfo> {
    check_agent_artifact(tx, a.run_id)?;
    record_artifact(tx, a, now)
}

/// Whether the run takes one more upload from its agent.
pub fn check_agent_artifact(tx: &Connection, run_id: i64) -> StoreResult<()> {
    open_state_of(tx, run_id)?;
    let n: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM artifacts WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?;
    if n >= MAX_AGENT_ARTIFACTS {
        return Err(StoreError::OverLimit {
            code: "too_many_artifacts",
            message: format!("run {run_id} has {n} artifacts; at most {MAX_AGENT_ARTIFACTS}"),
        });
    }
    Ok(())
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
            &NewEvent::new(
                Some(run_id),
                host_id.parse().ok(),
                EventLevel::Info,
                EventKind::Prune,
                format!("artifact {kind} ({file}) pruned: past retention; its row stays"),
            ),
            now,
        )?;
    }
    Ok(true)
}

pub fn record_firmware(
    tx: &Connection,
    run_id: i64,
    components: &[FirmwareComponent],
    _now: Timestamp,
) -> StoreResult<()> {
    let (state, _) = open_state_of(tx, run_id)?;
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
