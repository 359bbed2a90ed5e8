-- Payments without custody (docs/payments.md#protocol-and-claims): the payment requests a router issued, one row
-- per payee with its single-use claim, refunds of unused parts, and a node's own claims on its invoices.
-- A payee row goes issued → paid (claimed: a proof was shown and a request is in flight) → consumed (served)
-- | released (the payee failed: claimable again until expiry) | refunded | expired (never paid, or never served).

CREATE TABLE payment_requests (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-f]{64}$'),   -- the router-signed payment.request event id
    quote       text NOT NULL,                                      -- the quote's quote_id
    client      text NOT NULL,
    expires_at  timestamptz NOT NULL,
    state       text NOT NULL DEFAULT 'issued' CHECK (state IN ('issued', 'consumed', 'expired')),
    event       jsonb NOT NULL,                                     -- the signed payment.request, verbatim
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_requests_client ON payment_requests (client, created_at);
CREATE INDEX payment_requests_quote ON payment_requests (quote);
CREATE INDEX payment_requests_issued ON payment_requests (expires_at) WHERE state = 'issued';

CREATE TABLE payment_payees (
    payment_hash  text PRIMARY KEY CHECK (payment_hash ~ '^[0-9a-f]{64}$'),  -- single-use across replicas
    request_id    text NOT NULL REFERENCES payment_requests (id),
    role          text NOT NULL CHECK (role IN ('node', 'router_fee', 'provider')),
    payee         text NOT NULL,
    amount_msat   bigint NOT NULL CHECK (amount_msat > 0),
    bolt11        text NOT NULL,
    expires_at    timestamptz NOT NULL,          -- the request's: a claim checks it without a join
    state         text NOT NULL DEFAULT 'issued'
                  CHECK (state IN ('issued', 'paid', 'consumed', 'released', 'refunded', 'expired')),
    claimed_by    text,                          -- the request (a token unique to it) holding or consuming it
    claimed_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state IN ('paid', 'consumed')) = (claimed_by IS NOT NULL)),
    CHECK ((claimed_by IS NULL) = (claimed_at IS NULL))
);
CREATE INDEX payment_payees_request ON payment_payees (request_id);
CREATE INDEX payment_payees_open ON payment_payees (expires_at) WHERE state IN ('issued', 'paid', 'released');

-- Refunds of the unused part of a paid share, from the payee's own wallet (router or node). `payment_hash` names
-- the paid invoice (a payment_payees row on a router, a payment_claims row on a node: no foreign key, both use
-- this table). The destination is the client's; it is stored to retry and never logged. `invoice` is the
-- destination's invoice for this refund, fixed before the first attempt: every retry pays that same invoice,
-- which Lightning cannot settle twice. A worker holds a refund while paying it (`paying`, `claimed_by`).
CREATE TABLE refunds (
    id               bigserial PRIMARY KEY,
    payment_hash     text NOT NULL UNIQUE CHECK (payment_hash ~ '^[0-9a-f]{64}$'),  -- at most one refund each
    role             text NOT NULL CHECK (role IN ('node', 'router_fee', 'provider')),
    amount_msat      bigint NOT NULL CHECK (amount_msat > 0),
    destination      text NOT NULL,
    invoice          text,
    state            text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'paying', 'paid', 'failed')),
    claimed_by       text,
    claimed_at       timestamptz,
    attempts         integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    last_error       text,
    idempotency_key  text NOT NULL UNIQUE,       -- what the wallet is given, so a retry never pays twice
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'paying') = (claimed_by IS NOT NULL)),
    CHECK ((claimed_by IS NULL) = (claimed_at IS NULL))
);
CREATE INDEX refunds_open ON refunds (updated_at) WHERE state IN ('pending', 'paying');

-- A node's own claims on its invoices (NODE_DB_URL): a preimage of one of its invoices serves one request.
CREATE TABLE payment_claims (
    payment_hash  text PRIMARY KEY CHECK (payment_hash ~ '^[0-9a-f]{64}$'),
    request_id    text NOT NULL,                 -- the payment.request that lists the invoice
    router        text NOT NULL,
    client        text NOT NULL,
    amount_msat   bigint NOT NULL CHECK (amount_msat > 0),
    expires_at    timestamptz NOT NULL,
    state         text NOT NULL CHECK (state IN ('claimed', 'consumed', 'released')),
    claimed_by    text,                          -- the forwarded infer.request holding or consuming it
    claimed_at    timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CHECK ((state = 'released') = (claimed_by IS NULL)),
    CHECK ((claimed_by IS NULL) = (claimed_at IS NULL))
);
CREATE INDEX payment_claims_open ON payment_claims (expires_at) WHERE state <> 'consumed';
