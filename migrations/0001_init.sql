-- fedai initial schema: nodes, nonces, metering records, quotes.

CREATE TABLE nodes (
    pubkey          text PRIMARY KEY CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    endpoint        text NOT NULL,
    descriptor      jsonb NOT NULL,
    verified        boolean NOT NULL DEFAULT false,   -- true once a signed heartbeat or a successful call proved it
    source          text NOT NULL CHECK (source IN ('heartbeat', 'announce')),
    first_seen      timestamptz NOT NULL DEFAULT now(),
    last_heartbeat  timestamptz,                      -- last signed heartbeat received (NULL: only announced)
    last_announce   timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX nodes_updated_at ON nodes (updated_at);

-- Accepted event ids, kept until they could no longer pass the freshness check (replay protection).
CREATE TABLE nonces (
    id            text PRIMARY KEY,
    retain_until  timestamptz NOT NULL
);
CREATE INDEX nonces_retain_until ON nonces (retain_until);

-- One row per node-signed metering record the router verified.
CREATE TABLE metering_records (
    request_id     text PRIMARY KEY,          -- the router-signed infer.request the node served
    origin_id      text NOT NULL,             -- the client's infer.request id
    client         text NOT NULL,
    node           text NOT NULL,
    model          text NOT NULL,
    input_tokens   integer NOT NULL CHECK (input_tokens >= 0),
    output_tokens  integer NOT NULL CHECK (output_tokens >= 0),
    wall_ms        double precision NOT NULL,
    bytes_in       bigint NOT NULL,
    bytes_out      bigint NOT NULL,
    prompt_sha256  text NOT NULL,
    price_msat     bigint NOT NULL CHECK (price_msat >= 0),
    event          jsonb NOT NULL,            -- the signed metering event, verbatim
    created_at     timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX metering_records_node ON metering_records (node, created_at);
CREATE INDEX metering_records_client ON metering_records (client, created_at);

CREATE TABLE quotes (
    id                 text PRIMARY KEY,
    request_id         text NOT NULL,         -- the client's quote.request event id
    client             text NOT NULL,
    model              text NOT NULL,
    node               text NOT NULL,
    input_tokens       integer NOT NULL,
    max_output_tokens  integer NOT NULL,
    input_msat         bigint NOT NULL,
    output_msat        bigint NOT NULL,
    router_fee_msat    bigint NOT NULL,
    total_msat         bigint NOT NULL,
    expires_at         timestamptz NOT NULL,
    used_at            timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quotes_client ON quotes (client, created_at);
