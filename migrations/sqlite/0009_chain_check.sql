-- How far the statement indexer (record::indexer) has checked each session's hash chain, so that
-- pages can show a recording's integrity without reading it (record::integrity). The indexer
-- reads every event anyway; it checks the links as it goes and saves its position here, in the
-- same transaction as its statements.
--   chain_verified_seq   events 0..=chain_verified_seq link up (NULL: none checked yet)
--   chain_hash           the hash of event chain_verified_seq, where the next check resumes
--   chain_broken_seq     the first event that does not link up; the check stops there for good
--   chain_broken_reason  what is wrong with it, as `pgbastion verify` would say
-- Like the rest of session_stats this is derived data: resetting a session's row (chain
-- columns NULL, indexed_seq 0) has it indexed and checked again. The seal is not kept here: it
-- is checked when a page shows the session, against what the indexer verified.

-- A column's CHECK may name only the columns before it, hence this order.
ALTER TABLE session_stats ADD COLUMN chain_hash BLOB CHECK (length(chain_hash) = 32);
ALTER TABLE session_stats ADD COLUMN chain_verified_seq INTEGER
    CHECK (chain_verified_seq IS NULL OR (chain_verified_seq >= 0 AND chain_hash IS NOT NULL));
ALTER TABLE session_stats ADD COLUMN chain_broken_reason TEXT;
ALTER TABLE session_stats ADD COLUMN chain_broken_seq INTEGER
    CHECK (chain_broken_seq IS NULL OR (chain_broken_seq >= 0 AND chain_broken_reason IS NOT NULL));

-- Sessions indexed before this migration have their chains checked from the first event: the
-- indexer reads them again (their statements and counts stay; only the check catches up).
UPDATE session_stats SET complete = 0;
