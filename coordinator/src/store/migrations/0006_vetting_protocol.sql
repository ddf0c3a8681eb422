-- Vetting (Rust) additions, additive only: accepted batch numbers, claim
-- and heartbeat bookkeeping, hold state, content-addressed artifacts.
CREATE TABLE batches (
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    seq          INTEGER NOT NULL,
    sample_count INTEGER NOT NULL,
    received_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (run_id, seq)
) WITHOUT ROWID;

ALTER TABLE runs ADD COLUMN boot_id TEXT;
ALTER TABLE runs ADD COLUMN claimed_at TIMESTAMP;
ALTER TABLE runs ADD COLUMN last_heartbeat_at TIMESTAMP;
ALTER TABLE runs ADD COLUMN require_all_disks INTEGER NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN hold_public_key TEXT;
ALTER TABLE runs ADD COLUMN held_at TIMESTAMP;
ALTER TABLE runs ADD COLUMN release_power TEXT;
ALTER TABLE runs ADD COLUMN samples_reported INTEGER;

ALTER TABLE artifacts ADD COLUMN blake3 TEXT NOT NULL DEFAULT '';
ALTER TABLE artifacts ADD COLUMN created_at TIMESTAMP;
ALTER TABLE artifacts ADD COLUMN pruned_at TIMESTAMP;

CREATE INDEX idx_events_run ON events(run_id, id);
