//! The SQLite schema matches the seed document: every table, column, type,
//! NOT NULL, default, UNIQUE, foreign key action and named index. Our own
//! migrations only add.

use common::time::Timestamp;
use coordinator::store::sqlite::{migrate, SqliteStore, MIGRATIONS};
use rusqlite::Connection;

/// (column, type, not null, default, primary key) per the seed.
type Col = (&'static str, &'static str, bool, Option<&'static str>, bool);

fn seed_tables() -> Vec<(&'static str, Vec<Col>)> {
    let pk = ("id", "INTEGER", false, None, true);
    vec![
        (
            "hosts",
            vec![
                pk,
                ("name", "TEXT", true, None, false),
                ("mac", "TEXT", true, None, false),
                ("wol_broadcast_ip", "TEXT", true, None, false),
                ("wol_port", "INTEGER", true, Some("9"), false),
                ("expected_spec_yaml", "TEXT", true, None, false),
                ("pdu_config_json", "TEXT", false, None, false),
                ("ipmi_config_json", "TEXT", false, None, false),
                ("notes", "TEXT", true, Some("''"), false),
                (
                    "created_at",
                    "TIMESTAMP",
                    true,
                    Some("CURRENT_TIMESTAMP"),
                    false,
                ),
                (
                    "updated_at",
                    "TIMESTAMP",
                    true,
                    Some("CURRENT_TIMESTAMP"),
                    false,
                ),
                ("last_seen_at", "TIMESTAMP", false, None, false),
            ],
        ),
        (
            "runs",
            vec![
                pk,
                ("host_id", "INTEGER", true, None, false),
                ("state", "TEXT", true, None, false),
                ("result", "TEXT", false, None, false),
                ("failed_stage", "TEXT", false, None, false),
                ("next_boot_target", "TEXT", false, None, false),
                ("agent_token_hash", "TEXT", true, None, false),
                (
                    "started_at",
                    "TIMESTAMP",
                    true,
                    Some("CURRENT_TIMESTAMP"),
                    false,
                ),
                ("completed_at", "TIMESTAMP", false, None, false),
                ("report_path", "TEXT", false, None, false),
                ("hold_ip", "TEXT", false, None, false),
                ("override_flags_json", "TEXT", false, None, false),
                ("non_destructive", "INTEGER", true, Some("0"), false),
                ("profile", "TEXT", true, Some("'quick'"), false),
            ],
        ),
        (
            "stages",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("name", "TEXT", true, None, false),
                ("ordinal", "INTEGER", true, None, false),
                ("state", "TEXT", true, None, false),
                ("started_at", "TIMESTAMP", false, None, false),
                ("completed_at", "TIMESTAMP", false, None, false),
                ("summary_json", "TEXT", false, None, false),
            ],
        ),
        (
            "sub_steps",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("stage_name", "TEXT", true, None, false),
                ("ordinal", "INTEGER", true, None, false),
                ("name", "TEXT", true, None, false),
                ("state", "TEXT", true, Some("'pending'"), false),
                ("started_at", "TIMESTAMP", false, None, false),
                ("completed_at", "TIMESTAMP", false, None, false),
                ("summary_json", "TEXT", true, Some("'{}'"), false),
            ],
        ),
        (
            "measurements",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("stage_id", "INTEGER", false, None, false),
                ("ts", "TIMESTAMP", true, None, false),
                ("kind", "TEXT", true, None, false),
                ("key", "TEXT", true, None, false),
                ("value", "REAL", false, None, false),
                ("unit", "TEXT", false, None, false),
            ],
        ),
        (
            "artifacts",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("stage_id", "INTEGER", false, None, false),
                ("kind", "TEXT", true, None, false),
                ("path", "TEXT", true, None, false),
                ("sha256", "TEXT", true, None, false),
                ("size_bytes", "INTEGER", true, None, false),
            ],
        ),
        (
            "spec_diffs",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("field", "TEXT", true, None, false),
                ("expected", "TEXT", false, None, false),
                ("actual", "TEXT", false, None, false),
                ("severity", "TEXT", true, None, false),
                ("ignored", "INTEGER", true, Some("0"), false),
            ],
        ),
        (
            "thresholds",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("stage_name", "TEXT", true, None, false),
                ("kind", "TEXT", true, None, false),
                ("key", "TEXT", true, None, false),
                ("op", "TEXT", true, None, false),
                ("threshold", "REAL", true, None, false),
                ("nominal", "REAL", true, Some("0"), false),
                ("unit", "TEXT", true, Some("''"), false),
                ("severity", "TEXT", true, None, false),
                ("source", "TEXT", true, None, false),
            ],
        ),
        (
            "threshold_evaluations",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("threshold_id", "INTEGER", true, None, false),
                ("stage_name", "TEXT", true, None, false),
                ("kind", "TEXT", true, None, false),
                ("key", "TEXT", true, None, false),
                ("ts", "TIMESTAMP", true, None, false),
                ("observed", "REAL", true, None, false),
                ("passed", "INTEGER", true, None, false),
            ],
        ),
        (
            "firmware_snapshots",
            vec![
                pk,
                ("run_id", "INTEGER", true, None, false),
                ("component", "TEXT", true, None, false),
                ("identifier", "TEXT", true, None, false),
                ("version", "TEXT", true, None, false),
                ("vendor", "TEXT", true, Some("''"), false),
                ("raw_json", "TEXT", true, Some("'{}'"), false),
            ],
        ),
        (
            "events",
            vec![
                pk,
                ("run_id", "INTEGER", false, None, false),
                ("host_id", "INTEGER", false, None, false),
                ("ts", "TIMESTAMP", true, None, false),
                ("level", "TEXT", true, None, false),
                ("kind", "TEXT", true, None, false),
                ("message", "TEXT", true, None, false),
                ("data_json", "TEXT", false, None, false),
            ],
        ),
        (
            "settings",
            vec![
                ("key", "TEXT", false, None, true),
                ("value", "TEXT", true, None, false),
            ],
        ),
    ]
}

