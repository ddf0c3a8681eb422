//! SQLite implementation of [`Store`]: WAL, foreign keys on, a busy timeout,
//! migrations embedded and applied in order at open.
//!
//! One write connection behind a mutex (SQLite has one writer anyway; each
//! method holds it for its SQL only) and a small pool of read connections
//! that WAL lets run beside the writer. Thresholds are cached per run: they
//! are immutable once the run is created.
//!
//! Never: hold a connection across anything but SQL.

mod artifacts;
mod batches;
mod claim;
mod holds;
mod hosts;
mod metrics;
mod pool;
mod report;
mod runs;
mod schema;
mod stages;
mod summaries;
mod sweep;
mod webhooks;

use schema::{configure, TABLES};
pub use schema::{migrate, MIGRATIONS};

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::store::NewEvent;
use common::event::{EventKind, EventLevel};
use common::inventory::FirmwareComponent;
use common::run_state::{RunEvent, RunState};
use common::time::Timestamp;
use common::wire::{
    ArtifactInfo, BatchAck, Event, HoldReport, Host, MeasurementBatch, Power, QueuedRun, Run,
    RunDetail, StageFinish, WebhookDelivery,
};

use super::{
    ClaimAttempt, ClaimOutcome, ComputedDiffs, DueDelivery, Evaluations, NewArtifact, NewHost,
    NewRun, ReportInputs, RowCounts, RunFacts, StageResult, Store, StoreError, StoreResult,
};

/// Runs whose frozen thresholds are kept in memory at most.
const THRESHOLD_CACHE_RUNS: usize = 4096;

/// A frozen threshold with its row id, compiled for matching.
#[derive(Debug, Clone)]
pub(crate) struct FrozenRule {
    pub id: i64,
    pub rule: common::threshold::Rule,
}

pub struct SqliteStore {
    writer: Mutex<Connection>,
    readers: pool::ReadPool,
    thresholds: Mutex<HashMap<i64, Arc<Vec<FrozenRule>>>>,
    evaluations: Evaluations,
}

