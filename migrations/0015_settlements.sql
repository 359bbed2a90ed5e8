-- Settlements shown and earnings by model (docs/payments.md#refunds, #earnings, #the-openai-edge).

-- A node's claim records the model of the request it ran (NULL for claims made before this migration), so
-- `fedai earnings --role node` can report by day, router and model.
ALTER TABLE payment_claims ADD COLUMN model text;

-- What each payee of a paid answer stated it used, refunds and keeps of its share (the router's own statement
-- and the node's, from its signed metering record), as the router saw them when it answered: GET /payments/{id}
-- shows them beside the router's own refunds. One row per paid invoice; no destination is stored here.
CREATE TABLE payment_settlements (
    payment_hash  text PRIMARY KEY CHECK (payment_hash ~ '^[0-9a-f]{64}$'),
    role          text NOT NULL CHECK (role IN ('node', 'router_fee', 'provider')),
    quoted_msat   bigint NOT NULL CHECK (quoted_msat > 0),
    used_msat     bigint NOT NULL CHECK (used_msat >= 0),
    refund_msat   bigint NOT NULL CHECK (refund_msat >= 0),
    kept_msat     bigint NOT NULL CHECK (kept_msat >= 0),
    created_at    timestamptz NOT NULL DEFAULT now(),
    CHECK (used_msat + refund_msat + kept_msat = quoted_msat)
);

-- Refund links of the OpenAI edge: a caller whose API key (or NIP-98 identity) is bound to its own wallet gets
-- its refunds through an LNURL-pay link the router serves, `/refunds/lnurlp/<token>`, which asks that bound
-- wallet for an invoice (NIP-47 make_invoice). The token is random and names one payment request; the link
-- accepts at most `max_msat` per invoice (the request's total) and makes at most a few invoices in all
-- (`invoices`: each payee asks once per refund, again only if an attempt failed before its invoice was recorded).
-- The wallet's connection URI never leaves the router.
CREATE TABLE edge_refund_links (
    token       text PRIMARY KEY CHECK (token ~ '^[0-9a-f]{64}$'),
    request_id  text NOT NULL UNIQUE REFERENCES payment_requests (id),
    binding     text NOT NULL,                           -- the wallet binding that paid: `apikey:…` or `client:…`
    max_msat    bigint NOT NULL CHECK (max_msat > 0),
    invoices    integer NOT NULL DEFAULT 0 CHECK (invoices >= 0),
    created_at  timestamptz NOT NULL DEFAULT now()
);
