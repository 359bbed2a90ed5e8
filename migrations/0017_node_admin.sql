-- A node's admin API (runbooks/admin.md#node): what its operators change at run time (NODE_ADMIN_KEYS), in the
-- node's own database (NODE_DB_URL). Every row names its node, so nodes sharing one database keep their own.
-- Every change is one transaction that also writes a row to node_admin_audit.

-- Prices per model set at run time: they replace NODE_PRICE_INPUT_MSAT / NODE_PRICE_OUTPUT_MSAT for that model.
CREATE TABLE node_admin_prices (
    node        text NOT NULL CHECK (node ~ '^[0-9a-f]{64}$'),
    model       text NOT NULL CHECK (length(model) BETWEEN 1 AND 256),
    input_msat  bigint NOT NULL CHECK (input_msat >= 0),
    output_msat bigint NOT NULL CHECK (output_msat >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, model)
);

-- Routers an operator allowed beside ROUTER_PUBLIC_KEY, or blocked (refused even if configured).
CREATE TABLE node_admin_routers (
    node        text NOT NULL CHECK (node ~ '^[0-9a-f]{64}$'),
    router      text NOT NULL CHECK (router ~ '^[0-9a-f]{64}$'),
    rule        text NOT NULL CHECK (rule IN ('allow', 'block')),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (node, router)
);

-- Whether an operator drained the node (kept across restarts until resumed).
CREATE TABLE node_admin_state (
    node        text PRIMARY KEY CHECK (node ~ '^[0-9a-f]{64}$'),
    drained     boolean NOT NULL DEFAULT false,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

-- Who changed what on which node, when, from what to what. Never a secret.
CREATE TABLE node_admin_audit (
    id          bigserial PRIMARY KEY,
    node        text NOT NULL,
    at          timestamptz NOT NULL DEFAULT now(),
    actor       text NOT NULL,                 -- the admin's pubkey (its NIP-98 signer)
    action      text NOT NULL,                 -- node.drain, node.resume, price.set, router.allow, ...
    target      text NOT NULL,
    before      jsonb,
    after       jsonb
);
CREATE INDEX node_admin_audit_node ON node_admin_audit (node, id);
