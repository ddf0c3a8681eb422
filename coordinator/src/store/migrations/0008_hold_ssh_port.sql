-- The SSH port a held host's agent reported, so `vetctl run ssh` can print
-- the exact command. NULL: not reported (or no SSH server could be started).
ALTER TABLE runs ADD COLUMN hold_ssh_port INTEGER;
