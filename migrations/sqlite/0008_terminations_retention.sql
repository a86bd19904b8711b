-- Termination of live sessions from the console, retention per target, and the groups a person
-- had when a session started (conventions in 0001_initial.sql).

-- An admin's (or auditor's) request to end a live session. The console writes it; every gateway
-- process polls for new rows (with its revocation poll) and ends the session if it runs there,
-- so the request reaches the right gateway whichever console took it. One row per session: a
-- second request changes nothing, the first one's author and reason stay on record. The reason
-- is shown to the client in a FATAL and kept in the session's end, hence bounded.
CREATE TABLE session_terminations (
    session_id   BLOB PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    requested_by TEXT NOT NULL CHECK (requested_by <> ''),
    reason       TEXT NOT NULL CHECK (length(trim(reason)) > 0 AND length(reason) <= 500),
    requested_at TEXT NOT NULL
) STRICT;

-- Gateways ask for the requests of the last few seconds on every poll.
CREATE INDEX session_terminations_requested_at_idx ON session_terminations (requested_at);

-- Days a target's ended sessions (with their recordings) are kept; NULL keeps them forever.
ALTER TABLE targets ADD COLUMN retention_days INTEGER CHECK (retention_days > 0);

-- The retention job looks for the ended sessions of one target older than a cut-off: only
-- ended sessions belong in this index, live ones are never purged.
CREATE INDEX sessions_target_ended_idx ON sessions (target_id, ended_at)
    WHERE ended_at IS NOT NULL;

-- The person's groups when the session started (those the credential check used), so that
-- auditors can filter sessions by group as it was then, not as it is now. Sessions from before
-- this column get none.
ALTER TABLE sessions ADD COLUMN groups TEXT NOT NULL DEFAULT '[]'
    CHECK (json_valid(groups) AND json_type(groups) = 'array');

-- SQLite has no index over the elements of a JSON array, so the group filter reads this table
-- instead: one row per (group, session), kept by the triggers below from sessions.groups. The
-- filter then reads only the sessions of that group from the primary key, never every session.
CREATE TABLE session_groups (
    group_name TEXT NOT NULL,
    session_id BLOB NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    PRIMARY KEY (group_name, session_id)
) WITHOUT ROWID, STRICT;

-- The cascade from sessions looks rows up by session.
CREATE INDEX session_groups_session_idx ON session_groups (session_id);

CREATE TRIGGER sessions_list_groups AFTER INSERT ON sessions BEGIN
    INSERT OR IGNORE INTO session_groups (group_name, session_id)
        SELECT value, new.id FROM json_each(new.groups);
END;

-- pgbastion never changes a session's groups; someone editing them by hand keeps the filter
-- right.
CREATE TRIGGER sessions_relist_groups AFTER UPDATE OF groups ON sessions BEGIN
    DELETE FROM session_groups WHERE session_id = old.id;
    INSERT OR IGNORE INTO session_groups (group_name, session_id)
        SELECT value, new.id FROM json_each(new.groups);
END;
