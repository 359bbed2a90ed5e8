-- Verification chains of OpenAI-compatible calls, so a client can fetch one later by its id.
CREATE TABLE chains (
    id             text PRIMARY KEY,          -- the router-signed answer event id
    origin_id      text NOT NULL,             -- the NIP-98 authorization, or the router's record of an API-key call
    client         text NOT NULL,
    request_event  jsonb NOT NULL,
    answer_event   jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX chains_client ON chains (client, created_at);
