-- The statement index: what record::statements makes of each session's recording, for the
-- auditor's search and the session list's counts (conventions in 0001_initial.sql). The
-- indexer (record::indexer) builds it off the recording path. It is derived data, not part of
-- a recording's integrity: the recordings stay the authority, and deleting a session's rows
-- here and resetting its session_stats row has it indexed again.

CREATE TABLE recorded_statements (
    -- An alias of the rowid: the full-text tables refer to rows by it, and an alias keeps its
    -- values through VACUUM (a plain rowid may be renumbered).
    id              INTEGER PRIMARY KEY,
    session_id      BLOB    NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
    -- The seq of the event that ran the statement (Query, Execute, FunctionCall; the Parse of
    -- a Parse that failed on its own): the replay links to it.
    seq             INTEGER NOT NULL CHECK (seq >= 0),
    at              TEXT    NOT NULL,
    -- The session's person and target, copied so the filters need no join.
    person_login    TEXT    NOT NULL,
    target_name     TEXT    NOT NULL,
    class           TEXT    NOT NULL CHECK (class IN
                    ('read', 'write', 'ddl', 'privilege', 'transaction', 'utility', 'unknown')),
    risky           INTEGER NOT NULL CHECK (risky IN (0, 1)),
    risks           TEXT    NOT NULL CHECK (json_valid(risks) AND json_type(risks) = 'array'),
    has_error       INTEGER NOT NULL CHECK (has_error IN (0, 1)),
    sqlstate        TEXT,
    error_message   TEXT,
    -- As recorded: capped and redacted by the capture.
    sql             TEXT    NOT NULL,
    -- Bound parameters as SQL literals ("$1 = 'abc', $2 = NULL").
    params          TEXT    NOT NULL,
    tag             TEXT,
    duration_micros INTEGER NOT NULL CHECK (duration_micros >= 0),
    rows            INTEGER CHECK (rows >= 0),
    UNIQUE (session_id, seq),
    CHECK (risky = (risks <> '[]')),
    CHECK (has_error = (sqlstate IS NOT NULL))
) STRICT;

-- Searches list the newest statements first, one keyset page at a time on (at, session_id,
-- seq): every filter has an index in that order, so a page reads about as many rows as it
-- shows. The flags are rare, hence partial indexes.
CREATE INDEX recorded_statements_at_idx ON recorded_statements (at, session_id, seq);
-- One session's statements ("find in this recording"), in page order.
CREATE INDEX recorded_statements_session_idx ON recorded_statements (session_id, at, seq);
CREATE INDEX recorded_statements_person_idx
    ON recorded_statements (person_login, at, session_id, seq);
CREATE INDEX recorded_statements_target_idx
    ON recorded_statements (target_name, at, session_id, seq);
CREATE INDEX recorded_statements_class_idx ON recorded_statements (class, at, session_id, seq);
CREATE INDEX recorded_statements_error_idx
    ON recorded_statements (at, session_id, seq) WHERE has_error = 1;
CREATE INDEX recorded_statements_risky_idx
    ON recorded_statements (at, session_id, seq) WHERE risky = 1;

-- Words of the SQL and the parameters (FTS5, external content: the text is stored once, in
-- recorded_statements): runs of letters and digits, case folded, as the PostgreSQL engine cuts
-- them. Punctuation separates words, so "orders" finds "public.orders" and "bob" finds
-- 'bob@example.com'. Diacritics are kept, as PostgreSQL's 'simple' configuration keeps them.
CREATE VIRTUAL TABLE recorded_statements_fts USING fts5 (
    sql, params,
    content = 'recorded_statements', content_rowid = 'id',
    tokenize = 'unicode61 remove_diacritics 0'
);

-- Any part of the SQL, from three characters on ("ustomer_i" in "customer_id"): trigrams of
-- the SQL only (parameters are found by their words). It makes inserts about three times as
-- slow as without it (measured on 200,000 statements), and is the only way to answer a rare
-- substring without reading every statement. With both indexes the store takes about 18,000
-- statements a second and a million of them take 0.9 GB (scripts/bench-search).
CREATE VIRTUAL TABLE recorded_statements_trigrams USING fts5 (
    sql,
    content = 'recorded_statements', content_rowid = 'id',
    tokenize = 'trigram'
);

CREATE TRIGGER recorded_statements_indexed AFTER INSERT ON recorded_statements BEGIN
    INSERT INTO recorded_statements_fts (rowid, sql, params) VALUES (new.id, new.sql, new.params);
    INSERT INTO recorded_statements_trigrams (rowid, sql) VALUES (new.id, new.sql);
END;

-- Also when a session is deleted (the cascade runs the trigger for each of its statements).
CREATE TRIGGER recorded_statements_unindexed AFTER DELETE ON recorded_statements BEGIN
    INSERT INTO recorded_statements_fts (recorded_statements_fts, rowid, sql, params)
        VALUES ('delete', old.id, old.sql, old.params);
    INSERT INTO recorded_statements_trigrams (recorded_statements_trigrams, rowid, sql)
        VALUES ('delete', old.id, old.sql);
END;

-- The indexer never updates a statement; someone editing one by hand keeps the search right.
CREATE TRIGGER recorded_statements_reindexed AFTER UPDATE OF sql, params ON recorded_statements
BEGIN
    INSERT INTO recorded_statements_fts (recorded_statements_fts, rowid, sql, params)
        VALUES ('delete', old.id, old.sql, old.params);
    INSERT INTO recorded_statements_trigrams (recorded_statements_trigrams, rowid, sql)
        VALUES ('delete', old.id, old.sql);
    INSERT INTO recorded_statements_fts (rowid, sql, params) VALUES (new.id, new.sql, new.params);
    INSERT INTO recorded_statements_trigrams (rowid, sql) VALUES (new.id, new.sql);
END;

-- Per session: how far the indexer got, and the counts the session list shows.
--   indexed_seq  the next seq to read (every event before it was read)
--   resume_seq   where a fresh fold starts again (record::statements: the last quiet point);
--                statements that began after it are not stored yet
--   complete     the session had ended when its last event was read: nothing more will come
-- Every session gets its row when it is inserted (trigger below), so finding the sessions that
-- need indexing reads only the incomplete rows, never all sessions.
CREATE TABLE session_stats (
    session_id  BLOB    PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
    indexed_seq INTEGER NOT NULL DEFAULT 0 CHECK (indexed_seq >= 0),
    resume_seq  INTEGER NOT NULL DEFAULT 0 CHECK (resume_seq BETWEEN 0 AND indexed_seq),
    statements  INTEGER NOT NULL DEFAULT 0 CHECK (statements >= 0),
    errors      INTEGER NOT NULL DEFAULT 0 CHECK (errors BETWEEN 0 AND statements),
    risky       INTEGER NOT NULL DEFAULT 0 CHECK (risky BETWEEN 0 AND statements),
    complete    INTEGER NOT NULL DEFAULT 0 CHECK (complete IN (0, 1)),
    updated_at  TEXT    NOT NULL
) WITHOUT ROWID, STRICT;

-- The indexer's work list: incomplete sessions, least recently indexed first.
CREATE INDEX session_stats_pending_idx ON session_stats (updated_at) WHERE complete = 0;

CREATE TRIGGER sessions_get_stats AFTER INSERT ON sessions BEGIN
    INSERT INTO session_stats (session_id, updated_at) VALUES (new.id, new.started_at);
END;

-- Sessions recorded before this migration are indexed from their first event, oldest first.
INSERT INTO session_stats (session_id, updated_at) SELECT id, started_at FROM sessions;
