-- Per-target recording policy, and indexes for browsing sessions (conventions in
-- 0001_initial.sql).
--
-- recording: 'strict' (a client message waits until its events are stored), 'buffered'
-- (forwarded first, recorded through a bounded buffer) or 'off' (session metadata only).
-- The caps override the gateway's configured defaults for the target's sessions: NULL means
-- the default, 0 keeps nothing. SQLite checks the new columns' constraints against the rows
-- already there.

ALTER TABLE targets ADD COLUMN recording TEXT NOT NULL DEFAULT 'strict'
    CHECK (recording IN ('strict', 'buffered', 'off'));
ALTER TABLE targets ADD COLUMN record_max_rows INTEGER CHECK (record_max_rows >= 0);
ALTER TABLE targets ADD COLUMN record_max_result_bytes INTEGER
    CHECK (record_max_result_bytes >= 0);

-- Sessions are listed newest first, ordered by (started_at DESC, id DESC) and paged by that
-- key; the person and target filters each get an index in the same order.
DROP INDEX sessions_started_at_idx;
CREATE INDEX sessions_started_idx ON sessions (started_at DESC, id DESC);
CREATE INDEX sessions_person_started_idx ON sessions (person_login, started_at DESC, id DESC);
CREATE INDEX sessions_target_started_idx ON sessions (target_name, started_at DESC, id DESC);