/// Every rusqlite failure is a backend failure of the store.
impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and migrates it.
    pub fn open(path: &Path, now: Timestamp) -> StoreResult<Self> {
        let mut writer = Connection::open(path)?;
        let mode: String =
            writer.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Invalid(format!(
                "{} does not support WAL (journal_mode={mode})",
                path.display()
            )));
        }
        configure(&writer)?;
        // The writer's page cache holds the index pages a fleet's runs
        // insert into (1,000 runs interleave); readers keep the default.
        writer.pragma_update(None, "cache_size", -65536)?;
        // One multi-row statement per chunk size, besides the others.
        writer.set_prepared_statement_cache_capacity(64);
        migrate(&mut writer, now)?;
        Ok(Self {
            writer: Mutex::new(writer),
            readers: pool::ReadPool::new(path),
            thresholds: Mutex::new(HashMap::new()),
            evaluations: Evaluations::default(),
        })
    }

    /// Which threshold evaluations get a row (breaches only by default).
    pub fn with_evaluations(mut self, evaluations: Evaluations) -> Self {
        self.evaluations = evaluations;
        self
    }

    fn lock_writer(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock leaves SQLite consistent (the
        // transaction rolls back on drop), so a poisoned lock is usable.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` in one IMMEDIATE transaction; commits on Ok, rolls back on Err.
    fn write<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.lock_writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Runs `f` on a read connection (a deferred transaction, so it sees one
    /// snapshot).
    fn read<T>(&self, f: impl FnOnce(&Transaction<'_>) -> StoreResult<T>) -> StoreResult<T> {
        let mut conn = self.readers.get(configure)?;
        let tx = conn.transaction()?;
        let out = f(&tx);
        tx.finish()?;
        out
    }

    /// The run's frozen thresholds, from the cache or the database.
    fn frozen_rules(&self, conn: &Connection, run_id: i64) -> StoreResult<Arc<Vec<FrozenRule>>> {
        if let Some(hit) = self
            .thresholds
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&run_id)
        {
            return Ok(hit.clone());
        }
        let rules = Arc::new(runs::load_rules(conn, run_id)?);
        let mut cache = self.thresholds.lock().unwrap_or_else(|p| p.into_inner());
        // Rules never change, so dropping entries only costs a reload; the
        // bound keeps a long-lived coordinator from holding every past run.
        if cache.len() >= THRESHOLD_CACHE_RUNS {
            cache.clear();
        }
        cache.insert(run_id, rules.clone());
        Ok(rules)
    }
}

// ---- shared row helpers ------------------------------------------------------

pub(crate) fn ts_col(row: &rusqlite::Row<'_>, idx: &str) -> rusqlite::Result<Timestamp> {
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn ts_opt(row: &rusqlite::Row<'_>, idx: &str) -> rusqlite::Result<Option<Timestamp>> {
    parse_opt(row, idx)
}

/// A nullable text column parsed into `T`.
pub(crate) fn parse_opt<T: std::str::FromStr>(
    row: &rusqlite::Row<'_>,
    idx: &str,
) -> rusqlite::Result<Option<T>>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: Option<String> = row.get(idx)?;
    s.map(|s| s.parse()).transpose().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(crate) fn parse_col<T: std::str::FromStr>(
    row: &rusqlite::Row<'_>,
    idx: &str,
) -> rusqlite::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    let s: String = row.get(idx)?;
    s.parse().map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

/// Inserts one `events` row of a host (in a run, or outside any), without data.
pub(crate) fn insert_plain_event(
    tx: &Connection,
    run_id: Option<i64>,
    host_id: i64,
    level: EventLevel,
    kind: EventKind,
    message: impl Into<String>,
    now: Timestamp,
) -> StoreResult<()> {
    let event = NewEvent::new(run_id, Some(host_id), level, kind, message);
    insert_event(tx, &event, now)
}

/// Inserts one `events` row.
pub(crate) fn insert_event(tx: &Connection, event: &NewEvent, now: Timestamp) -> StoreResult<()> {
    tx.prepare_cached(
        "INSERT INTO events (run_id, host_id, ts, level, kind, message, data_json) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute((
        event.run_id,
        event.host_id,
        now.to_string(),
        event.level.as_str(),
        event.kind.as_str(),
        &event.message,
        event.data.as_ref().map(|d| d.to_string()),
    ))?;
    Ok(())
}

impl Store for SqliteStore {
    fn create_host(&self, host: &NewHost, now: Timestamp) -> StoreResult<Host> {
        self.write(|tx| hosts::create(tx, host, now))
    }

    fn update_host_spec(&self, name: &str, spec_yaml: &str, now: Timestamp) -> StoreResult<Host> {
        self.write(|tx| hosts::update_spec(tx, name, spec_yaml, now))
    }

    fn list_hosts(&self) -> StoreResult<Vec<Host>> {
        self.read(|tx| hosts::list(tx))
    }

    fn host(&self, name: &str) -> StoreResult<Host> {
        self.read(|tx| hosts::by_name(tx, name))
    }

    fn set_host_token(&self, name: &str, token_hash: &str, now: Timestamp) -> StoreResult<Host> {
        self.write(|tx| hosts::set_token(tx, name, token_hash, now))
    }

    fn set_claim_secret(&self, name: &str, secret_hash: &str, now: Timestamp) -> StoreResult<Host> {
        self.write(|tx| hosts::set_claim_secret(tx, name, secret_hash, now))
    }

    fn host_heartbeat(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> StoreResult<Option<(Host, Option<QueuedRun>)>> {
        self.write(|tx| hosts::heartbeat(tx, token_hash, now))
    }

    fn create_run(&self, run: &NewRun, now: Timestamp) -> StoreResult<Run> {
        self.write(|tx| runs::create(tx, run, now))
    }

    fn list_runs(&self) -> StoreResult<Vec<Run>> {
        self.read(|tx| runs::list(tx))
    }

    fn runs_page(&self, before: Option<i64>, limit: u32) -> StoreResult<Vec<Run>> {
        self.read(|tx| runs::page(tx, before, limit))
    }

    fn run(&self, run_id: i64) -> StoreResult<Run> {
        self.read(|tx| runs::by_id(tx, run_id))
    }

    fn run_detail(&self, run_id: i64) -> StoreResult<RunDetail> {
        self.read(|tx| runs::detail(tx, run_id))
    }

    fn operator_transition(
        &self,
        run_id: i64,
        event: RunEvent,
        power: Option<Power>,
        now: Timestamp,
    ) -> StoreResult<Run> {
        self.write(|tx| runs::operator_transition(tx, run_id, event, power, now))
    }

    fn ignore_diff(&self, run_id: i64, field: &str, now: Timestamp) -> StoreResult<usize> {
        self.write(|tx| runs::ignore_diff(tx, run_id, field, now))
    }

    fn record_event(&self, event: &NewEvent, now: Timestamp) -> StoreResult<()> {
        self.write(|tx| insert_event(tx, event, now))
    }

    fn events(&self, run_id: i64) -> StoreResult<Vec<Event>> {
        self.read(|tx| runs::events(tx, run_id))
    }

    fn events_page(&self, run_id: i64, after: i64, limit: u32) -> StoreResult<Vec<Event>> {
        self.read(|tx| {
            runs::state_of(tx, run_id)?;
            runs::events_page(tx, run_id, after, limit)
        })
    }

    fn measurements(
        &self,
        run_id: i64,
        page: &super::MeasurementPage,
    ) -> StoreResult<Vec<common::wire::Measurement>> {
        self.read(|tx| runs::measurements(tx, run_id, page))
    }

    fn series(&self, run_id: i64) -> StoreResult<Vec<common::wire::SeriesStats>> {
        self.read(|tx| {
            runs::by_id(tx, run_id)?;
            summaries::stats(tx, run_id)
        })
    }

    fn agent_token_hash(&self, run_id: i64) -> StoreResult<String> {
        self.read(|tx| {
            tx.query_row(
                "SELECT agent_token_hash FROM runs WHERE id = ?1",
                [run_id],
                |r| r.get(0),
            )
            .optional()?
            .ok_or_else(|| StoreError::NotFound(format!("run {run_id} not found")))
        })
    }

    fn claim(&self, attempt: &ClaimAttempt, now: Timestamp) -> StoreResult<ClaimOutcome> {
        // A flood of claims for unknown MACs must not stall the writer.
        if !self.read(|tx| claim::any_claimable(tx, &attempt.macs))? {
            return Ok(ClaimOutcome::NothingQueued);
        }
        let outcome = self.write(|tx| claim::claim(tx, attempt, now))?;
        if let ClaimOutcome::Claimed(c) = &outcome {
            // Its batches are judged by its rules: compiled now, on a
            // reader, not by the writer when the first batch comes. The
            // claim stands either way (the writer loads them if this fails).
            if let Err(e) = self.read(|tx| self.frozen_rules(tx, c.run.id)) {
                tracing::warn!(run = c.run.id, "loading the run's thresholds ahead: {e}");
            }
        }
        Ok(outcome)
    }

    fn start_stage(
        &self,
        run_id: i64,
        ordinal: u32,
        at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<RunFacts> {
        self.write(|tx| stages::start_stage(tx, run_id, ordinal, at, now))
    }

    fn finish_stage(
        &self,
        run_id: i64,
        ordinal: u32,
        report: &StageFinish,
        diffs: Option<ComputedDiffs>,
        now: Timestamp,
    ) -> StoreResult<StageResult> {
        self.write(|tx| stages::finish_stage(tx, run_id, ordinal, report, diffs, now))
    }

    fn append_batches(
        &self,
        group: &[(i64, &MeasurementBatch)],
        now: Timestamp,
    ) -> StoreResult<Vec<StoreResult<(BatchAck, RunFacts)>>> {
        let mut conn = self.lock_writer();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let rules = |c: &Connection, run_id| self.frozen_rules(c, run_id);
        let out = batches::append_group(&tx, group, rules, self.evaluations, now)?;
        tx.commit()?;
        Ok(out)
    }

    fn heartbeat(&self, run_id: i64, now: Timestamp) -> StoreResult<RunFacts> {
        self.write(|tx| claim::heartbeat(tx, run_id, now))
    }

    fn facts(&self, run_id: i64) -> StoreResult<RunFacts> {
        self.read(|tx| runs::facts(tx, run_id))
    }

    fn record_firmware(
        &self,
        run_id: i64,
        components: &[FirmwareComponent],
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| artifacts::record_firmware(tx, run_id, components, now))
    }

    fn firmware(&self, run_id: i64) -> StoreResult<Vec<FirmwareComponent>> {
        self.read(|tx| artifacts::firmware(tx, run_id))
    }

    fn metrics_snapshot(&self) -> StoreResult<crate::store::MetricsSnapshot> {
        self.read(|tx| metrics::snapshot(tx))
    }

    fn webhook_enqueue(&self, urls: &[String], now: Timestamp) -> StoreResult<usize> {
        // The notifier asks twice a second: only take the writer (which
        // batch ingest waits on) when there is an event to look at.
        if !self.read(|tx| webhooks::has_new_events(tx))? {
            return Ok(0);
        }
        self.write(|tx| webhooks::enqueue(tx, urls, now))
    }

    fn webhooks_due(&self, now: Timestamp, limit: u32) -> StoreResult<Vec<DueDelivery>> {
        self.read(|tx| webhooks::due(tx, now, limit))
    }

    fn webhook_attempted(
        &self,
        id: i64,
        outcome: Result<(), &str>,
        next: Option<Timestamp>,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| webhooks::record_attempt(tx, id, outcome, next, now))
    }

    fn webhook_deliveries(&self, state: Option<&str>) -> StoreResult<Vec<WebhookDelivery>> {
        self.read(|tx| webhooks::list(tx, state))
    }

    fn webhook_retry(&self, id: i64, now: Timestamp) -> StoreResult<WebhookDelivery> {
        self.write(|tx| webhooks::retry(tx, id, now))
    }

    fn report_inputs(&self, run_id: i64, plots: bool) -> StoreResult<ReportInputs> {
        self.read(|tx| report::inputs(tx, run_id, plots))
    }

    fn reports_due(&self) -> StoreResult<Vec<i64>> {
        self.read(|tx| report::due(tx))
    }

    fn record_report(
        &self,
        artifacts: &[NewArtifact],
        rendered_at: RunState,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| report::record(tx, artifacts, rendered_at, now))
    }

    fn record_artifact(&self, artifact: &NewArtifact, now: Timestamp) -> StoreResult<ArtifactInfo> {
        self.write(|tx| artifacts::record_artifact(tx, artifact, now))
    }

    fn stage_plan(&self, run_id: i64) -> StoreResult<Vec<common::wire::StagePlan>> {
        self.read(|tx| {
            runs::state_of(tx, run_id)?;
            claim::stage_plan(tx, run_id)
        })
    }

    fn record_agent_artifact(
        &self,
        artifact: &NewArtifact,
        now: Timestamp,
    ) -> StoreResult<ArtifactInfo> {
        self.write(|tx| artifacts::record_agent_artifact(tx, artifact, now))
    }

    fn artifact_path_known(&self, path: &str) -> StoreResult<bool> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT EXISTS(SELECT 1 FROM artifacts WHERE path = ?1)",
                [path],
                |r| r.get(0),
            )?)
        })
    }

    fn check_agent_artifact(&self, run_id: i64) -> StoreResult<()> {
        self.read(|tx| artifacts::check_agent_artifact(tx, run_id))
    }

    fn latest_artifact(&self, run_id: i64, kind: &str) -> StoreResult<Option<ArtifactInfo>> {
        self.read(|tx| artifacts::latest_artifact(tx, run_id, kind))
    }

    fn set_hold_key(
        &self,
        run_id: i64,
        public_key: &str,
        key_artifact: &NewArtifact,
        now: Timestamp,
    ) -> StoreResult<RunFacts> {
        self.write(|tx| holds::set_hold_key(tx, run_id, public_key, key_artifact, now))
    }

    fn prune_candidates(&self, cutoff: Timestamp) -> StoreResult<Vec<String>> {
        self.read(|tx| artifacts::prune_candidates(tx, cutoff))
    }

    fn mark_pruned(&self, path: &str, cutoff: Timestamp, now: Timestamp) -> StoreResult<bool> {
        self.write(|tx| artifacts::mark_pruned(tx, path, cutoff, now))
    }

    fn agent_event(
        &self,
        run_id: i64,
        level: EventLevel,
        kind: EventKind,
        message: &str,
        now: Timestamp,
    ) -> StoreResult<()> {
        self.write(|tx| {
            let (_, host_id) = runs::open_state_of(tx, run_id)?;
            let event = NewEvent {
                run_id: Some(run_id),
                host_id: Some(host_id),
                level,
                kind,
                message: message.to_string(),
                data: None,
            };
            insert_event(tx, &event, now)
        })
    }

    fn hold_ssh_port(&self, run_id: i64) -> StoreResult<Option<u16>> {
        self.read(|tx| {
            Ok(tx.query_row(
                "SELECT hold_ssh_port FROM runs WHERE id = ?1",
                [run_id],
                |r| r.get(0),
            )?)
        })
    }

    fn report_hold_ip(
        &self,
        run_id: i64,
        report: &HoldReport,
        now: Timestamp,
    ) -> StoreResult<RunFacts> {
        self.write(|tx| holds::report_hold_ip(tx, run_id, report, now))
    }

    fn complete(
        &self,
        run_id: i64,
        count: &common::wire::RunComplete,
        now: Timestamp,
    ) -> StoreResult<(u64, RunFacts)> {
        self.write(|tx| claim::complete(tx, run_id, count, now))
    }

    fn expire_silent_agents(&self, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>> {
        self.write(|tx| sweep::expire_silent(tx, cutoff, now))
    }

    fn expire_holds(&self, cutoff: Timestamp, now: Timestamp) -> StoreResult<Vec<i64>> {
        self.write(|tx| sweep::expire_holds(tx, cutoff, now))
    }

    fn row_counts(&self) -> StoreResult<RowCounts> {
        self.read(|tx| {
            let mut out = Vec::new();
            for t in TABLES {
                let n: i64 =
                    tx.query_row(&format!("SELECT COUNT(*) FROM {t}"), [], |r| r.get(0))?;
                out.push((t.to_string(), n));
            }
            Ok(RowCounts(out))
        })
    }
}
