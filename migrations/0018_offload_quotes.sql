-- A client pays for an offloaded request (docs/payments.md#federation-settlement): a quote for a job no node of
-- this router can take is priced by an auction among peer routers, and the award it won is kept here with the
-- quote, to invoice the winner at `POST /pay` and to submit the job at `/infer`. `salt` keys the job's published
-- hash: it is secret (never published, never logged; the provider and the client learn it with the job).
-- `payment_request` binds the award to the one payment request issued for the quote.
CREATE TABLE offload_quotes (
    quote_id         text PRIMARY KEY,
    job_id           text NOT NULL UNIQUE,           -- federation_jobs.job_id (role requester)
    provider         text NOT NULL CHECK (provider ~ '^[0-9a-f]{64}$'),
    price_msat       bigint NOT NULL CHECK (price_msat >= 0),
    salt             text NOT NULL CHECK (salt ~ '^[0-9a-f]{64}$'),
    job_hash         text NOT NULL CHECK (job_hash ~ '^[0-9a-f]{64}$'),
    deadline         timestamptz NOT NULL,           -- the award's: the job is submitted before it
    rfb              text NOT NULL,                  -- the signed RFB, bid and award events (JSON)
    bid              text NOT NULL,
    award            text NOT NULL,
    payment_request  text UNIQUE,                    -- set once, at POST /pay
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX offload_quotes_deadline ON offload_quotes (deadline);
