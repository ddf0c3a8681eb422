//! Measurement batches: sequenced, idempotent, gated by stage ordinal.
//!
//! A batch is stored whole or not at all: every refusal is found by reads
//! before its first write, and a failure while writing fails its whole
//! group's transaction. Threshold evaluations get a row when they breach (or all
//! of them with [`Evaluations::All`]); every one is counted. A resent batch
//! is acknowledged again without adding rows; a gap is refused with the
//! number expected. Samples are evaluated only against the thresholds of the
//! stage that is running; samples of a stage that has ended are stored, not
//! gated.

use std::collections::HashMap;

use rusqlite::{Connection, OptionalExtension};

use common::measurement::Kind;
use common::run_state::RunState;
use common::stage::{Stage, StageState};
use common::time::Timestamp;
use common::wire::{BatchAck, Directive, MeasurementBatch};

use super::runs::facts;
use super::runs::state_of;
use super::{parse_col, FrozenRule};
use crate::store::{Evaluations, RunFacts, StoreError, StoreResult};

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

/// Appends each batch of `group` in its own savepoint of `tx`: a refused
/// batch is rolled back alone. An error that ends the transaction itself
/// (the database failed) is the group's.
/// One measurements row.
struct Row<'a> {
    stage_id: Option<i64>,
    ts: String,
    kind: &'static str,
    key: &'a str,
    value: f64,
    unit: &'a str,
}

/// Rows per multi-row INSERT: the largest first, then halves for the rest,
/// so a batch takes a few statements and the prepared-statement cache
/// holds one per size.
const CHUNKS: [usize; 7] = [64, 32, 16, 8, 4, 2, 1];

fn insert_sql(n: usize) -> &'static str {
    static SQL: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let all = SQL.get_or_init(|| {
        CHUNKS
            .iter()
            .map(|&n| {
                let values: Vec<String> = (0..n)
                    .map(|i| {
                        let p = i * 6;
                        format!("(?1, ?{}, ?{}, ?{}, ?{}, ?{}, ?{})", p + 2, p + 3, p + 4, p + 5, p + 6, p + 7)
                    })
                    .collect();
                format!(
                    "INSERT INTO measurements (run_id, stage_id, ts, kind, key, value, unit) VALUES {}",
                    values.join(", ")
                )
            })
            .collect()
    });
    let i = CHUNKS
        .iter()
        .position(|&c| c == n)
        .unwrap_or(CHUNKS.len() - 1);
    &all[i]
}

/// Inserts `rows` in order, a chunk of [`CHUNKS`] rows per statement.
fn insert_rows(tx: &Connection, run_id: i64, rows: &[Row<'_>]) -> StoreResult<()> {
    let mut rest = rows;
    while !rest.is_empty() {
        let n = CHUNKS
            .iter()
            .copied()
            .find(|&c| c <= rest.len())
            .unwrap_or(1);
        let (chunk, tail) = rest.split_at(n);
        let mut params: Vec<&dyn rusqlite::ToSql> = Vec::with_capacity(1 + 6 * n);
        params.push(&run_id);
        for r in chunk {
            params.extend([
                &r.stage_id as &dyn rusqlite::ToSql,
                &r.ts,
                &r.kind,
                &r.key,
                &r.value,
                &r.unit,
            ]);
        }
        tx.prepare_cached(insert_sql(n))?
            .execute(params.as_slice())?;
        rest = tail;
    }
    Ok(())
}

pub fn append_group(
    tx: &Connection,
    group: &[(i64, &MeasurementBatch)],
    rules: impl Fn(&Connection, i64) -> StoreResult<std::sync::Arc<Vec<FrozenRule>>>,
    evaluations: Evaluations,
    now: Timestamp,
) -> StoreResult<Vec<StoreResult<(BatchAck, RunFacts)>>> {
    let mut out = Vec::with_capacity(group.len());
    for &(run_id, batch) in group {
        // Every refusal comes from the checks, which write nothing, so a
        // refused batch needs no savepoint; a failure while writing is the
        // database's, and fails the group.
        let checked = check(tx, run_id, batch).and_then(|c| Ok((c, rules(tx, run_id)?)));
        match checked {
            Err(refused) => out.push(Err(refused)),
            Ok((Checked::Resent(answer), _)) => out.push(Ok(answer)),
            Ok((Checked::New { seq, stages }, rules)) => {
                let new = New {
                    run_id,
                    seq,
                    batch,
                    stages,
                };
                out.push(Ok(write(tx, new, &rules, evaluations, now)?));
            }
        }
    }
    Ok(out)
}

/// What the checks found: a resend (answered as before) or a new batch
/// with each sample's stage (id, stage, is running).
enum Checked {
    Resent((BatchAck, RunFacts)),
    New {
        seq: i64,
        stages: Vec<Option<(i64, Stage, bool)>>,
    },
}

/// A new batch that passed the checks.
struct New<'a> {
    run_id: i64,
    seq: i64,
    batch: &'a MeasurementBatch,
    stages: Vec<Option<(i64, Stage, bool)>>,
}

