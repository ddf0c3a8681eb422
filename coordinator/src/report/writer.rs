//! Writes reports: when a run enters FailedHolding (the engineer at the
//! held host needs it) and at every terminal state, a background pass
//! renders `report.json` and `report.html` for each run whose stored report is missing or
//! older than its state, stores it as artifacts `report` and `report_html`
//! and sets `runs.report_path` (to report.json).
//!
//! Never: render inside a store transaction (the inputs are one read, the
//! file is written outside, the record is one short write), or call this
//! from an async worker (it blocks; use `spawn_blocking`).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::run_state::RunState;
use common::time::Timestamp;

use crate::config::Config;
use crate::lifecycle::{self, artifact_files, LifecycleError};
use crate::store::{NewArtifact, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] LifecycleError),
}

/// The current `report.json` of a run and the state it shows.
pub fn render_json(store: &dyn Store, run_id: i64) -> Result<(Vec<u8>, RunState), StoreError> {
    let inputs = store.report_inputs(run_id, false)?;
    let state = inputs.detail.run.state;
    Ok((super::to_json(&super::build(&inputs)), state))
}

/// The current `report.html` of a run.
pub fn render_html(store: &dyn Store, run_id: i64) -> Result<Vec<u8>, StoreError> {
    let inputs = store.report_inputs(run_id, true)?;
    Ok(super::html::render(&super::build(&inputs), &inputs.plots).into_bytes())
}

/// The current `report.json` and `report.html` of a run, from one read, and
/// the state they show.
pub fn render(store: &dyn Store, run_id: i64) -> Result<(Vec<u8>, Vec<u8>, RunState), StoreError> {
    let inputs = store.report_inputs(run_id, true)?;
    let state = inputs.detail.run.state;
    let report = super::build(&inputs);
    let html = super::html::render(&report, &inputs.plots).into_bytes();
    Ok((super::to_json(&report), html, state))
}

/// Renders and stores the reports of `run_id`; returns report.json's path.
pub fn write(
    store: &dyn Store,
    config: &Config,
    run_id: i64,
    now: Timestamp,
) -> Result<String, ReportError> {
    let (json, html, state) = render(store, run_id)?;
    // The files and their rows land together, never split by the janitor.
    let _files = artifact_files();
    let mut artifacts = Vec::new();
    for (kind, bytes) in [("report", &json), ("report_html", &html)] {
        let (path, digests) =
            lifecycle::write_content_addressed(&config.artifacts_dir(), bytes, 0o644)?;
        artifacts.push(NewArtifact {
            run_id,
            stage_ordinal: None,
            kind: kind.into(),
            path: path.display().to_string(),
            sha256: digests.sha256,
            blake3: digests.blake3,
            size_bytes: digests.size as i64,
        });
    }
    store.record_report(&artifacts, state, now)?;
    Ok(artifacts[0].path.clone())
}

/// How long a run whose report failed to render waits before the next try
/// (a full disk would otherwise log an error every second).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

/// One pass: writes every due report not in `skip`. A run that fails to
/// render is logged and returned in the second list; the others still get
/// theirs.
pub fn write_due(
    store: &dyn Store,
    config: &Config,
    now: Timestamp,
    skip: &HashSet<i64>,
) -> Result<(Vec<i64>, Vec<i64>), StoreError> {
    let (mut written, mut failed) = (Vec::new(), Vec::new());
    for run_id in store.reports_due()? {
        if skip.contains(&run_id) {
            continue;
        }
        match write(store, config, run_id, now) {
            Ok(path) => {
                tracing::info!(run_id, path, "report written");
                written.push(run_id);
            }
            Err(e) => {
                tracing::error!(run_id, error = %e, retry_in_s = RETRY_AFTER.as_secs(), "writing the report failed");
                failed.push(run_id);
            }
        }
    }
    Ok((written, failed))
}

/// The background writer: a pass every `period`; a run whose report failed
/// is retried after [`RETRY_AFTER`].
pub async fn run(store: Arc<dyn Store>, config: Arc<Config>, period: Duration) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff: HashMap<i64, std::time::Instant> = HashMap::new();
    loop {
        tick.tick().await;
        backoff.retain(|_, until| *until > std::time::Instant::now());
        let skip: HashSet<i64> = backoff.keys().copied().collect();
        let (store, config) = (store.clone(), config.clone());
        match tokio::task::spawn_blocking(move || {
            write_due(&*store, &config, lifecycle::now(), &skip)
        })
        .await
        {
            Ok(Ok((_, failed))) => {
                let until = std::time::Instant::now() + RETRY_AFTER;
                backoff.extend(failed.into_iter().map(|id| (id, until)));
            }
            Ok(Err(e)) => tracing::error!(error = %e, "finding due reports failed"),
            Err(e) => tracing::error!(error = %e, "report writer panicked"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    #[test]
    fn a_report_that_cannot_be_written_is_reported_and_then_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::for_data_dir(dir.path());
        let now = Timestamp::from_unix_millis(1_795_000_000_000);
        let store = SqliteStore::open(&config.db_path(), now).unwrap();
        let (run_id, _) = crate::lifecycle::tests::failed_run(&store, now);
        // A file where the artifacts directory should be: every write fails.
        std::fs::write(config.artifacts_dir(), b"not a directory").unwrap();
        let (written, failed) = write_due(&store, &config, now, &HashSet::new()).unwrap();
        assert_eq!((written, failed), (vec![], vec![run_id]));
        assert_eq!(store.reports_due().unwrap(), [run_id], "still due");
        let (written, failed) = write_due(&store, &config, now, &HashSet::from([run_id])).unwrap();
        assert!(
            written.is_empty() && failed.is_empty(),
            "skipped while backing off"
        );
        // The disk is back: the report lands and the run is no longer due.
        std::fs::remove_file(config.artifacts_dir()).unwrap();
        let (written, _) = write_due(&store, &config, now, &HashSet::new()).unwrap();
        assert_eq!(written, [run_id]);
        assert!(store.reports_due().unwrap().is_empty());
        assert!(store.run(run_id).unwrap().report_path.is_some());
    }
}
