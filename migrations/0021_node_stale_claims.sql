-- A node releases the claims a dead process left held (docs/payments.md#single-use-claims): every node process
-- looks for claims `claimed` longer than NODE_PAYMENT_STALE_S once a minute, so the held ones get their own small
-- index instead of a scan of every claim the retention keeps.
CREATE INDEX IF NOT EXISTS payment_claims_held ON payment_claims (claimed_at) WHERE state = 'claimed';
