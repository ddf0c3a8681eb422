//! The SQLite schema: embedded migrations applied in order, connection
//! settings, and the list of tables the row counts report.
//!
//! Never: edit or remove a shipped migration; append a new one.

use std::time::Duration;

use rusqlite::{Connection, TransactionBehavior};

use common::time::Timestamp;

use crate::store::{StoreError, StoreResult};

/// Migrations in the order they are applied. Append only: a shipped entry is
/// never edited or removed.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../migrations/0001_init.sql")),
    (
        "0002_add_hosts_last_seen_at",
        include_str!("../migrations/0002_add_hosts_last_seen_at.sql"),
    ),
    (
        "0003_add_runs_non_destructive",
        include_str!("../migrations/0003_add_runs_non_destructive.sql"),
    ),
    (
        "0004_add_sub_steps",
        include_str!("../migrations/0004_add_sub_steps.sql"),
    ),
    (
        "0005_profiles_thresholds_firmware",
        include_str!("../migrations/0005_profiles_thresholds_firmware.sql"),
    ),
    (
        "0006_vetting_protocol",
        include_str!("../migrations/0006_vetting_protocol.sql"),
    ),
    (
        "0007_host_agent_tokens",
        include_str!("../migrations/0007_host_agent_tokens.sql"),
    ),
    (
        "0008_hold_ssh_port",
        include_str!("../migrations/0008_hold_ssh_port.sql"),
    ),
    (
        "0009_report_state",
        include_str!("../migrations/0009_report_state.sql"),
    ),
    (
        "0010_webhooks",
        include_str!("../migrations/0010_webhooks.sql"),
    ),
    (
        "0011_series_summaries",
        include_str!("../migrations/0011_series_summaries.sql"),
    ),
    (
        "0012_measurements_run_id",
        include_str!("../migrations/0012_measurements_run_id.sql"),
    ),
    (
        "0013_claim_secrets",
        include_str!("../migrations/0013_claim_secrets.sql"),
    ),
];

pub(super) const TABLES: &[&str] = &[
    "hosts",
    "runs",
    "stages",
    "sub_steps",
    "measurements",
    "artifacts",
    "spec_diffs",
    "thresholds",
    "threshold_evaluations",
    "firmware_snapshots",
    "events",
    "settings",
    "batches",
    "webhook_deliveries",
    "series_stats",
    "series_rollups",
    "threshold_counts",
];

pub(super) fn configure(conn: &Connection) -> rusqlite::Result<()> {
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // An acknowledged batch survives a power cut: the WAL is synced at
    // every commit, before the answer goes out.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(())
}

/// Applies every migration not yet recorded in `schema_migrations`, all in
/// one exclusive transaction.
pub fn migrate(conn: &mut Connection, now: Timestamp) -> StoreResult<Vec<String>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at TIMESTAMP NOT NULL)",
    )?;
    let mut applied = Vec::new();
    for (name, sql) in MIGRATIONS {
        let done: bool = tx.query_row(
            "SELECT EXISTS(SELECT 1 FROM schema_migrations WHERE name = ?1)",
            [name],
            |r| r.get(0),
        )?;
        if done {
            continue;
        }
        tx.execute_batch(sql)
            .map_err(|source| StoreError::Migration {
                name: name.to_string(),
                source: source.into(),
            })?;
        tx.execute(
            "INSERT INTO schema_migrations (name, applied_at) VALUES (?1, ?2)",
            (name, now.to_string()),
        )?;
        applied.push(name.to_string());
    }
    tx.commit()?;
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_syncs_each_commit() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::open(dir.path().join("t.db")).unwrap();
        configure(&conn).unwrap();
        let level: i64 = conn
            .query_row("PRAGMA synchronous", [], |r| r.get(0))
            .unwrap();
        assert_eq!(level, 2, "synchronous=FULL");
    }
}
