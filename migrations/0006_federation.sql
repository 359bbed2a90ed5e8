-- Federation: peers learned from relays, auctions and jobs on both sides, spend per peer.

CREATE TABLE peers (
    pubkey        text PRIMARY KEY,
    caps          jsonb,              -- latest verified router.caps content
    caps_at       timestamptz,        -- its created_at
    prices        jsonb NOT NULL DEFAULT '{}'::jsonb,   -- job_type -> latest verified router.price content
    status        jsonb,
    status_at     timestamptz,
    first_seen    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX peers_updated_at ON peers (updated_at);

CREATE TABLE federation_jobs (
    job_id          text PRIMARY KEY,
    role            text NOT NULL CHECK (role IN ('requester', 'provider')),
    peer            text NOT NULL,          -- the other router
    rfb_id          text NOT NULL,
    bid_id          text NOT NULL,
    award_id        text NOT NULL UNIQUE,
    capacity_token  text NOT NULL,
    price_msat      bigint NOT NULL,
    privacy         integer NOT NULL,
    status          text NOT NULL CHECK (status IN ('awarded', 'running', 'done', 'failed', 'cancelled')),
    origin_id       text,                   -- requester side: the client's request event
    receipt         jsonb,                  -- the provider-signed receipt, kept by both sides
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX federation_jobs_peer ON federation_jobs (peer, created_at);

CREATE TABLE peer_spend (
    peer          text NOT NULL,
    window_start  timestamptz NOT NULL,
    spent_msat    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (peer, window_start)
);
