//! The backend-neutral store suite (`testkit::store_suite`) on SQLite: a
//! fresh database file for every check.

use common::time::Timestamp;
use coordinator::store::sqlite::SqliteStore;

#[test]
fn the_sqlite_store_keeps_the_store_contract() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    testkit::store_suite::run_all(|| {
        n += 1;
        SqliteStore::open(
            &dir.path().join(format!("suite-{n}.db")),
            Timestamp::from_unix_millis(1_800_000_000_000),
        )
        .unwrap()
    });
    assert_eq!(n, testkit::store_suite::CHECKS.len());
}
