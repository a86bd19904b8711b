-- Termination of live sessions from the console, retention per target, and the groups a person
-- had when a session started.

-- An admin's (or auditor's) request to end a live session. The console writes it; every gateway
-- process polls for new rows (with its revocation poll) and ends the session if it runs there,
-- so the request reaches the right gateway whichever console took it. One row per session: a
-- second request changes nothing, the first one's author and reason stay on record. The reason
-- is shown to the client in a FATAL and kept in the session's end, hence bounded.
CREATE TABLE session_terminations (
    session_id   uuid        PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    requested_by text        NOT NULL CONSTRAINT session_terminations_requested_by_check
        CHECK (requested_by <> ''),
    reason       text        NOT NULL CONSTRAINT session_terminations_reason_check
        CHECK (char_length(btrim(reason)) > 0 AND char_length(reason) <= 500),
    requested_at timestamptz NOT NULL
);

-- Gateways ask for the requests of the last few seconds on every poll.
CREATE INDEX session_terminations_requested_at_idx ON session_terminations (requested_at);

-- Days a target's ended sessions (with their recordings) are kept; NULL keeps them forever.
ALTER TABLE targets
    ADD COLUMN retention_days integer
        CONSTRAINT targets_retention_days_check CHECK (retention_days > 0);

-- The retention job looks for the ended sessions of one target older than a cut-off: only
-- ended sessions belong in this index, live ones are never purged.
CREATE INDEX sessions_target_ended_idx ON sessions (target_id, ended_at)
    WHERE ended_at IS NOT NULL;

-- The person's groups when the session started (those the credential check used), so that
-- auditors can filter sessions by group as it was then, not as it is now. Sessions from before
-- this column get none (a constant default: no table rewrite).
ALTER TABLE sessions ADD COLUMN groups text[] NOT NULL DEFAULT '{}';

-- The group filter (groups @> ARRAY[...]) reads the sessions of a group from this index; for
-- a common group the planner may rather walk sessions_started_idx newest first and stop once a
-- page is full.
CREATE INDEX sessions_groups_idx ON sessions USING gin (groups);
