-- Budgets of client wallets bound to OpenAI callers (docs/payments.md#the-openai-edge): what the router has
-- paid from each bound wallet, shared by every replica. A payment reserves its amount (and its routing-fee
-- allowance) here first, atomically against the budget; what was not spent is given back.

CREATE TABLE wallet_budgets (
    binding     text PRIMARY KEY,                         -- `apikey:<sha256 of the key>` or `client:<pubkey hex>`
    spent_msat  bigint NOT NULL DEFAULT 0 CHECK (spent_msat >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
