-- Operator admin (runbooks/admin.md): what operators change at run time through /admin/api, applied by every
-- replica without a restart. Every change is one transaction that also writes a row to admin_audit; replicas
-- poll max(admin_audit.id) and reload these small tables when it moved.

-- Nodes an operator drained (not scheduled) or banned (not scheduled, heartbeats refused).
CREATE TABLE admin_nodes (
    pubkey      text PRIMARY KEY CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    drained     boolean NOT NULL DEFAULT false,
    banned      boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Peer routers an operator allowed, blocked or muted; it overrides ROUTER_PEER_* for that key.
CREATE TABLE admin_peers (
    pubkey      text PRIMARY KEY CHECK (pubkey ~ '^[0-9a-f]{64}$'),
    state       text NOT NULL CHECK (state IN ('allow', 'block', 'mute')),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- OpenAI-edge API keys made through the admin API: only the key's sha256 is stored (like ROUTER_API_KEYS).
CREATE TABLE admin_api_keys (
    sha256      text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    id          text NOT NULL UNIQUE,          -- a short public handle, for listing and revoking
    client      text NOT NULL CHECK (client ~ '^[0-9a-f]{64}$'),
    label       text NOT NULL DEFAULT '',
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);

-- Run-time settings (router fee): name -> integer value; absent means the environment's.
CREATE TABLE admin_settings (
    name        text PRIMARY KEY CHECK (name IN ('fee_base_msat', 'fee_ppm')),
    value       bigint NOT NULL CHECK (value >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who changed what, when, from what to what. Never a secret: API keys appear by id and client only.
CREATE TABLE admin_audit (
    id          bigserial PRIMARY KEY,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,                 -- the operator's pubkey (its NIP-98 signer)
    action      text NOT NULL,                 -- e.g. node.drain, peer.block, apikey.create, fee.set
    target      text NOT NULL,
    before      jsonb,
    after       jsonb
);
