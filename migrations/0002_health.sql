-- Node health shared by router replicas: cooldowns, a per-minute rolling window, and failed dispatch attempts.

CREATE TABLE node_health (
    pubkey                text PRIMARY KEY,
    consecutive_failures  integer NOT NULL DEFAULT 0,
    cooldown_until        timestamptz NOT NULL DEFAULT 'epoch',
    quarantined_until     timestamptz NOT NULL DEFAULT 'epoch',
    last_failure          text NOT NULL DEFAULT '',
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_health_updated_at ON node_health (updated_at);

CREATE TABLE node_stats (
    pubkey          text NOT NULL,
    bucket          timestamptz NOT NULL,          -- start of the minute
    successes       integer NOT NULL DEFAULT 0,
    failures        integer NOT NULL DEFAULT 0,
    latency_ms_sum  double precision NOT NULL DEFAULT 0,
    PRIMARY KEY (pubkey, bucket)
);
CREATE INDEX node_stats_bucket ON node_stats (bucket);

-- Every node call that failed (successful calls are the metering records, which note their attempt number).
CREATE TABLE dispatch_attempts (
    id          bigserial PRIMARY KEY,
    request_id  text NOT NULL,                     -- the client's event id
    node        text NOT NULL,
    attempt     integer NOT NULL,
    outcome     text NOT NULL,                     -- the error code
    latency_ms  double precision NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dispatch_attempts_node ON dispatch_attempts (node, created_at);

ALTER TABLE metering_records ADD COLUMN attempt integer NOT NULL DEFAULT 1;
