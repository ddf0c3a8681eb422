-- A host's claim secret: its runs are claimed only by a claim that carries
-- it. Stored only as SHA-256 hex ('' = the host has none).
ALTER TABLE hosts ADD COLUMN claim_secret_hash TEXT NOT NULL DEFAULT '';
