-- Peers: per announcement ("<kind>:<d>" -> {"id", "created_at", "expires_at"}) so the latest one wins across
-- replicas and restarts (NIP-01 order) and a reloaded peer's freshness is known (fedai.store.peers).
ALTER TABLE peers ADD COLUMN announcements jsonb NOT NULL DEFAULT '{}'::jsonb;
