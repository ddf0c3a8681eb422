//! The janitor: deletes artifact files past the retention period, and
//! sweeps what a crash left in the artifact directory: upload temp files
//! and files no row names (a hold key made while its run was released, a
//! write cut between file and row), each only when older than an hour.
//!
//! A content-addressed file goes only when every row that references it is
//! past retention and none is the hold key of a held run. Rows are never
//! deleted (they get `pruned_at`); each pruned row is a `prune` event.
//! Never: delete a file while an artifact write is between its file and its
//! row (both hold [`crate::lifecycle::artifact_files`]).

use std::sync::Arc;
use std::time::Duration;

use common::time::Timestamp;

use crate::lifecycle::{artifact_files, now};
use crate::store::{Store, StoreError};

/// One pass at time `now`: returns the files deleted.
pub fn prune(
    store: &dyn Store,
    retention: Duration,
    now: Timestamp,
) -> Result<Vec<String>, StoreError> {
    let cutoff = now.plus_millis(-(retention.as_millis().min(i64::MAX as u128) as i64));
    let _files = artifact_files();
    let mut deleted = Vec::new();
    for path in store.prune_candidates(cutoff)? {
        if !store.mark_pruned(&path, cutoff, now)? {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => deleted.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => deleted.push(path),
            Err(e) => {
                tracing::error!(path, error = %e, "pruned artifact file could not be deleted")
            }
        }
    }
    Ok(deleted)
}

/// What a crash may leave is swept only when older than this.
pub const LEFTOVER_AGE: Duration = Duration::from_secs(3600);

/// Deletes, in `dir`, upload temp files and files no artifact row names,
/// when their last change is older than [`LEFTOVER_AGE`] at `now`; returns
/// the files deleted.
pub fn sweep_leftovers(
    store: &dyn Store,
    dir: &std::path::Path,
    now: std::time::SystemTime,
) -> Result<Vec<String>, StoreError> {
    let _files = artifact_files();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut deleted = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > LEFTOVER_AGE);
        if !old || !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        let text = path.display().to_string();
        let leftover = (name.starts_with(".upload-") && name.ends_with(".tmp"))
            || !store.artifact_path_known(&text)?;
        if leftover {
            match std::fs::remove_file(&path) {
                Ok(()) => deleted.push(text),
                Err(e) => {
                    tracing::error!(path = text, error = %e, "leftover file could not be deleted")
                }
            }
        }
    }
    Ok(deleted)
}

/// Sweeps leftovers and (with a retention) prunes, once an hour until stopped.
pub async fn run(store: Arc<dyn Store>, retention: Option<Duration>, dir: std::path::PathBuf) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let (store, dir) = (store.clone(), dir.clone());
        let pass = tokio::task::spawn_blocking(move || {
            let swept = sweep_leftovers(&*store, &dir, std::time::SystemTime::now())?;
            let pruned = match retention {
                Some(r) => prune(&*store, r, now())?,
                None => Vec::new(),
            };
            Ok::<_, StoreError>((swept, pruned))
        });
        match pass.await {
            Ok(Ok((swept, pruned))) => {
                if !swept.is_empty() {
                    tracing::info!(count = swept.len(), "swept leftover files");
                }
                if !pruned.is_empty() {
                    tracing::info!(count = pruned.len(), "pruned artifact files");
                }
            }
            Ok(Err(e)) => tracing::error!(error = %e, "janitor pass failed"),
            Err(e) => tracing::error!(error = %e, "janitor pass panicked"),
        }
    }
}
