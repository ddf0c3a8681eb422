//! The janitor: deletes artifact files past the retention period.
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

/// Prunes once an hour until stopped.
pub async fn run(store: Arc<dyn Store>, retention: Duration) {
    let mut tick = tokio::time::interval(Duration::from_secs(3600));
    loop {
        tick.tick().await;
        let store = store.clone();
        match tokio::task::spawn_blocking(move || prune(&*store, retention, now())).await {
            Ok(Ok(files)) if !files.is_empty() => {
                tracing::info!(count = files.len(), "pruned artifact files")
            }
            Ok(Err(e)) => tracing::error!(error = %e, "janitor pass failed"),
            Err(e) => tracing::error!(error = %e, "janitor pass panicked"),
            _ => {}
        }
    }
}
