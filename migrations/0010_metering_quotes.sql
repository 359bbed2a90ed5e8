-- Quotes remember which request spent them, so only that request can give the quote back when no node
-- served it (fedai.store.quotes.release_quote).
ALTER TABLE quotes ADD COLUMN used_by text;
