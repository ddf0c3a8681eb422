-- Seed 0003: 1 = skip badblocks + wipe probe.
ALTER TABLE runs ADD COLUMN non_destructive INTEGER NOT NULL DEFAULT 0;
