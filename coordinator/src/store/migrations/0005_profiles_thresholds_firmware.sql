-- Seed 0005: run profiles, frozen thresholds and their evaluations,
-- firmware snapshots.
ALTER TABLE runs ADD COLUMN profile TEXT NOT NULL DEFAULT 'quick';

CREATE TABLE thresholds (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage_name TEXT NOT NULL,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    op         TEXT NOT NULL,
    threshold  REAL NOT NULL,
    nominal    REAL NOT NULL DEFAULT 0,
    unit       TEXT NOT NULL DEFAULT '',
    severity   TEXT NOT NULL,
    source     TEXT NOT NULL
);
CREATE INDEX idx_thresholds_run ON thresholds(run_id);
CREATE INDEX idx_thresholds_kind ON thresholds(run_id, stage_name, kind);

CREATE TABLE threshold_evaluations (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    threshold_id INTEGER NOT NULL REFERENCES thresholds(id) ON DELETE CASCADE,
    stage_name   TEXT NOT NULL,
    kind         TEXT NOT NULL,
    key          TEXT NOT NULL,
    ts           TIMESTAMP NOT NULL,
    observed     REAL NOT NULL,
    passed       INTEGER NOT NULL
);
CREATE INDEX idx_threshold_evals_run ON threshold_evaluations(run_id, passed);

CREATE TABLE firmware_snapshots (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    component  TEXT NOT NULL,
    identifier TEXT NOT NULL,
    version    TEXT NOT NULL,
    vendor     TEXT NOT NULL DEFAULT '',
    raw_json   TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX idx_firmware_run ON firmware_snapshots(run_id, component);
