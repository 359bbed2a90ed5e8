-- Scheduled pruning (fedai.store.retention): each table's retention condition gets an index, so a batch of
-- deletes finds its rows without scanning the table. nodes (updated_at), node_manifests (updated_at) and
-- node_health (updated_at) have theirs already.
CREATE INDEX IF NOT EXISTS quotes_expires_at ON quotes (expires_at);
CREATE INDEX IF NOT EXISTS chains_created_at ON chains (created_at);
CREATE INDEX IF NOT EXISTS dispatch_attempts_created_at ON dispatch_attempts (created_at);