fn columns(db: &Connection, table: &str) -> Vec<(String, String, bool, Option<String>, bool)> {
    db.prepare(&format!("PRAGMA table_info({table})"))
        .unwrap()
        .query_map([], |r| {
            Ok((
                r.get(1)?,
                r.get(2)?,
                r.get::<_, i64>(3)? == 1,
                r.get(4)?,
                r.get::<_, i64>(5)? > 0,
            ))
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn open() -> (tempfile::TempDir, Connection) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vetting.db");
    SqliteStore::open(&path, Timestamp::from_unix_millis(0)).unwrap();
    let db = Connection::open(&path).unwrap();
    (dir, db)
}

#[test]
fn seed_columns_are_exact_and_ours_only_add() {
    let (_dir, db) = open();
    for (table, want) in seed_tables() {
        let got = columns(&db, table);
        assert!(got.len() >= want.len(), "{table}: missing columns");
        for (i, (name, ty, notnull, default, pk)) in want.iter().enumerate() {
            let g = &got[i];
            assert_eq!(
                (g.0.as_str(), g.1.as_str(), g.2, g.3.as_deref(), g.4),
                (*name, *ty, *notnull, *default, *pk),
                "{table}.{name}"
            );
        }
        // Columns we added after the seed's: nullable or with a default, so
        // rows written by the seed's schema stay valid.
        for extra in &got[want.len()..] {
            assert!(
                !extra.2 || extra.3.is_some(),
                "{table}.{} added NOT NULL without default",
                extra.0
            );
        }
    }
    let blake3 = columns(&db, "artifacts")
        .into_iter()
        .find(|c| c.0 == "blake3");
    assert!(blake3.is_some(), "artifacts.blake3 next to sha256");
}

#[test]
fn seed_indexes_uniques_and_foreign_keys() {
    let (_dir, db) = open();
    let indexes: Vec<(String, String)> = db
        .prepare(
            "SELECT name, tbl_name FROM sqlite_master WHERE type = 'index' AND name LIKE 'idx_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let index_cols = |name: &str| -> Vec<String> {
        db.prepare(&format!("PRAGMA index_info({name})"))
            .unwrap()
            .query_map([], |r| r.get(2))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    for (name, table, cols) in [
        ("idx_runs_host", "runs", vec!["host_id"]),
        ("idx_runs_state", "runs", vec!["state"]),
        (
            "idx_stages_run_ordinal",
            "stages",
            vec!["run_id", "ordinal"],
        ),
        (
            "idx_sub_steps_run",
            "sub_steps",
            vec!["run_id", "stage_name", "ordinal"],
        ),
        (
            "idx_measurements_run_kind_ts",
            "measurements",
            vec!["run_id", "kind", "ts"],
        ),
        ("idx_thresholds_run", "thresholds", vec!["run_id"]),
        (
            "idx_thresholds_kind",
            "thresholds",
            vec!["run_id", "stage_name", "kind"],
        ),
        (
            "idx_threshold_evals_run",
            "threshold_evaluations",
            vec!["run_id", "passed"],
        ),
        (
            "idx_firmware_run",
            "firmware_snapshots",
            vec!["run_id", "component"],
        ),
    ] {
        assert!(
            indexes.contains(&(name.to_string(), table.to_string())),
            "missing index {name} on {table}"
        );
        assert_eq!(index_cols(name), cols, "{name}");
    }
    // UNIQUE constraints of the seed.
    let unique_sets = |table: &str| -> Vec<Vec<String>> {
        let names: Vec<(String, bool)> = db
            .prepare(&format!("PRAGMA index_list({table})"))
            .unwrap()
            .query_map([], |r| Ok((r.get(1)?, r.get::<_, i64>(2)? == 1)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        names
            .into_iter()
            .filter(|(_, u)| *u)
            .map(|(n, _)| index_cols(&n))
            .collect()
    };
    assert!(unique_sets("hosts").contains(&vec!["name".to_string()]));
    assert!(unique_sets("hosts").contains(&vec!["mac".to_string()]));
    assert!(unique_sets("sub_steps").contains(&vec![
        "run_id".to_string(),
        "stage_name".into(),
        "ordinal".into()
    ]));
    // Foreign keys: CASCADE everywhere, SET NULL for stage_id.
    for (table, col, parent, action) in [
        ("runs", "host_id", "hosts", "CASCADE"),
        ("stages", "run_id", "runs", "CASCADE"),
        ("sub_steps", "run_id", "runs", "CASCADE"),
        ("measurements", "run_id", "runs", "CASCADE"),
        ("measurements", "stage_id", "stages", "SET NULL"),
        ("artifacts", "run_id", "runs", "CASCADE"),
        ("artifacts", "stage_id", "stages", "SET NULL"),
        ("spec_diffs", "run_id", "runs", "CASCADE"),
        ("thresholds", "run_id", "runs", "CASCADE"),
        ("threshold_evaluations", "run_id", "runs", "CASCADE"),
        (
            "threshold_evaluations",
            "threshold_id",
            "thresholds",
            "CASCADE",
        ),
        ("firmware_snapshots", "run_id", "runs", "CASCADE"),
        ("events", "run_id", "runs", "CASCADE"),
        ("events", "host_id", "hosts", "CASCADE"),
    ] {
        let fks: Vec<(String, String, String)> = db
            .prepare(&format!("PRAGMA foreign_key_list({table})"))
            .unwrap()
            .query_map([], |r| Ok((r.get(2)?, r.get(3)?, r.get(6)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert!(
            fks.contains(&(parent.to_string(), col.to_string(), action.to_string())),
            "{table}.{col} → {parent} ON DELETE {action}: {fks:?}"
        );
    }
}

#[test]
fn pragmas_and_migration_ledger() {
    let (dir, db) = open();
    let mode: String = db
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    let names: Vec<String> = db
        .prepare("SELECT name FROM schema_migrations ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let want: Vec<String> = MIGRATIONS.iter().map(|(n, _)| n.to_string()).collect();
    assert_eq!(names, want);
    assert!(names[..5]
        .iter()
        .zip([
            "0001_init",
            "0002_add_hosts_last_seen_at",
            "0003_add_runs_non_destructive",
            "0004_add_sub_steps",
            "0005_profiles_thresholds_firmware"
        ])
        .all(|(a, b)| a == b));
    // Re-opening applies nothing twice.
    let mut again = Connection::open(dir.path().join("vetting.db")).unwrap();
    assert_eq!(
        migrate(&mut again, Timestamp::from_unix_millis(1)).unwrap(),
        Vec::<String>::new()
    );
    // Foreign keys are enforced on the store's connections.
    use coordinator::store::Store;
    let store = SqliteStore::open(
        &dir.path().join("vetting.db"),
        Timestamp::from_unix_millis(2),
    )
    .unwrap();
    let err = store
        .record_event(
            &coordinator::store::NewEvent {
                run_id: None,
                host_id: Some(999),
                level: common::event::EventLevel::Info,
                kind: common::event::EventKind::HostEdited,
                message: "dangling host".into(),
                data: None,
            },
            Timestamp::from_unix_millis(3),
        )
        .unwrap_err();
    assert!(err.to_string().contains("FOREIGN KEY"), "{err}");
}

#[test]
fn a_failing_migration_leaves_the_database_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vetting.db");
    let mut db = Connection::open(&path).unwrap();
    // A table in the way of 0001 makes it fail; nothing may be recorded.
    db.execute_batch("CREATE TABLE hosts (x INTEGER)").unwrap();
    let err = migrate(&mut db, Timestamp::from_unix_millis(0)).unwrap_err();
    assert!(err.to_string().contains("0001_init"), "{err}");
    let ledger: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM sqlite_master WHERE name = 'schema_migrations'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(ledger, 0, "the whole migration transaction rolled back");
}
