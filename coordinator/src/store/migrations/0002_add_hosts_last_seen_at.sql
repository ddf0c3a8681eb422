-- Seed 0002: host-mode agent heartbeats.
ALTER TABLE hosts ADD COLUMN last_seen_at TIMESTAMP;
