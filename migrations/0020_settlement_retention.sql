-- Retention reaches the tables of paid answers (docs/payments.md#retention). An OpenAI edge refund link names its
-- payment request and goes with it (it was the one reference that would have refused the request's deletion);
-- a payee's statement is deleted once its payee is, by its own rule, so an index finds the old ones.
ALTER TABLE edge_refund_links DROP CONSTRAINT edge_refund_links_request_id_fkey;
ALTER TABLE edge_refund_links
    ADD CONSTRAINT edge_refund_links_request_id_fkey FOREIGN KEY (request_id) REFERENCES payment_requests (id)
    ON DELETE CASCADE;
CREATE INDEX IF NOT EXISTS payment_settlements_created_at ON payment_settlements (created_at);
