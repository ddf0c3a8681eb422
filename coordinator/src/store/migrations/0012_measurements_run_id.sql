-- A run's measurements in id order, for GET /runs/{id}/measurements: a page
-- after a cursor is a range read. With only the seed's (run_id, kind, ts)
-- index, every page sorted all of the run's rows past the cursor, so paging
-- a 10-million-sample soak took about a second a page.
CREATE INDEX idx_measurements_run_id ON measurements(run_id, id);
