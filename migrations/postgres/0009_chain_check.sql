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
ALTER TABLE session_stats
    ADD COLUMN chain_verified_seq bigint
        CONSTRAINT session_stats_chain_verified_seq_check CHECK (chain_verified_seq >= 0),
    ADD COLUMN chain_hash bytea,
    ADD COLUMN chain_broken_seq bigint
        CONSTRAINT session_stats_chain_broken_seq_check CHECK (chain_broken_seq >= 0),
    ADD COLUMN chain_broken_reason text,
    ADD CONSTRAINT session_stats_chain_hash_check
        CHECK ((chain_hash IS NULL) = (chain_verified_seq IS NULL)
               AND (chain_hash IS NULL OR length(chain_hash) = 32)),
    ADD CONSTRAINT session_stats_chain_broken_check
        CHECK ((chain_broken_reason IS NULL) = (chain_broken_seq IS NULL));

-- Sessions indexed before this migration have their chains checked from the first event: the
-- indexer reads them again (their statements and counts stay; only the check catches up).
UPDATE session_stats SET complete = false;
