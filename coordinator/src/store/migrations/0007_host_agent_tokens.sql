-- Host mode: a host-mode agent authenticates with its host's token, stored
-- only as SHA-256 hex ('' = none issued). Heartbeats set hosts.last_seen_at.
ALTER TABLE hosts ADD COLUMN host_token_hash TEXT NOT NULL DEFAULT '';
CREATE INDEX idx_hosts_host_token_hash ON hosts(host_token_hash);
