-- Retention of the payment tables (docs/payments.md#retention). A payment request is deleted with its payees in
-- one statement (the foreign key now cascades), once it expired more than the retention ago and none of its payees
-- is held or waiting on a refund; a node deletes its own claims the same way. Each condition gets an index, so a
-- batch of deletes finds its rows without scanning the table.
ALTER TABLE payment_payees DROP CONSTRAINT payment_payees_request_id_fkey;
ALTER TABLE payment_payees
    ADD CONSTRAINT payment_payees_request_id_fkey FOREIGN KEY (request_id) REFERENCES payment_requests (id)
    ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS payment_requests_expires_at ON payment_requests (expires_at);
CREATE INDEX IF NOT EXISTS payment_claims_expires_at ON payment_claims (expires_at);
CREATE INDEX IF NOT EXISTS refunds_settled ON refunds (updated_at) WHERE state IN ('paid', 'failed');
