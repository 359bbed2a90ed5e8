-- Federation settlement (issue 12, part 5; docs/federation.md#settlement).
-- A provider row keeps the payment hash of the invoice it issued for the award from its own wallet: one invoice
-- per award, and one award per invoice (unique), so a proof paid for one award never runs another. The job moves
-- awarded → running only with the proof of that hash, exactly once across replicas.
ALTER TABLE federation_jobs
    ADD COLUMN payment_hash text UNIQUE CHECK (payment_hash ~ '^[0-9a-f]{64}$');
