-- Node manifests: each node's latest signed profile/benchmark (kind 31024), and the initial trust it earned.
-- One row per node (the signer); a manifest replaces the stored one only if it is newer (NIP-01 order:
-- later created_at, or the same created_at and a lower event id).

CREATE TABLE node_manifests (
    pubkey      text PRIMARY KEY CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    event_id    text NOT NULL,
    manifest    jsonb NOT NULL,                   -- the decoded NodeManifest payload
    event       jsonb NOT NULL,                   -- the signed event, verbatim
    trust       double precision NOT NULL CHECK (trust >= 0 AND trust <= 1),
    created_at  timestamptz NOT NULL,             -- the event's created_at
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX node_manifests_updated_at ON node_manifests (updated_at);
