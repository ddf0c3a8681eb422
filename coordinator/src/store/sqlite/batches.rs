//! Measurement batches: sequenced, idempotent, gated by stage ordinal.
//!
//! A batch is stored whole or not at all (one transaction). A resent batch
//! is acknowledged again without adding rows; a gap is refused with the
//! number expected. Samples are evaluated only against the thresholds of the
//! stage that is running; samples of a stage that has ended are stored, not
//! gated.

use rusqlite::{Connection, OptionalExtension};

use common::measurement::Kind;
use common::run_state::RunState;
use common::stage::{Stage, StageState};
use common::time::Timestamp;
use common::wire::{BatchAck, Directive, MeasurementBatch};

use super::runs::facts;
use super::runs::state_of;
use super::{parse_col, FrozenRule};
use crate::store::{RunFacts, StoreError, StoreResult};

/// Most distinct series (kind, key) one run may hold.
pub const MAX_SERIES_PER_RUN: usize = 10_000;

/// Refuses a batch that would take the run past [`MAX_SERIES_PER_RUN`].
fn check_series_limit(tx: &Connection, run_id: i64, batch: &MeasurementBatch) -> StoreResult<()> {
    // Each distinct series of the batch once (a batch of 500 samples names
    // a few dozen), not a lookup per sample on the write path.
    let named: std::collections::HashSet<(Kind, &str)> = batch
        .samples
        .iter()
        .map(|s| (s.kind, s.key.as_str()))
        .collect();
    let mut exists = tx.prepare_cached(
        "SELECT 1 FROM series_stats WHERE run_id = ?1 AND kind = ?2 AND key = ?3",
    )?;
    let mut new = 0usize;
    for (kind, key) in named {
        if exists
            .query_row((run_id, kind.as_str(), key), |_| Ok(()))
            .optional()?
            .is_none()
        {
            new += 1;
        }
    }
    if new == 0 {
        return Ok(());
    }
    let held: i64 = tx
        .prepare_cached("SELECT COUNT(*) FROM series_stats WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?;
    let total = held as usize + new;
    if total > MAX_SERIES_PER_RUN {
        return Err(StoreError::OverLimit {
            code: "too_many_series",
            message: format!(
                "batch {} would give run {run_id} {total} series (kind, key); at most {MAX_SERIES_PER_RUN}",
                batch.seq
            ),
        });
    }
    Ok(())
}

pub fn append(
    tx: &Connection,
    run_id: i64,
    batch: &MeasurementBatch,
    rules: &[FrozenRule],
    now: Timestamp,
) -> StoreResult<(BatchAck, RunFacts)> {
    let (state, _) = state_of(tx, run_id)?;
    if state == RunState::Queued {
        return Err(StoreError::Conflict(format!(
            "run {run_id} is {state}; it takes measurements once claimed"
        )));
    }
    let seq = i64::try_from(batch.seq)
        .ok()
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            StoreError::Invalid(format!(
                "batch number {} out of range (batches count from 1)",
                batch.seq
            ))
        })?;
    let last: i64 = tx
        .prepare_cached("SELECT COALESCE(MAX(seq), 0) FROM batches WHERE run_id = ?1")?
        .query_row([run_id], |r| r.get(0))?;
    if seq <= last {
        let stored: Option<i64> = tx
            .prepare_cached("SELECT sample_count FROM batches WHERE run_id = ?1 AND seq = ?2")?
            .query_row((run_id, seq), |r| r.get(0))
            .optional()?;
        let stored = stored.ok_or_else(|| {
            StoreError::Corrupt(format!(
                "run {run_id}: batch {} missing below {last}",
                batch.seq
            ))
        })?;
        let facts = facts(tx, run_id)?;
        let ack = BatchAck {
            seq: batch.seq,
            stored: stored as u64,
            duplicate: true,
            directive: Directive::Continue,
        };
        return Ok((ack, facts));
    }
    // A resend is acknowledged even after the run ended (it changes
    // nothing); anything new is refused.
    if state.is_terminal() {
        return Err(StoreError::RunFinished { run_id, state });
    }
    if seq != last + 1 {
        return Err(StoreError::BatchGap {
            got: batch.seq,
            expected: (last + 1) as u64,
        });
    }
    check_series_limit(tx, run_id, batch)?;

    // (stage id, stage, is running) by ordinal.
    let mut stages: Vec<Option<(i64, Stage, bool)>> =
        vec![None; common::stage::DEFAULT_STAGE_ORDER.len()];
    let mut stmt = tx.prepare_cached("SELECT id, ordinal, state FROM stages WHERE run_id = ?1")?;
    let rows = stmt.query_map([run_id], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, u32>(1)?,
            parse_col::<StageState>(r, "state")?,
        ))
    })?;
    for row in rows {
        let (id, ordinal, st) = row?;
        if let (Some(slot), Some(stage)) = (
            stages.get_mut(ordinal as usize),
            Stage::from_ordinal(ordinal),
        ) {
            *slot = Some((id, stage, st == StageState::Running));
        }
    }

    let mut insert_m = tx.prepare_cached(
        "INSERT INTO measurements (run_id, stage_id, ts, kind, key, value, unit) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    let mut insert_e = tx.prepare_cached(
        "INSERT INTO threshold_evaluations (run_id, threshold_id, stage_name, kind, key, ts, observed, passed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut summary = super::summaries::BatchSummary::default();
    for (i, s) in batch.samples.iter().enumerate() {
        let stage = match s.stage {
            Some(o) => Some(stages.get(o as usize).copied().flatten().ok_or_else(|| {
                StoreError::Invalid(format!("sample {i}: run {run_id} has no stage {o}"))
            })?),
            None => None,
        };
        let ts = s.ts.to_string();
        let unit = if s.unit.is_empty() {
            s.kind.unit_for_key(&s.key).unwrap_or("")
        } else {
            s.unit.as_str()
        };
        let value = s.value.get();
        insert_m.execute((
            run_id,
            stage.map(|(id, _, _)| id),
            &ts,
            s.kind.as_str(),
            &s.key,
            value,
            unit,
        ))?;
        summary.add(s.kind, &s.key, unit, s.ts, value);
        let Some((_, stage, true)) = stage else {
            continue;
        };
        for f in rules
            .iter()
            .filter(|f| f.rule.applies_to(stage, s.kind, &s.key))
        {
            let passed = f.rule.passes(value);
            summary.judged(f.id, passed);
            insert_e.execute((
                run_id,
                f.id,
                stage.name(),
                s.kind.as_str(),
                &s.key,
                &ts,
                value,
                passed,
            ))?;
        }
    }
    summary.write(tx, run_id)?;
    tx.prepare_cached(
        "INSERT INTO batches (run_id, seq, sample_count, received_at) VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute((run_id, seq, batch.samples.len() as i64, now.to_string()))?;
    let facts = facts(tx, run_id)?;
    let ack = BatchAck {
        seq: batch.seq,
        stored: batch.samples.len() as u64,
        duplicate: false,
        directive: Directive::Continue,
    };
    Ok((ack, facts))
}
