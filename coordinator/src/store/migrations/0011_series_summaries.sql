-- Per-series summaries kept by the batch insert in the same transaction, so
-- a report of a long soak reads thousands of rows instead of millions:
-- series_stats: count, min, max, sum, first/last time and last value of
-- every (run, kind, key); series_rollups: the same per 10 s bucket for the
-- plotted kinds (temp, power, fan, psu_volt). Times are Unix milliseconds.
CREATE TABLE series_stats (
    run_id     INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind       TEXT NOT NULL,
    key        TEXT NOT NULL,
    unit       TEXT NOT NULL,
    n          INTEGER NOT NULL,
    lo         REAL NOT NULL,
    hi         REAL NOT NULL,
    total      REAL NOT NULL,
    first_ms   INTEGER NOT NULL,
    last_ms    INTEGER NOT NULL,
    last_value REAL NOT NULL,
    PRIMARY KEY (run_id, kind, key)
) WITHOUT ROWID;

CREATE TABLE series_rollups (
    run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    kind      TEXT NOT NULL,
    key       TEXT NOT NULL,
    bucket_ms INTEGER NOT NULL,
    n         INTEGER NOT NULL,
    lo        REAL NOT NULL,
    hi        REAL NOT NULL,
    total     REAL NOT NULL,
    PRIMARY KEY (run_id, kind, key, bucket_ms)
) WITHOUT ROWID;

-- Existing measurements (a one-time pass over the table).
INSERT INTO series_stats (run_id, kind, key, unit, n, lo, hi, total, first_ms, last_ms, last_value)
SELECT run_id, kind, key, COALESCE(MAX(unit), ''), COUNT(*), MIN(value), MAX(value), SUM(value),
       CAST(round((julianday(MIN(ts)) - 2440587.5) * 86400000) AS INTEGER),
       CAST(round((julianday(MAX(ts)) - 2440587.5) * 86400000) AS INTEGER),
       (SELECT m2.value FROM measurements m2
         WHERE m2.run_id = m.run_id AND m2.kind = m.kind AND m2.key = m.key AND m2.value IS NOT NULL
         ORDER BY m2.ts DESC, m2.id DESC LIMIT 1)
FROM measurements m WHERE value IS NOT NULL GROUP BY run_id, kind, key;

INSERT INTO series_rollups (run_id, kind, key, bucket_ms, n, lo, hi, total)
SELECT run_id, kind, key,
       CAST(round((julianday(ts) - 2440587.5) * 86400000) AS INTEGER) / 10000 * 10000 AS b,
       COUNT(*), MIN(value), MAX(value), SUM(value)
FROM measurements WHERE value IS NOT NULL AND kind IN ('temp', 'power', 'fan', 'psu_volt')
GROUP BY run_id, kind, key, b;

-- How many samples each frozen threshold judged and how many breached it,
-- kept with the evaluations (the run page and report read these instead of
-- counting millions of threshold_evaluations rows).
CREATE TABLE threshold_counts (
    threshold_id INTEGER PRIMARY KEY REFERENCES thresholds(id) ON DELETE CASCADE,
    evaluated    INTEGER NOT NULL,
    breaches     INTEGER NOT NULL
);

INSERT INTO threshold_counts (threshold_id, evaluated, breaches)
SELECT threshold_id, COUNT(*), SUM(passed = 0) FROM threshold_evaluations GROUP BY threshold_id;
