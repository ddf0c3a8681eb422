-- Core schema (seed 0001): hosts, runs, stages, measurements, artifacts,
-- spec_diffs, events, settings.
CREATE TABLE hosts (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    name               TEXT NOT NULL UNIQUE,
    mac                TEXT NOT NULL UNIQUE,
    wol_broadcast_ip   TEXT NOT NULL,
    wol_port           INTEGER NOT NULL DEFAULT 9,
    expected_spec_yaml TEXT NOT NULL,
    pdu_config_json    TEXT,
    ipmi_config_json   TEXT,
    notes              TEXT NOT NULL DEFAULT '',
    created_at         TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    updated_at         TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP
);

CREATE TABLE runs (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    host_id             INTEGER NOT NULL REFERENCES hosts(id) ON DELETE CASCADE,
    state               TEXT NOT NULL,
    result              TEXT,
    failed_stage        TEXT,
    next_boot_target    TEXT,
    agent_token_hash    TEXT NOT NULL,
    started_at          TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
    completed_at        TIMESTAMP,
    report_path         TEXT,
    hold_ip             TEXT,
    override_flags_json TEXT
);
CREATE INDEX idx_runs_host ON runs(host_id);
CREATE INDEX idx_runs_state ON runs(state);

CREATE TABLE stages (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id       INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    ordinal      INTEGER NOT NULL,
    state        TEXT NOT NULL,
    started_at   TIMESTAMP,
    completed_at TIMESTAMP,
    summary_json TEXT
);
CREATE INDEX idx_stages_run_ordinal ON stages(run_id, ordinal);

CREATE TABLE measurements (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage_id INTEGER REFERENCES stages(id) ON DELETE SET NULL,
    ts       TIMESTAMP NOT NULL,
    kind     TEXT NOT NULL,
    key      TEXT NOT NULL,
    value    REAL,
    unit     TEXT
);
CREATE INDEX idx_measurements_run_kind_ts ON measurements(run_id, kind, ts);

CREATE TABLE artifacts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage_id   INTEGER REFERENCES stages(id) ON DELETE SET NULL,
    kind       TEXT NOT NULL,
    path       TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    size_bytes INTEGER NOT NULL
);

CREATE TABLE spec_diffs (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id   INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    field    TEXT NOT NULL,
    expected TEXT,
    actual   TEXT,
    severity TEXT NOT NULL,
    ignored  INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE events (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id    INTEGER REFERENCES runs(id) ON DELETE CASCADE,
    host_id   INTEGER REFERENCES hosts(id) ON DELETE CASCADE,
    ts        TIMESTAMP NOT NULL,
    level     TEXT NOT NULL,
    kind      TEXT NOT NULL,
    message   TEXT NOT NULL,
    data_json TEXT
);

CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
