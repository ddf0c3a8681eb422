-- Seed 0004: per-disk / per-NIC detail within a stage.
CREATE TABLE sub_steps (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage_name   TEXT NOT NULL,
    ordinal      INTEGER NOT NULL,
    name         TEXT NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',
    started_at   TIMESTAMP,
    completed_at TIMESTAMP,
    summary_json TEXT NOT NULL DEFAULT '{}',
    UNIQUE (run_id, stage_name, ordinal)
);
CREATE INDEX idx_sub_steps_run ON sub_steps(run_id, stage_name, ordinal);
