-- The run state the stored report (runs.report_path) was rendered at: a
-- report is due again when the run has moved on since.
ALTER TABLE runs ADD COLUMN report_state TEXT;
