-- Federation bounds (issue 9, parts 3 and 5).
-- What each job was bid for (the RFB's terms), so the provider refuses a submit for anything else: the model,
-- job type, sizes, the salted job hash, and the deadline. NULL only on rows written before this migration (the
-- provider refuses to run those). `spent_msat` settles a requester row to the receipt's price; until then the
-- row's `price_msat` (the winning bid) is the reservation that counts against the peer's spend cap.
ALTER TABLE federation_jobs
    ADD COLUMN job_type      text,
    ADD COLUMN model         text,
    ADD COLUMN input_tokens  bigint,
    ADD COLUMN max_tokens    bigint,
    ADD COLUMN job_hash      text,
    ADD COLUMN deadline_ms   bigint,
    ADD COLUMN spent_msat    bigint;

-- The spend cap is now counted from the requester's job rows (reserved atomically before the award), so the
-- per-minute spend table written after the job is no longer used.
DROP TABLE IF EXISTS peer_spend;
