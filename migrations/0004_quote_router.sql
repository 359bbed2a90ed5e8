-- Quotes remember which router identity issued them, so a quote is honoured only by that router.
ALTER TABLE quotes ADD COLUMN router text NOT NULL DEFAULT '';