/// The refusals, in order: reads only.
fn check(tx: &Connection, run_id: i64, batch: &MeasurementBatch) -> StoreResult<Checked> {
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
        return Ok(Checked::Resent((ack, facts)));
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

    // Every sample's stage first: a refusal writes nothing.
    let mut of_sample = Vec::with_capacity(batch.samples.len());
    for (i, s) in batch.samples.iter().enumerate() {
        of_sample.push(match s.stage {
            Some(o) => Some(stages.get(o as usize).copied().flatten().ok_or_else(|| {
                StoreError::Invalid(format!("sample {i}: run {run_id} has no stage {o}"))
            })?),
            None => None,
        });
    }
    Ok(Checked::New {
        seq,
        stages: of_sample,
    })
}

/// Writes a checked batch: its rows, evaluations, summaries and ledger row.
fn write(
    tx: &Connection,
    new: New<'_>,
    rules: &[FrozenRule],
    evaluations: Evaluations,
    now: Timestamp,
) -> StoreResult<(BatchAck, RunFacts)> {
    let New {
        run_id,
        seq,
        batch,
        stages: of_sample,
    } = new;
    let mut insert_e = tx.prepare_cached(
        "INSERT INTO threshold_evaluations (run_id, threshold_id, stage_name, kind, key, ts, observed, passed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?;
    let mut summary = super::summaries::BatchSummary::default();
    let mut rows = Vec::with_capacity(batch.samples.len());
    // The rules each (stage, series) matches, matched once per batch.
    let mut matching: HashMap<(Stage, Kind, &str), Vec<&FrozenRule>> = HashMap::new();
    for (s, stage) in batch.samples.iter().zip(of_sample) {
        let ts = s.ts.to_string();
        let unit = if s.unit.is_empty() {
            s.kind.unit_for_key(&s.key).unwrap_or("")
        } else {
            s.unit.as_str()
        };
        let value = s.value.get();
        summary.add(s.kind, &s.key, unit, s.ts, value);
        if let Some((_, stage, true)) = stage {
            let judging = matching
                .entry((stage, s.kind, s.key.as_str()))
                .or_insert_with(|| {
                    rules
                        .iter()
                        .filter(|f| f.rule.applies_to(stage, s.kind, &s.key))
                        .collect()
                });
            for f in judging.iter() {
                let passed = f.rule.passes(value);
                summary.judged(f.id, passed);
                if passed && evaluations == Evaluations::Breaches {
                    continue;
                }
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
        rows.push(Row {
            stage_id: stage.map(|(id, _, _)| id),
            ts,
            kind: s.kind.as_str(),
            key: &s.key,
            value,
            unit,
        });
    }
    insert_rows(tx, run_id, &rows)?;
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
